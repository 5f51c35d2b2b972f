"""A master's level (sigma-clipped mean) and the dark current fitted to master darks' levels."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from ccdcal.kernels.dark import MIN_DARK_SIGNAL, fit_dark_current
from ccdcal.kernels.qa import clipped_level


def test_clipped_level_is_astropys_sigma_clipped_mean_with_its_standard_error() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(24.0, 6.0, (120, 160))
    image[rng.integers(0, 120, 30), rng.integers(0, 160, 30)] = 5000.0  # hot pixels
    image[5, 7] = np.nan
    level = clipped_level(image.astype(np.float32))
    assert level is not None
    finite = image[np.isfinite(image)].astype(np.float32).astype(np.float64)
    mean, _, _ = sigma_clipped_stats(finite, sigma=3, maxiters=5)
    assert level.mean == pytest.approx(mean, rel=1e-12)
    assert level.mean == pytest.approx(24.0, abs=4 * level.error)
    assert level.std == pytest.approx(6.0, rel=0.03)
    assert level.pixels < image.size - 30
    assert level.error == pytest.approx(level.std / np.sqrt(level.pixels))


def test_the_level_of_integer_data_is_not_quantised_as_its_median() -> None:
    """The issue: medians of integer masters jump by whole steps; the clipped mean moves smoothly."""
    rng = np.random.default_rng(5)
    image = np.round(rng.normal(0.31, 2.6, (200, 200)))
    level = clipped_level(image)
    assert level is not None
    assert np.median(image) == 0.0
    assert level.mean == pytest.approx(0.31, abs=4 * level.error)


def test_clipped_level_of_no_finite_pixel_and_of_a_constant_image() -> None:
    assert clipped_level(np.full((3, 3), np.nan)) is None
    level = clipped_level(np.full((4, 4), 7.0))
    assert level is not None
    assert (level.mean, level.error, level.std, level.pixels) == (7.0, 0.0, 0.0, 16)


T = np.array([2.0, 5.0, 60.0, 300.0])
ERRORS = np.array([0.009, 0.009, 0.0125, 0.021])


def test_the_fit_is_numpys_weighted_polyfit_with_its_covariance_scaled_by_chi2() -> None:
    levels = 0.078 * T - 0.08 + np.array([0.1, -0.05, -0.2, 0.08])  # scatter beyond the errors
    fit = fit_dark_current(T, levels, ERRORS)
    coefficients, covariance = np.polyfit(T, levels, 1, w=1 / ERRORS, cov=True)
    assert (fit.rate, fit.offset) == pytest.approx(tuple(coefficients), rel=1e-10)
    assert fit.error == pytest.approx(np.sqrt(covariance[0, 0]), rel=1e-8)
    assert fit.offset_error == pytest.approx(np.sqrt(covariance[1, 1]), rel=1e-8)
    assert fit.dof == 2
    assert fit.chi2 == pytest.approx(np.sum(((levels - np.polyval(coefficients, T)) / ERRORS) ** 2))
    assert fit.scale == pytest.approx(np.sqrt(fit.chi2 / 2))
    assert fit.exposures == (2.0, 5.0, 60.0, 300.0)
    assert fit.resolved
    assert fit.notes == (
        f"the levels scatter about the line {fit.scale:.3g} times more than their noise: "
        "the uncertainties are multiplied by that",
    )


def test_levels_within_their_noise_keep_the_unscaled_uncertainty() -> None:
    levels = 0.08 * T + 0.3 + np.array([0.002, -0.003, 0.004, -0.001])
    fit = fit_dark_current(T, levels, ERRORS)
    coefficients, covariance = np.polyfit(T, levels, 1, w=1 / ERRORS, cov="unscaled")
    assert fit.chi2 is not None
    assert fit.chi2 < fit.dof
    assert (fit.rate, fit.offset) == pytest.approx(tuple(coefficients), rel=1e-10)
    assert (fit.error, fit.offset_error) == pytest.approx(tuple(np.sqrt(np.diag(covariance))), rel=1e-8)
    assert (fit.scale, fit.notes, fit.resolved) == (1.0, (), True)


def test_an_exact_line_and_known_values() -> None:
    """Two levels, equal errors: the rate is the slope between them, its error sqrt(2) σ / Δt."""
    fit = fit_dark_current([60.0, 300.0], [4.8 + 1.0, 24.0 + 1.0], [0.1, 0.1])
    assert fit.rate == pytest.approx(0.08)
    assert fit.offset == pytest.approx(1.0)
    assert fit.error == pytest.approx(np.sqrt(2) * 0.1 / 240)
    assert fit.chi2 == pytest.approx(0.0, abs=1e-18)
    assert fit.dof == 0
    assert fit.resolved
    assert fit.notes == (
        "two exposures: the line cannot be checked, its uncertainty is the levels' noise alone",
    )


def test_one_exposure_says_it_cannot_separate_a_bias_offset() -> None:
    fit = fit_dark_current([300.0], [24.0], [0.03])
    assert (fit.rate, fit.error) == pytest.approx((0.08, 0.0001))
    assert (fit.offset, fit.offset_error, fit.chi2, fit.dof) == (None, None, None, 0)
    assert fit.resolved
    assert fit.notes == (
        "one exposure (300 s): the rate is its level / exposure, which cannot be separated from a "
        "residual bias offset",
    )


def test_short_darks_do_not_resolve_the_dark_current() -> None:
    """2 s and 5 s darks of 0.08 ADU/s: 0.4 ADU at most, below the step of integer data."""
    fit = fit_dark_current([2.0, 5.0], [0.13, 0.31], [0.009, 0.009])
    assert fit.error < fit.rate  # formally significant ...
    assert not fit.resolved  # ... but not resolved
    assert fit.notes[-1] == (
        f"not resolved: the longest dark (5 s) holds {fit.rate * 5:.2g} ADU of dark current, less than "
        f"{MIN_DARK_SIGNAL:g} ADU, the step of integer raw data"
    )


def test_a_rate_within_its_uncertainty_is_not_resolved() -> None:
    fit = fit_dark_current([60.0, 300.0], [1.0, 1.5], [0.5, 0.5])
    assert fit.error > fit.rate
    assert not fit.resolved
    assert f"not resolved: its uncertainty {fit.error:.2g} ADU/s is not smaller than the rate" in fit.notes


def test_a_resolved_negative_rate_says_so() -> None:
    fit = fit_dark_current([60.0, 300.0], [-1.0, -5.0], [0.01, 0.01])
    assert fit.resolved
    assert fit.rate == pytest.approx(-1 / 60)
    assert fit.notes[-1] == "negative: the darks are below their bias (did the bias level move?)"


def test_zero_errors_and_repeated_exposures() -> None:
    fit = fit_dark_current([0.0, 300.0, 300.0], [1.0, 25.0, 25.0], [0.0, 0.0, 0.0])
    assert fit.rate == pytest.approx(0.08)
    assert fit.exposures == (0.0, 300.0)
    one = fit_dark_current([60.0, 60.0], [4.0, 6.0], [1.0, 1.0])
    assert one.rate == pytest.approx(5.0 / 60)
    assert one.error == pytest.approx(np.sqrt(0.5) / 60)


@pytest.mark.parametrize(
    ("exptimes", "levels", "errors", "message"),
    [
        ([], [], [], "of one length, not empty"),
        ([60.0], [1.0, 2.0], [0.1], "of one length, not empty"),
        ([0.0, 0.0], [1.0, 2.0], [0.1, 0.1], "no positive exposure"),
        ([60.0], [np.nan], [0.1], "must be finite"),
        ([60.0], [1.0], [-0.1], "cannot be negative"),
        ([60.0, 300.0], [1e308, -1e308], [0.1, 0.1], "too large or too small"),
        ([60.0, 300.0], [0.0, 1.0], [1e-300, 1.3e154], "too large or too small"),
    ],
)
def test_what_cannot_be_fitted(
    exptimes: list[float], levels: list[float], errors: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fit_dark_current(exptimes, levels, errors)
