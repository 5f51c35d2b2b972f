"""Pre-calibration of master inputs (bias, dark, flat steps) and the master QA numbers, as pure functions."""

from __future__ import annotations

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.nddata import CCDData

from ccdcal.errors import UsageError
from ccdcal.kernels.bias import subtract_bias
from ccdcal.kernels.combine import sigma_clipped_median
from ccdcal.kernels.dark import dark_scale, subtract_dark
from ccdcal.kernels.flat import finite_median, flat_level, normalise_to_median, precalibration_offset
from ccdcal.kernels.qa import QA_OUTLIER_FRACTION, compare_masters, master_stats, pixel_noise

RNG_SHAPE = (48, 64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260314)


def test_subtract_bias_equals_ccdproc(rng: np.random.Generator) -> None:
    raw = rng.integers(900, 1100, RNG_SHAPE).astype(np.uint16)
    bias = rng.normal(1000, 2, RNG_SHAPE).astype(np.float32)
    ours = subtract_bias(raw, bias)
    theirs = ccdproc.subtract_bias(CCDData(raw, unit="adu"), CCDData(bias, unit="adu"))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs.data, rtol=0, atol=1e-4)


def test_subtract_dark_equals_ccdproc_scaled(rng: np.random.Generator) -> None:
    frame = rng.normal(300, 5, RNG_SHAPE)
    dark = rng.normal(20, 3, RNG_SHAPE).astype(np.float32)
    ours = subtract_dark(frame, dark, dark_scale(90.0, 300.0))
    theirs = ccdproc.subtract_dark(
        CCDData(frame, unit="adu", meta={"EXPTIME": 90.0}),
        CCDData(dark, unit="adu", meta={"EXPTIME": 300.0}),
        exposure_time="EXPTIME",
        exposure_unit=u.s,
        scale=True,
    )
    np.testing.assert_allclose(ours, theirs.data, rtol=1e-6, atol=1e-4)


def test_dark_scale() -> None:
    assert dark_scale(60.0, 300.0) == pytest.approx(0.2)
    assert dark_scale(300.0, 300.0) == 1.0
    with pytest.raises(UsageError, match=r"0\.0 s cannot be scaled"):
        dark_scale(10.0, 0.0)
    with pytest.raises(UsageError):
        dark_scale(10.0, float("nan"))


def test_precalibration_offset() -> None:
    bias = np.full((2, 3), 500.0, np.float32)
    dark = np.full((2, 3), 10.0, np.float32)
    assert precalibration_offset(None, None, 0.0) == 0.0
    only_bias = precalibration_offset(bias, None, 0.0)
    assert isinstance(only_bias, np.ndarray)
    assert only_bias.dtype == np.float64
    np.testing.assert_array_equal(only_bias, 500.0)
    np.testing.assert_array_equal(precalibration_offset(bias, dark, 0.4), 504.0)
    np.testing.assert_array_equal(precalibration_offset(None, dark, 1.0), 10.0)


def test_finite_median_ignores_non_finite() -> None:
    assert finite_median(np.array([1.0, np.nan, 3.0, np.inf, 2.0])) == 2.0
    assert np.isnan(finite_median(np.array([np.nan, np.nan])))


def test_flat_level_is_the_median_after_subtraction() -> None:
    frame = np.array([[1000, 1100], [1200, 65535]], dtype=np.uint16)
    assert flat_level(frame, 100.0) == pytest.approx(1050.0)
    assert flat_level(frame, np.array([[0.0, 0.0], [0.0, np.nan]])) == 1100.0
    with pytest.raises(ValueError, match="not a flat"):
        flat_level(frame, 70000.0)
    with pytest.raises(ValueError, match="not a flat"):
        flat_level(np.full((2, 2), np.nan))


def test_a_flats_level_leaves_its_saturated_pixels_out() -> None:
    frame = np.array([[1000, 1100], [1200, 65535]], dtype=np.uint16)
    assert flat_level(frame, 100.0, saturation=65535.0) == 1000.0  # median of 900, 1000, 1100
    assert flat_level(frame, 100.0, saturation=1150.0) == 950.0
    with pytest.raises(ValueError, match=r"^75% of its pixels are saturated \(at or above 1001\)$"):
        flat_level(frame, 100.0, saturation=1001.0)
    assert flat_level(frame, 100.0, saturation=None) == pytest.approx(1050.0)


