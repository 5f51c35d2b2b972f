"""A master's combine as a job: master files read by rows after a sha256 check; a band equals the whole."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.errors import FitsFormatError
from ccdcal.files.fitsio import read_image, sha256_file
from ccdcal.kernels.combine import ClipParams, combine_files
from ccdcal.kernels.flat import flat_level
from ccdcal.masters.combine import (
    CombineJob,
    MasterFile,
    combine_band,
    flat_levels,
    run_combine,
    run_flat_levels,
)

SHAPE = (24, 18)


def write(path: Path, data: np.ndarray) -> Path:
    fits.PrimaryHDU(data).writeto(path)
    return path


@pytest.fixture
def group(tmp_path: Path) -> tuple[list[Path], MasterFile, MasterFile, np.ndarray, np.ndarray]:
    """Five uint16 flats, a float32 master bias and dark (files and pixels)."""
    rng = np.random.default_rng(5)
    paths = [
        write(tmp_path / f"flat{i}.fits", rng.normal(20000, 150, SHAPE).astype(np.uint16)) for i in range(5)
    ]
    bias = rng.normal(1000, 3, SHAPE).astype(np.float32)
    dark = rng.normal(20, 2, SHAPE).astype(np.float32)
    refs = []
    for name, data in (("bias", bias), ("dark", dark)):
        path = write(tmp_path / f"master_{name}.fits", data)
        refs.append(MasterFile(str(path), sha256_file(path)))
    return paths, refs[0], refs[1], bias.astype(np.float64), dark.astype(np.float64)


def test_a_master_file_is_read_by_rows_after_its_sha256_check(tmp_path: Path) -> None:
    data = np.arange(SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE) / 7
    path = write(tmp_path / "m.fits", data)
    master = MasterFile(str(path), sha256_file(path))
    np.testing.assert_array_equal(master.read(), data.astype(np.float64))
    band = master.read((5, 9))
    assert band.dtype == np.float64
    np.testing.assert_array_equal(band, read_image(path, 0, np.float64)[5:9])
    path.unlink()
    write(path, data + 1)
    with pytest.raises(FitsFormatError, match="changed since the catalog recorded it") as info:
        master.read((5, 9))
    assert str(path) in str(info.value)
    path.unlink()
    with pytest.raises(FitsFormatError, match="file not found"):
        master.read()


def test_a_job_combines_as_combine_files_with_the_offsets(
    group: tuple[list[Path], MasterFile, MasterFile, np.ndarray, np.ndarray],
) -> None:
    paths, bias, dark, bias_data, dark_data = group
    scales = (0.5, 0.5, 1.0, 1.0, 0.5)
    job = CombineJob(tuple(map(str, paths)), 0, ClipParams(), 2**30, bias, dark, scales)
    offsets = [bias_data + dark_data * s for s in scales]
    levels = run_flat_levels(job, None)
    assert levels == [
        flat_level(read_image(p, 0, np.float64), o) for p, o in zip(paths, offsets, strict=True)
    ]
    flats = CombineJob(job.paths, 0, ClipParams(), 2**30, bias, dark, scales, tuple(1 / v for v in levels))
    whole = run_combine(flats, None)
    expected = combine_files(paths, offset=offsets, scale=[1 / v for v in levels])
    np.testing.assert_array_equal(whole.image, expected.image)
    np.testing.assert_array_equal(whole.rejected, expected.rejected)
    band = combine_band(flats, (7, 19))
    assert not isinstance(band, Exception)
    np.testing.assert_array_equal(band.image, whole.image[7:19])
    np.testing.assert_array_equal(band.rejected, whole.rejected[7:19])
    assert flat_levels(job, [3, 1]) == ([3, 1], [levels[3], levels[1]])


def test_a_job_leaves_each_frames_saturated_samples_out(
    tmp_path: Path, group: tuple[list[Path], MasterFile, MasterFile, np.ndarray, np.ndarray]
) -> None:
    """A job's saturation levels go to the flats' levels and to the combine, here and in a band (as a Dask
    worker gets it, pickled)."""
    paths, bias, _, bias_data, _ = group
    raw = [read_image(p, 0, np.float64) for p in paths]
    stars = []
    for i, frame in enumerate(raw):
        frame[2 + i : 5 + i, 3:6] = 65535  # a saturated star on each flat
        stars.append(write(tmp_path / f"star{i}.fits", frame.astype(np.uint16)))
    levels = (65535.0,) * 5
    job = CombineJob(tuple(map(str, stars)), 0, ClipParams(), 2**30, bias, saturation=levels)
    flat_levels_found = run_flat_levels(job, None)
    assert flat_levels_found == [flat_level(f, bias_data, 65535.0) for f in raw]
    assert flat_levels_found != [flat_level(f, bias_data) for f in raw]
    job = pickle.loads(pickle.dumps(job))
    whole = run_combine(job, None)
    expected = combine_files(stars, offset=[bias_data] * 5, saturation=levels)
    np.testing.assert_array_equal(whole.image, expected.image)
    assert whole.n_saturated == 5 * 9
    band = combine_band(job, (0, 12))
    assert not isinstance(band, Exception)
    np.testing.assert_array_equal(band.image, whole.image[:12])
    assert band.n_saturated == whole.n_saturated  # every star in the first rows


def test_a_task_returns_the_error_about_its_inputs(
    tmp_path: Path, group: tuple[list[Path], MasterFile, MasterFile, np.ndarray, np.ndarray]
) -> None:
    paths, bias, *_ = group
    odd = write(tmp_path / "odd.fits", np.zeros((3, 3), np.uint16))
    outcome = combine_band(CombineJob((str(paths[0]), str(odd)), 0, ClipParams(), 2**30), (0, 2))
    assert isinstance(outcome, FitsFormatError)
    sent = pickle.loads(pickle.dumps(outcome))  # as a worker sends it back
    assert (type(sent), str(sent)) == (FitsFormatError, str(outcome))
    assert "odd.fits" in str(sent)
    dark = write(tmp_path / "dark.fits", np.full(SHAPE, 5, np.uint16))
    levels = flat_levels(CombineJob((str(dark),), 0, ClipParams(), 2**30, bias), [0])
    assert isinstance(levels, ValueError)
    assert str(levels).startswith("dark.fits: its level after bias/dark subtraction is")
