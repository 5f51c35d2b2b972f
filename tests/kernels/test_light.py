"""The light kernels: (light − bias − dark × scale) / flat in one fused pass, equal to ccdproc."""

from __future__ import annotations

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.nddata import CCDData

from ccdcal.files.calibrated import fold_checksum
from ccdcal.kernels.light import (
    be_words,
    calibrate_be16_words,
    calibrate_image,
    clamp_flat,
    flat_reciprocal,
    warm_up,
)

SHAPE = (48, 64)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20260315)


@pytest.fixture
def frames(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A raw light (uint16), float32 masters, and a flat with low and non-finite pixels."""
    flat = rng.normal(1.0, 0.05, SHAPE).astype(np.float32)
    flat[:, :3] = rng.uniform(-0.02, 0.009, (SHAPE[0], 3)).astype(np.float32)  # a dark strip
    flat[5, 5] = np.float32(0.01)  # exactly at the threshold: kept, as ccdproc keeps it
    flat[6, 6] = np.nan
    return {
        "raw": rng.integers(400, 60000, SHAPE).astype(np.uint16),
        "bias": rng.normal(500.0, 3.0, SHAPE).astype(np.float32),
        "dark": rng.normal(12.0, 4.0, SHAPE).astype(np.float32),
        "flat": flat,
    }


def ccd(data: np.ndarray, **meta: float) -> CCDData:
    return CCDData(np.asarray(data, dtype=np.float64), unit="adu", meta=meta)


def ccdproc_light(frames: dict[str, np.ndarray], t_light: float, t_dark: float) -> CCDData:
    """The definition, with ccdproc: subtract_bias, subtract_dark(scale=True), flat_correct(norm_value=1)."""
    light = ccdproc.subtract_bias(ccd(frames["raw"], EXPTIME=t_light), ccd(frames["bias"]))
    light = ccdproc.subtract_dark(
        light,
        ccd(frames["dark"], EXPTIME=t_dark),
        exposure_time="EXPTIME",
        exposure_unit=u.s,
        scale=True,
    )
    flat = CCDData(frames["flat"], unit=u.dimensionless_unscaled)
    with np.errstate(invalid="ignore"):
        return ccdproc.flat_correct(light, flat, min_value=0.01, norm_value=1)


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours − reference| / max(|reference|, 1) over finite reference pixels."""
    finite = np.isfinite(reference)
    diff = np.abs(ours.astype(np.float64)[finite] - reference[finite])
    return float(np.max(diff / np.maximum(np.abs(reference[finite]), 1.0)))


@pytest.mark.parametrize(("t_light", "t_dark"), [(300.0, 300.0), (300.0, 120.0), (45.0, 60.0)])
def test_calibrate_image_equals_ccdproc(frames: dict[str, np.ndarray], t_light: float, t_dark: float) -> None:
    flat, _, n_masked = clamp_flat(frames["flat"], 0.01)
    ours = calibrate_image(frames["raw"], frames["bias"], frames["dark"], t_light / t_dark, flat)
    reference = ccdproc_light(frames, t_light, t_dark).data
    assert ours.dtype == np.float32
    assert ours.shape == SHAPE
    assert relative_difference(ours, reference) < 1e-6
    assert np.isnan(ours[6, 6])
    assert np.array_equal(np.isnan(ours), np.isnan(reference))
    assert n_masked == SHAPE[0] * 3 + 1  # the strip and the NaN; 0.01 itself is not below 0.01


def test_clamp_flat_is_ccdprocs_min_value(frames: dict[str, np.ndarray]) -> None:
    clamped, mask, n_masked = clamp_flat(frames["flat"], 0.01)
    reference = frames["flat"].copy()
    reference[reference < 0.01] = 0.01
    assert clamped.dtype == np.float32
    np.testing.assert_array_equal(clamped, reference)
    assert mask.dtype == np.uint8
    assert mask[:, :3].all()
    assert mask[6, 6] == 1
    assert mask[5, 5] == 0
    assert int(mask.sum()) == n_masked
    assert clamp_flat(np.ones((4, 4), np.float32))[2] == 0


def test_steps_can_be_left_out(frames: dict[str, np.ndarray]) -> None:
    raw, bias, dark = frames["raw"], frames["bias"], frames["dark"]
    np.testing.assert_array_equal(calibrate_image(raw), raw.astype(np.float32))
    np.testing.assert_allclose(calibrate_image(raw, bias), raw - bias.astype(np.float64), rtol=1e-7)
    np.testing.assert_allclose(
        calibrate_image(raw, None, dark, 2.5), raw - 2.5 * dark.astype(np.float64), rtol=1e-7, atol=1e-3
    )
    flat, _, _ = clamp_flat(np.full(SHAPE, 2.0, np.float32))
    np.testing.assert_allclose(calibrate_image(raw, None, None, 1.0, flat), raw / 2.0, rtol=1e-7)


def test_a_master_of_another_size_is_refused(frames: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="a master of 12 pixels cannot calibrate a frame of 3072"):
        calibrate_image(frames["raw"], np.zeros((3, 4), np.float32))


@pytest.mark.parametrize("signed", [False, True])
def test_be16_words_equal_the_image_path(frames: dict[str, np.ndarray], signed: bool) -> None:
    """The fast path reads 16-bit FITS words as stored and writes big-endian float32 words."""
    raw = frames["raw"].astype(np.int64)
    if signed:
        raw = raw - 30000  # BZERO 0: signed pixels, some negative
        stored = raw.astype(">i2")
    else:
        stored = (raw - 32768).astype(">i2")  # BZERO 32768: the unsigned camera case
    flat, _, _ = clamp_flat(frames["flat"])
    words = np.empty(raw.size, dtype=np.uint32)
    total = calibrate_be16_words(
        stored.view(np.uint16).reshape(-1),
        signed,
        frames["bias"],
        frames["dark"],
        0.4,
        flat_reciprocal(flat),
        words,
    )
    image = calibrate_image(raw, frames["bias"], frames["dark"], 0.4, flat)
    ours = words.view(">f4").reshape(SHAPE)
    np.testing.assert_array_equal(ours, image)
    assert total == int(words.view(">u4").astype(np.uint64).sum())
    copy = np.empty_like(words)
    assert be_words(image, copy) == total
    np.testing.assert_array_equal(copy, words)


def test_fold_checksum_is_a_ones_complement_sum() -> None:
    assert fold_checksum(0xFFFFFFFF + 2) == 2
    assert fold_checksum(0x1_0000_0000) == 1
    assert fold_checksum(12345) == 12345


def test_warm_up_compiles_every_step_set() -> None:
    warm_up([(True, False, True), (False, False, False)])
