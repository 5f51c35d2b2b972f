"""A master's inputs prepared (overscan, trim) into temporary files the combine reads, then removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.kernels.overscan import NO_OVERSCAN, OverscanPlan, Section, apply_overscan, machine_cards
from ccdcal.kernels.prepare import check_preparation, prepared_inputs

PLAN = OverscanPlan("median", Section(9, 10, 1, 6), Section(2, 7, 1, 6), 1)


def test_prepared_files_hold_the_overscan_corrected_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    raws = []
    for i in range(2):
        raws.append(tmp_path / f"raw{i}.fits")
        fits.PrimaryHDU(rng.integers(1000, 3000, (6, 10)).astype(np.uint16)).writeto(raws[-1])
    folder = tmp_path / "masters"
    with prepared_inputs(raws, 0, PLAN, folder) as (paths, hdu, levels, _):
        assert hdu == 0
        assert all(p.parent == folder and p.name.startswith(".ccdcal-tmp-") for p in paths)
        for raw, path, level in zip(raws, paths, levels, strict=True):
            expected, expected_level = apply_overscan(fits.getdata(raw), PLAN)
            np.testing.assert_array_equal(fits.getdata(path), expected)  # float32 holds them exactly
            assert level == expected_level
    assert list(folder.iterdir()) == []
    with prepared_inputs(raws, 0, NO_OVERSCAN, folder) as (paths, _, levels, _):
        assert (paths, levels) == (raws, [None, None])


def test_calibrators_must_be_prepared_the_same_way(tmp_path: Path) -> None:
    header = fits.Header()
    for keyword, value, comment in machine_cards(PLAN):
        header[keyword] = (value, comment)
    fits.PrimaryHDU(np.zeros((6, 6), np.float32), header).writeto(tmp_path / "bias.fits")
    fits.PrimaryHDU(np.zeros((6, 10), np.float32)).writeto(tmp_path / "plain.fits")
    check_preparation([str(tmp_path / "bias.fits"), None], PLAN)
    check_preparation([str(tmp_path / "plain.fits")], None)
    with pytest.raises(ValueError, match=r"^bias\.fits ") as raised:
        check_preparation([str(tmp_path / "bias.fits")], NO_OVERSCAN)
    assert str(raised.value) == (
        "bias.fits was built from frames prepared with overscan median of [9:10,1:6] trim [2:7,1:6], these "
        "inputs with none: build it again with the same --overscan"
    )


def test_saturated_raw_samples_are_written_nan(tmp_path: Path) -> None:
    """Found on the raw values (before the overscan is subtracted), kept to the trimmed area: a saturated
    sample of the overscan strip is no input sample, and takes part in the overscan's median."""
    raw = np.full((6, 10), 1000, dtype=np.uint16)
    raw[2, 3] = raw[4, 6] = 65535  # columns 4 and 7 (1-based): in the trim [2:7]
    raw[1, 8] = 65535  # in the overscan strip [9:10]
    fits.PrimaryHDU(raw).writeto(tmp_path / "raw.fits")
    other = tmp_path / "other.fits"
    fits.PrimaryHDU(np.full((6, 10), 65535, dtype=np.uint16)).writeto(other)
    folder = tmp_path / "masters"
    with prepared_inputs([tmp_path / "raw.fits", other], 0, PLAN, folder, (), [65535.0, None]) as prepared:
        assert prepared.saturated == [2, 0]  # the second frame has no level
        data = fits.getdata(prepared.paths[0])
        expected, level = apply_overscan(raw, PLAN)
        expected[2, 2] = expected[4, 5] = np.nan
        np.testing.assert_array_equal(data, expected)
        assert prepared.levels[0] == level == 1000.0
        assert not np.isnan(fits.getdata(prepared.paths[1])).any()
