"""Frame-QA statistics gathered in the combine's pass: the grid, the decoding, the numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.kernels.combine import combine_files
from ccdcal.kernels.framestats import (
    Decoded,
    FrameSamples,
    SampleGrid,
    decode_samples,
    pixel_noise,
    plane_gradient,
    robust,
)

SHAPE = (96, 128)


def test_the_grid_takes_absolute_rows_so_bands_sample_as_the_whole() -> None:
    grid = SampleGrid.for_shape((2048, 2048))
    assert grid.step == 8
    assert grid.rows(0, 2048).size * grid.cols.size == 65536
    whole = grid.rows(0, 2048)
    bands = np.concatenate([grid.rows(a, b) for a, b in ((0, 100), (100, 731), (731, 2048))])
    np.testing.assert_array_equal(whole, bands)
    assert SampleGrid.for_shape((30, 40)).step == 1  # a small image: every pixel


@pytest.mark.parametrize(
    ("bitpix", "bzero", "bscale", "blank"),
    [
        (16, 32768, 1.0, None),
        (16, 0, 1.0, -5),
        (32, 100.0, 2.0, None),
        (-32, 32768.0, 1.0, None),
        (8, 0, 1, None),
    ],
)
def test_decoded_samples_are_the_values_astropy_gives(
    tmp_path: Path, bitpix: int, bzero: float, bscale: float, blank: int | None
) -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 200, (8, 10)).astype(np.float64)
    dtype = {16: ">i2", 32: ">i4", -32: ">f4", 8: "u1"}[bitpix]
    stored = values.astype(dtype)
    if blank is not None:
        stored[2, 3] = blank
    hdu = fits.PrimaryHDU(stored)
    hdu.header["BZERO"], hdu.header["BSCALE"] = bzero, bscale
    if blank is not None:
        hdu.header["BLANK"] = blank
    path = tmp_path / "f.fits"
    hdu.writeto(path)
    with fits.open(path) as hdul:
        expected = hdul[0].data.astype(np.float64)
        offset = hdul[0]._data_offset
    raw = np.fromfile(
        path, dtype={1: np.uint8, 2: np.uint16, 4: np.uint32}[abs(bitpix) // 8], count=80, offset=offset
    )
    kind = 0 if bitpix == 8 else (2 if bitpix < 0 else 1)
    if bitpix == 8:
        raw, kind = raw.astype(np.float64) * bscale + bzero, 0
    found = decode_samples(raw.reshape(8, 10), kind, bscale, bzero, blank)
    np.testing.assert_allclose(found, expected, rtol=1e-7, equal_nan=True)


def test_the_noise_is_robust_and_not_quantised_on_integers() -> None:
    rng = np.random.default_rng(1)
    for sigma in (1.3, 1.7, 2.2, 10.0):
        values = np.rint(rng.normal(500, sigma, 65536))
        values[:30] = 1e5  # cosmic rays
        median, noise, count = robust(values)
        assert median == 500
        # integer rounding adds 1/12 of a unit to the variance
        assert noise == pytest.approx(math.sqrt(sigma**2 + 1 / 12), rel=0.03)
        assert count == 65536
    median, noise, count = robust(np.full(10, np.nan))
    assert math.isnan(median)
    assert math.isnan(noise)
    assert count == 0


def test_the_gradient_is_the_plane_across_the_detector() -> None:
    rows, cols = np.arange(0, 96, 2), np.arange(0, 128, 2)
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    values = 1000 + 300 * xx / 128 - 50 * yy / 96
    assert plane_gradient(values, rows, cols, SHAPE) == pytest.approx(350, rel=1e-9)
    assert plane_gradient(np.full((48, 64), 7.0), rows, cols, SHAPE) == pytest.approx(0, abs=1e-9)


def test_pixel_noise_leaves_the_illumination_out() -> None:
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:200, 0:300]
    image = 20000 * (1.2 - ((xx - 150) ** 2 + (yy - 100) ** 2) / 1e6) + rng.normal(0, 30, (200, 300))
    assert pixel_noise(image, SampleGrid((200, 300), 2)) == pytest.approx(30, rel=0.05)
    assert pixel_noise(image + 7, SampleGrid((200, 300), 2), np.full((200, 300), 7.0)) == pytest.approx(
        30, rel=0.05
    )
    assert robust(image.ravel())[1] > 100  # the plain noise holds the vignetting


def _write(folder: Path, frames: list[np.ndarray]) -> list[Path]:
    paths = []
    for i, data in enumerate(frames):
        path = folder / f"b{i}.fits"
        fits.PrimaryHDU(np.rint(data).astype(np.uint16)).writeto(path)  # BZERO 32768
        paths.append(path)
    return paths


def test_the_combine_measures_each_frame_and_its_difference_from_the_group(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = [1000 + rng.normal(0, 5, SHAPE) for _ in range(5)]
    frames[2] = frames[2] + 200 * np.arange(SHAPE[1])[None, :] / SHAPE[1]  # a light leak
    paths = _write(tmp_path, frames)
    plain = combine_files(paths)
    result = combine_files(paths, measure=True)
    np.testing.assert_array_equal(result.image, plain.image)  # measuring changes nothing
    assert plain.samples is None
    assert result.samples is not None
    measures = result.samples.measures()
    for i, m in enumerate(measures):
        stored = np.rint(frames[i]).astype(np.uint16).astype(np.float64)
        assert m.samples == SHAPE[0] * SHAPE[1]
        assert m.level == np.median(stored)
        assert m.diff_level == pytest.approx(np.median(stored - result.image), abs=0.5)
        assert m.saturated_fraction == 0
    clean = [m for i, m in enumerate(measures) if i != 2]
    assert all(m.gradient < 5 and m.diff_noise < 7 for m in clean)
    assert measures[2].gradient == pytest.approx(200, rel=0.05)
    assert measures[2].diff_noise > 30


def test_bands_measured_apart_equal_the_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    paths = _write(tmp_path, [1000 + rng.normal(0, 5, SHAPE) for _ in range(4)])
    whole = combine_files(paths, measure=True).samples
    parts = [combine_files(paths, measure=True, rows=band).samples for band in ((40, 96), (0, 17), (17, 40))]
    assert whole is not None
    assert all(p is not None for p in parts)
    merged = parts[0].merged(parts[1:])  # type: ignore[union-attr]
    assert merged.measures() == whole.measures()


def test_a_frame_samples_alone_without_differences() -> None:
    data = np.arange(12.0).reshape(3, 4)
    samples = FrameSamples.start((3, 4), [9.0], 1)
    samples.add(0, data[None], Decoded.native(1))
    (m,) = samples.measures()
    assert m.saturated_fraction == pytest.approx(3 / 12)
    assert m.level == np.median(data[data < 9])
    assert math.isnan(m.diff_noise)
    assert math.isnan(m.tail_fraction)


def test_the_gradient_leaves_out_cells_without_a_finite_sample() -> None:
    rows, cols = np.arange(0, 96, 2), np.arange(0, 128, 2)
    _, xx = np.meshgrid(rows, cols, indexing="ij")
    values = 1000 + 300 * xx / 128
    values[:6, :8] = np.nan  # a whole cell
    values[20, 30] = np.nan  # one sample: its cell's median is of the others
    assert plane_gradient(values, rows, cols, SHAPE) == pytest.approx(300, rel=1e-3)
    assert math.isnan(plane_gradient(np.full((48, 64), np.nan), rows, cols, SHAPE))
