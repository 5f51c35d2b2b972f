"""Uncertainty: created and propagated as ccdproc and NDData arithmetic do, combined as ccdproc combines."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import sigma_clip
from astropy.utils.exceptions import AstropyUserWarning

from ccdcal.kernels.bands import Stitcher, plan_bands
from ccdcal.kernels.clipkernel import MAD_TO_STD
from ccdcal.kernels.combine import (
    ClipParams,
    combine_files,
    sigma_clipped_median,
    sigma_clipped_median_deviation,
)
from ccdcal.kernels.light import clamp_flat
from ccdcal.kernels.uncertainty import NoiseModel, deviation, noise_model, propagate, uncertainty_hdu

SHAPE = (30, 40)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(44)


def test_gain_and_read_noise_from_headers_and_options() -> None:
    assert noise_model({"EGAIN": 2.3, "RDNOISE": "7.5"}) == (NoiseModel(2.3, "EGAIN", 7.5, "RDNOISE"), None)
    lois = {"AGAIN_01": 4.95, "ARDNS_01": 9.3}
    assert noise_model(lois)[0] == NoiseModel(4.95, "AGAIN_01", 9.3, "ARDNS_01")
    saao = {"GAIN": 1.9, "RDNOISE": 5.0}  # the IRAF pair: GAIN is e-/ADU there
    assert noise_model(saao)[0] == NoiseModel(1.9, "GAIN", 5.0, "RDNOISE")
    assert noise_model({"GAIN": 120, "EGAIN": 0.25}, readnoise=1.5)[0] == NoiseModel(
        0.25, "EGAIN", 1.5, "--readnoise"
    )
    assert noise_model(lois, gain=2.0, readnoise=0.0)[0] == NoiseModel(2.0, "--gain", 0.0, "--readnoise")
    model, reason = noise_model({"GAIN": 120})  # a CMOS gain setting: not e-/ADU
    assert model is None
    assert reason == (
        "--uncertainty needs the gain in e-/ADU (EGAIN, E-GAIN, AGAIN_01, or GAIN with RDNOISE): pass "
        "--gain; and the read noise in e- (RDNOISE, READNOIS, RDNOIS, RON, ARDNS_01): pass --readnoise"
    )
    assert noise_model({"EGAIN": 2.3})[1] == (
        "--uncertainty needs the read noise in e- (RDNOISE, READNOIS, RDNOIS, RON, ARDNS_01): "
        "pass --readnoise"
    )


@pytest.mark.parametrize(
    ("card", "shown"),
    [
        ("nan", "'nan'"),
        ("high", "'high'"),
        (0.0, "0.0"),
        (-1.5, "-1.5"),
        (math.inf, "inf"),
        (None, "no value"),
    ],
)
def test_an_unusable_gain_card_is_a_reason_never_the_next_keyword(card: object, shown: str) -> None:
    """EGAIN = 'nan' beside N.I.N.A.'s GAIN = 120 (its gain setting) and a read noise: before, GAIN was
    read as 120 e-/ADU and UNCERT came out about ten times too small."""
    nina = {"EGAIN": card, "GAIN": 120, "RDNOISE": 3.0, "SWCREATE": "N.I.N.A. 3.1.2.9001"}
    model, reason = noise_model(nina)
    assert model is None
    assert reason == (
        f"--uncertainty needs a usable EGAIN: EGAIN = {shown} is not a positive number of e-/ADU; pass --gain"
    )
    assert noise_model({**nina, "E-GAIN": 2.0})[0] is None  # never the next e-/ADU keyword either
    assert noise_model(nina, gain=0.25)[0] == NoiseModel(0.25, "--gain", 3.0, "RDNOISE")


@pytest.mark.parametrize("card", ["nan", "n/a", -2.0, math.nan, None])
def test_an_unusable_read_noise_card_is_a_reason(card: object) -> None:
    model, reason = noise_model({"EGAIN": 2.0, "RDNOISE": card, "RON": 5.0})
    assert model is None
    assert reason is not None
    assert reason.startswith("--uncertainty needs a usable RDNOISE: RDNOISE = ")
    assert reason.endswith("is not a number of e- (0 or more); pass --readnoise")
    assert noise_model({"EGAIN": 2.0, "RDNOISE": card}, readnoise=4.0)[0] == NoiseModel(
        2.0, "EGAIN", 4.0, "--readnoise"
    )


@pytest.mark.parametrize(
    "software",
    ["N.I.N.A. 3.1.2.9001", "SharpCap v4.1.11385.0, 64 bit", "KStars 3.6.7", "ASIAIR", "FireCapture v2.7"],
)
def test_a_capture_programs_gain_setting_is_never_read_as_e_per_adu(software: str) -> None:
    model, reason = noise_model({"GAIN": 120, "RDNOISE": 1.5, "SWCREATE": software})
    assert model is None
    assert reason == (
        "--uncertainty needs the gain in e-/ADU (EGAIN, E-GAIN, AGAIN_01, or GAIN with RDNOISE): pass --gain"
    )
    assert noise_model({"GAIN": 120, "RDNOISE": 1.5, "SWCREATE": "CCDSoft 5"})[0] == NoiseModel(
        120.0, "GAIN", 1.5, "RDNOISE"
    )


def test_the_iraf_pair_with_an_unusable_gain_is_a_reason() -> None:
    """LCO's primary header: GAIN = 0.0 beside RDNOISE = 7.0."""
    assert noise_model({"GAIN": 0.0, "RDNOISE": 7.0})[1] == (
        "--uncertainty needs a usable GAIN: GAIN = 0.0 is not a positive number of e-/ADU; pass --gain"
    )


