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
    flagged,
    flat_bits,
    flat_reciprocal,
    mask_bit_counts,
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


def test_flat_bits_flag_clamped_and_low_response(frames: dict[str, np.ndarray]) -> None:
    """Bit 1 where the flat is clamped or not finite, as clamp_flat; bit 16 below flat_low (a clamped
    pixel is below it too), compared in float32."""
    flat = frames["flat"].copy()
    flat[10, 10] = np.float32(0.5)  # at the threshold: kept
    flat[10, 11] = np.nextafter(np.float32(0.5), np.float32(0))
    bits, clamped, low = flat_bits(flat, 0.01, 0.5)
    assert (bits.dtype, bits.shape) == (np.uint8, SHAPE)
    np.testing.assert_array_equal(bits & 1, clamp_flat(flat, 0.01)[1])
    np.testing.assert_array_equal((bits & 16) != 0, flat < np.float32(0.5))
    assert (bits[10, 10], bits[10, 11], bits[6, 6]) == (0, 16, 1)  # NaN: clamped, not "low"
    assert (clamped, low) == (int(np.count_nonzero(bits & 1)), int(np.count_nonzero(bits & 16)))
    assert set(np.unique(bits)) <= {0, 1, 16, 17}


@pytest.mark.parametrize("signed", [False, True])
def test_be16_mask_flags_raw_samples_at_or_above_the_level(
    frames: dict[str, np.ndarray], signed: bool
) -> None:
    """Bit 8 where the raw value (after BZERO, before the bias is subtracted) is at or above the level,
    ORed with the flat's bits; the same mask as the generic path's."""
    raw = frames["raw"].astype(np.int64) - (30000 if signed else 0)  # BZERO 0: signed, within int16
    top = 32767 if signed else 65535
    raw[0, :4] = [top, top - 1, top - 2, 0 if signed else 1]
    raw[1, 1] = top
    level = float(top - 1)
    stored = (raw if signed else raw - 32768).astype(">i2")
    bias = frames["bias"].copy()
    bias[0, 1] = 5000.0  # the calibrated value is far below the level: still saturated in the raw frame
    flat, _, _ = clamp_flat(frames["flat"])
    bits, _, _ = flat_bits(frames["flat"])
    words = np.empty(raw.size, dtype=np.uint32)
    mask = np.full(raw.size, 255, dtype=np.uint8)
    calibrate_be16_words(
        stored.view(np.uint16).reshape(-1),
        signed,
        bias,
        None,
        1.0,
        flat_reciprocal(flat),
        words,
        mask=mask,
        bits=bits,
        saturation=level,
    )
    mask = mask.reshape(SHAPE)
    expected = bits | np.where(raw >= level, 8, 0).astype(np.uint8)
    np.testing.assert_array_equal(mask, expected)
    assert (mask[0, 0] & 8, mask[0, 1] & 8, mask[0, 2] & 8, mask[1, 1] & 8) == (8, 8, 0, 8)
    np.testing.assert_array_equal(mask, flagged(raw, bits, level))
    np.testing.assert_array_equal(
        words.view(">f4").reshape(SHAPE), calibrate_image(raw, bias, None, 1.0, flat)
    )  # the pixels are as before: flags only


def test_be16_mask_without_a_flat_or_a_level(frames: dict[str, np.ndarray]) -> None:
    stored = (frames["raw"].astype(np.int64) - 32768).astype(">i2").view(np.uint16).reshape(-1)
    words = np.empty(stored.size, dtype=np.uint32)
    mask = np.full(stored.size, 255, dtype=np.uint8)
    calibrate_be16_words(stored, False, frames["bias"], None, 1.0, None, words, mask=mask)
    assert not mask.any()
    calibrate_be16_words(stored, False, None, None, 1.0, None, words, mask=mask, saturation=400.0)
    np.testing.assert_array_equal(mask.reshape(SHAPE), np.where(frames["raw"] >= 400, 8, 0))
    assert not flagged(frames["raw"], None, None).any()


@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_mask_bit_counts_are_the_histograms(rng: np.random.Generator, density: float) -> None:
    mask = np.where(rng.random(SHAPE) < density, rng.integers(0, 256, SHAPE), 0).astype(np.uint8)
    flagged, per_bit = mask_bit_counts(mask)
    assert flagged == int(np.count_nonzero(mask))
    assert per_bit == {1 << b: int(np.count_nonzero(mask & (1 << b))) for b in range(8)}


def test_fold_checksum_is_a_ones_complement_sum() -> None:
    assert fold_checksum(0xFFFFFFFF + 2) == 2
    assert fold_checksum(0x1_0000_0000) == 1
    assert fold_checksum(12345) == 12345


def test_warm_up_compiles_every_step_set() -> None:
    warm_up([(True, False, True), (False, False, False)])