def test_normalise_to_median() -> None:
    image = np.array([[2.0, 4.0, 6.0], [8.0, np.nan, 4.0]], np.float32)
    normalised, median = normalise_to_median(image)
    assert median == 4.0
    assert normalised.dtype == np.float32
    assert finite_median(normalised) == 1.0
    np.testing.assert_array_equal(normalised[0], [0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="not a positive level"):
        normalise_to_median(np.zeros((3, 3)))


def test_flat_recipe_equals_ccdproc_steps(rng: np.random.Generator) -> None:
    """Bias, scaled dark, per-frame median, combine, median 1 — against ccdproc and astropy's sigma_clip."""
    from astropy.stats import sigma_clip

    bias = rng.normal(500, 1, RNG_SHAPE).astype(np.float32)
    dark = rng.gamma(2.0, 3.0, RNG_SHAPE).astype(np.float32)  # a 10 s dark
    pattern = np.linspace(0.8, 1.1, RNG_SHAPE[1])[None, :] * np.ones(RNG_SHAPE)
    exposures = [2.0, 3.0, 3.0, 4.0, 2.5]
    raws = [
        np.rint(bias + dark * t / 10 + rng.normal(20000 * k, 60, RNG_SHAPE) * pattern).astype(np.uint16)
        for k, t in zip((1.0, 0.9, 1.05, 1.1, 0.95), exposures, strict=True)
    ]
    ours_stack = []
    reference_stack = []
    for raw, t in zip(raws, exposures, strict=True):
        offset = precalibration_offset(bias, dark, dark_scale(t, 10.0))
        ours_stack.append((raw - offset) / flat_level(raw, offset))
        ccd = CCDData(raw.astype(np.float64), unit="adu", meta={"EXPTIME": t})
        ccd = ccdproc.subtract_bias(ccd, CCDData(bias.astype(np.float64), unit="adu"))
        ccd = ccdproc.subtract_dark(
            ccd,
            CCDData(dark.astype(np.float64), unit="adu", meta={"EXPTIME": 10.0}),
            exposure_time="EXPTIME",
            exposure_unit=u.s,
            scale=True,
        )
        reference_stack.append(ccd.data / np.median(ccd.data))
    ours, _ = normalise_to_median(sigma_clipped_median(np.array(ours_stack))[0])
    clipped = sigma_clip(
        np.array(reference_stack), sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0
    )
    combined = np.ma.median(clipped, axis=0).filled(np.nan)
    reference = combined / np.median(combined)
    assert np.max(np.abs(ours / reference - 1)) < 1e-5
    assert np.median(ours) == 1.0


# -- QA ------------------------------------------------------------------------------------------------


def test_master_stats() -> None:
    stats = master_stats(np.array([[1.0, 2.0], [3.0, np.nan]]))
    assert stats == {"median": 2.0, "mean": 2.0, "std": pytest.approx(np.std([1.0, 2.0, 3.0]))}
    assert all(np.isnan(v) for v in master_stats(np.full((2, 2), np.nan)).values())


def test_pixel_noise_ignores_gradients_and_column_patterns(rng: np.random.Generator) -> None:
    noise = rng.normal(0, 2.0, (200, 300))
    structure = np.linspace(0, 500, 200)[:, None] + rng.normal(0, 10, 300)[None, :]
    assert pixel_noise(noise + structure) == pytest.approx(2.0, rel=0.05)
    assert pixel_noise(np.ones((1, 5))) == 0.0


def bias_masters(rng: np.random.Generator, n: int, level: float = 500.0) -> np.ndarray:
    columns = np.random.default_rng(1).normal(0, 1, 320)
    stack = np.rint(level + columns + rng.normal(0, 3.5, (n, 120, 320)))
    return stack


def test_qa_is_quiet_for_a_master_with_one_frame_more_or_less(rng: np.random.Generator) -> None:
    stack = bias_masters(rng, 8)
    seven = sigma_clipped_median(stack[:7])[0]
    for other in (stack[:8], stack[:6], stack[:5]):
        comparison = compare_masters(sigma_clipped_median(other)[0], seven)
        assert comparison is not None
        assert not comparison.level_moved, comparison
        assert not comparison.structure_changed, comparison


def test_qa_flags_a_level_shift(rng: np.random.Generator) -> None:
    old = sigma_clipped_median(bias_masters(rng, 7))[0]
    new = sigma_clipped_median(bias_masters(rng, 7, level=510.0))[0]
    comparison = compare_masters(new, old)
    assert comparison is not None
    assert comparison.shift == pytest.approx(10.0, abs=0.6)
    assert comparison.level_moved
    quiet = compare_masters(sigma_clipped_median(bias_masters(rng, 7))[0], old)
    assert quiet is not None
    assert not quiet.level_moved


def test_qa_flags_a_changed_pattern(rng: np.random.Generator) -> None:
    yy, xx = np.mgrid[:120, :160]
    flat = 1 + rng.normal(0, 0.004, (120, 160))
    dust = np.where((yy - 60) ** 2 + (xx - 80) ** 2 < 15**2, 0.94, 1.0)
    comparison = compare_masters(flat * dust, flat + rng.normal(0, 0.003, flat.shape))
    assert comparison is not None
    assert comparison.outlier_fraction > QA_OUTLIER_FRACTION
    assert comparison.structure_changed
    assert not comparison.level_moved


def test_qa_edge_cases() -> None:
    assert compare_masters(np.zeros((3, 3)), np.zeros((3, 4))) is None
    assert compare_masters(np.full((3, 3), np.nan), np.zeros((3, 3))) is None
    same = compare_masters(np.ones((3, 3)), np.ones((3, 3)))
    assert same is not None
    assert same.sigma == 0
    assert not same.level_moved
    assert not same.structure_changed
    moved = compare_masters(np.full((3, 3), 2.0), np.ones((3, 3)))
    assert moved is not None
    assert moved.level_moved