def test_deviation_equals_create_deviation(rng: np.random.Generator) -> None:
    signal = rng.normal(50, 40, SHAPE)  # some negative pixels: counted as zero photons
    ours = deviation(signal, 2.5, 8.0)
    reference = ccdproc.create_deviation(
        CCDData(signal.copy(), unit="adu"),
        gain=2.5 * u.electron / u.adu,
        readnoise=8.0 * u.electron,
        disregard_nan=True,
    )
    np.testing.assert_allclose(ours, reference.uncertainty.array, rtol=1e-14)
    assert (ours[signal < 0] == 8.0 / 2.5).all()


def test_propagation_equals_ccdproc_arithmetic(rng: np.random.Generator) -> None:
    light = rng.normal(3000, 300, SHAPE)
    bias, dark = rng.normal(500, 3, SHAPE), rng.normal(20, 4, SHAPE)
    flat = rng.normal(1.0, 0.05, SHAPE)
    flat[0, :5] = 0.001  # clamped to flat_min
    sigmas = {name: rng.uniform(0.1, 2.0, SHAPE) for name in ("light", "bias", "dark")}
    flat_sigma = rng.uniform(0.001, 0.01, SHAPE)
    scale = 300 / 120

    def nd(data: np.ndarray, sigma: np.ndarray, unit: str = "adu") -> CCDData:
        return CCDData(data, unit=unit, uncertainty=StdDevUncertainty(sigma))

    reference = ccdproc.flat_correct(
        ccdproc.subtract_dark(
            ccdproc.subtract_bias(nd(light, sigmas["light"]), nd(bias, sigmas["bias"])),
            nd(dark, sigmas["dark"]),
            dark_exposure=120 * u.s,
            data_exposure=300 * u.s,
            scale=True,
        ),
        nd(flat, flat_sigma, ""),
        min_value=0.01,
        norm_value=1,
    )
    numerator = light - bias - dark * scale
    clamped = clamp_flat(flat, 0.01)[0].astype(np.float64)
    ours = propagate(
        sigmas["light"],
        numerator,
        bias_sigma=sigmas["bias"],
        dark_sigma=sigmas["dark"],
        dark_scale=scale,
        flat=clamped,
        flat_sigma=flat_sigma,
    )
    np.testing.assert_allclose(ours, reference.uncertainty.array, rtol=1e-6)
    alone = propagate(sigmas["light"], numerator, bias_sigma=sigmas["bias"])  # no flat, no dark
    np.testing.assert_allclose(alone, np.hypot(sigmas["light"], sigmas["bias"]), rtol=1e-14)


def clipped_reference(stack: np.ndarray, params: ClipParams | None = None) -> np.ndarray:
    """ccdproc's median_combine uncertainty of the combine's clipping (docs/design.md,
    Science)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)  # the non-finite samples
        return _clipped_reference(stack, params or ClipParams())


def _clipped_reference(stack: np.ndarray, params: ClipParams) -> np.ndarray:
    clipped = sigma_clip(
        stack,
        sigma_lower=params.sigma_lower,
        sigma_upper=params.sigma_upper,
        maxiters=params.maxiters,
        cenfunc="median",
        stdfunc=params.stdfunc,
        axis=0,
    )
    kept = len(stack) - clipped.mask.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(ccdproc.sigma_func(clipped, axis=0, ignore_nan=True)) / np.sqrt(kept)


def kept_deviation(stack: np.ndarray, params: ClipParams | None = None) -> np.ndarray:
    """The combine uncertainty in numpy, in float64: ``mad_std`` of the samples astropy's sigma_clip
    (compiled path) keeps, over the square root of their number; NaN where none is kept."""
    params = params or ClipParams()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        clipped = sigma_clip(
            stack,
            sigma_lower=params.sigma_lower,
            sigma_upper=params.sigma_upper,
            maxiters=params.maxiters,
            cenfunc="median",
            stdfunc=params.stdfunc,
            axis=0,
        )
    values = np.sort(np.ma.filled(clipped.astype(np.float64), np.nan), axis=0)
    count = np.count_nonzero(np.isfinite(values), axis=0)
    centre = _middle(values, count)
    spread = _middle(np.sort(np.abs(values - centre[np.newaxis]), axis=0), count)
    with np.errstate(divide="ignore", invalid="ignore"):
        result: np.ndarray = spread * MAD_TO_STD / np.sqrt(count)
    result[count == 0] = np.nan
    return result


def _middle(ordered: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The median along axis 0 of the ``count`` finite values that come first in each sorted column."""
    low = np.clip((count - 1) // 2, 0, None)[np.newaxis]
    high = np.clip(count // 2, 0, None)[np.newaxis]
    lower = np.take_along_axis(ordered, low, axis=0)[0]
    upper = np.take_along_axis(ordered, high, axis=0)[0]
    result: np.ndarray = 0.5 * (lower + upper)
    return result


@pytest.mark.parametrize("n", [1, 2, 5, 8, 31])
def test_combine_uncertainty_equals_ccdproc(rng: np.random.Generator, n: int) -> None:
    """The kernel's uncertainty, computed in the combine's pass, is ccdproc's median_combine uncertainty
    of the samples the clipping keeps (to float32), and the numpy definition bit for bit."""
    stack = rng.normal(1000, 10, (n, *SHAPE))
    stack[0, 3, 4] = 5000  # clipped
    stack[:, 5, 5] = np.nan  # nothing kept
    stack[n - 1, 6, 6] = np.inf
    stack[:, 7, 7] = 1000.0  # constant: nothing spread
    for params in (ClipParams(), ClipParams(sigma_lower=2.0, sigma_upper=2.5, stdfunc="std")):
        image, rejected, ours = sigma_clipped_median_deviation(stack, params)
        alone = sigma_clipped_median(stack, params)  # the same combine, its uncertainty dropped
        np.testing.assert_array_equal(image, alone[0])
        np.testing.assert_array_equal(rejected, alone[1])
        assert ours.dtype == np.float32
        assert np.isnan(ours[5, 5])
        assert ours[7, 7] == 0.0
        reference = clipped_reference(stack, params)
        finite = np.isfinite(reference)
        assert np.array_equal(np.isfinite(ours), finite)
        np.testing.assert_allclose(ours[finite], reference[finite], rtol=1e-6)
        np.testing.assert_array_equal(ours, kept_deviation(stack, params).astype(np.float32))


def test_combine_uncertainty_from_files_in_blocks_and_bands(tmp_path: Path, rng: np.random.Generator) -> None:
    """From files, with offsets and scales, in blocks of rows or bands put together: the same numbers."""
    frames = rng.normal(2000, 20, (4, *SHAPE))
    frames[2, 10, 10] = 60000  # clipped
    paths = []
    for i, frame in enumerate(frames):
        paths.append(tmp_path / f"f{i}.fits")
        fits.PrimaryHDU(np.rint(frame).astype(np.uint16)).writeto(paths[-1])
    offset = rng.normal(100, 1, SHAPE)
    scale = [1.0, 0.5, 2.0, 1.5]
    stacked = np.array(
        [(fits.getdata(p).astype(np.float64) - offset) * s for p, s in zip(paths, scale, strict=True)]
    )
    expected = kept_deviation(stacked).astype(np.float32)
    row = 4 * SHAPE[1] * 2 + SHAPE[1] * 2
    for limit in (1 << 30, SHAPE[0] * SHAPE[1] * (10 + 8) + 2 * 3 * row):  # one block; blocks of 3 rows
        result = combine_files(paths, scale=scale, offset=[offset] * 4, mem_limit=limit)
        np.testing.assert_array_equal(result.uncertainty, expected)
    stitcher = Stitcher(SHAPE, 4, ClipParams())
    for rows in plan_bands(4, SHAPE, 1 << 30, parts=3):
        stitcher.add(combine_files(paths, scale=scale, offset=[offset] * 4, rows=rows))
    np.testing.assert_array_equal(stitcher.result().uncertainty, expected)


def test_uncertainty_extension_reads_back_as_stddev(tmp_path: Path) -> None:
    sigma = np.full(SHAPE, 2.5, dtype=np.float32)
    fits.HDUList([fits.PrimaryHDU(np.zeros(SHAPE, np.float32)), uncertainty_hdu(sigma)]).writeto(
        tmp_path / "m.fits"
    )
    data = CCDData.read(tmp_path / "m.fits", unit="adu")
    assert isinstance(data.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(data.uncertainty.array, sigma)
