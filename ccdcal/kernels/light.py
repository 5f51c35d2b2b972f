"""Light: the calibrated light is ``(light − bias − dark × scale) / flat``, written as float32.

The science (docs/design.md, Science), in ccdproc terms::

    ccdproc.flat_correct(
        ccdproc.subtract_dark(ccdproc.subtract_bias(light, bias), dark, scale=True, ...),
        flat, min_value=flat_min, norm_value=1,
    )

that is, the stored median-1 master flat is divided by as it is, and flat pixels below ``flat_min`` are
raised to ``flat_min`` (ccdproc's ``min_value``) and flagged in a mask. Each pixel is computed in float64
registers (the flat's reciprocal held in float32) and rounded to float32, so the result equals
ccdproc's float64 computation to about 1e-7 relative.

The arithmetic is one fused pass per frame (numba), multiplying by the reciprocal of the clamped flat
(:func:`flat_reciprocal`, computed once per flat): :func:`calibrate_image` on arrays, and
:func:`calibrate_be16_words`, which reads the big-endian 16-bit pixels of a FITS data unit as they are
in the file and writes the big-endian float32 words of the output data unit, with their FITS checksum
sum, and the MASK (the flat's bits, and bit 8 where the raw sample is at or above the saturation level),
in the same pass. :func:`be_words` converts an image computed another way.

The MASK bits of the flat (:func:`flat_bits`): 1 where it is below ``flat_min`` (clamped) or not finite,
16 where its response is below ``flat_low`` (vignetted: :data:`FLAT_LOW`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numba import njit

from ccdcal.kernels.options import FLAT_LOW, FLAT_MIN

#: MASK bits set here: flat below ``flat_min`` (clamped), saturated in the raw frame, low flat response.
CLAMPED_BIT, SATURATED_BIT, LOW_FLAT_BIT = 1, 8, 16

#: Bits of the ``steps`` argument of the kernels.
BIAS, DARK, FLAT = 1, 2, 4


def step_bits(bias: bool, dark: bool, flat: bool) -> int:
    """The ``steps`` bit set of the kernels for the steps applied."""
    return (BIAS if bias else 0) | (DARK if dark else 0) | (FLAT if flat else 0)


def flat_reciprocal(clamped: np.ndarray) -> np.ndarray:
    """``1 / flat``, computed in float64 and stored as float32: the kernels multiply by it.

    A float64 division per pixel costs as much as the rest of the pass, and the pass is bound by memory
    traffic; multiplying by the float32 reciprocal adds at most one float32 rounding (6e-8 relative) to
    the division.

    Parameters
    ----------
    clamped : numpy.ndarray
        Flat from :func:`clamp_flat`.

    Returns
    -------
    numpy.ndarray
        float32 reciprocal, contiguous, of ``clamped``'s shape.
    """
    flat = np.ascontiguousarray(clamped).reshape(-1)
    inverse = np.empty(flat.size, dtype=np.float32)
    for start in range(0, flat.size, _RECIPROCAL_BLOCK):  # by blocks: no float64 copy of the whole flat
        block = flat[start : start + _RECIPROCAL_BLOCK]
        inverse[start : start + block.size] = np.divide(1.0, block.astype(np.float64))
    return inverse.reshape(np.shape(clamped))


#: Pixels of a flat whose reciprocal is computed at a time (in float64: 2 MiB).
_RECIPROCAL_BLOCK = 1 << 18


def clamp_flat(flat: np.ndarray, flat_min: float = FLAT_MIN) -> tuple[np.ndarray, np.ndarray, int]:
    """The flat as it divides: pixels below ``flat_min`` raised to it, and the mask of those pixels.

    As ccdproc's ``flat_correct(min_value=flat_min)``: the comparison and the replacement value are in
    the flat's float32 precision. Pixels that are not finite are flagged too (they are left as they are,
    as ccdproc leaves them).

    Parameters
    ----------
    flat : numpy.ndarray
        Master flat (median 1).
    flat_min : float
        Smallest flat value divided by.

    Returns
    -------
    clamped : numpy.ndarray
        float32 flat with low pixels replaced by ``float32(flat_min)``.
    mask : numpy.ndarray
        uint8, 1 where the flat was below ``flat_min`` or not finite.
    n_masked : int
        Number of flagged pixels.
    """
    floor = np.float32(flat_min)
    clamped = np.array(flat, dtype=np.float32, copy=True)
    low = clamped < floor
    clamped[low] = floor
    mask = ~(np.asarray(flat, dtype=np.float32) >= floor)
    return clamped, mask.astype(np.uint8), int(np.count_nonzero(mask))


def flat_bits(
    flat: np.ndarray, flat_min: float = FLAT_MIN, flat_low: float = FLAT_LOW
) -> tuple[np.ndarray, int, int]:
    """The MASK bits a flat gives every light it divides, and how many pixels carry each.

    Bit 1 (:data:`CLAMPED_BIT`) where the flat is below ``flat_min`` or not finite (as
    :func:`clamp_flat`), bit 16 (:data:`LOW_FLAT_BIT`) where it is below ``flat_low``: a pixel clamped
    carries both. Compared in the flat's float32 precision.

    Returns
    -------
    bits : numpy.ndarray
        uint8 image of the flat's shape.
    clamped, low : int
        The pixels with bit 1, and with bit 16.
    """
    values = np.asarray(flat, dtype=np.float32)
    clamped = ~(values >= np.float32(flat_min))
    low = values < np.float32(flat_low)
    bits = clamped.astype(np.uint8) * np.uint8(CLAMPED_BIT) | low.astype(np.uint8) * np.uint8(LOW_FLAT_BIT)
    return bits, int(np.count_nonzero(clamped)), int(np.count_nonzero(low))


@njit(inline="always")
def _pixel(value, i, bias, dark, scale, inv_flat, steps):  # type: ignore[no-untyped-def]
    """One calibrated pixel in float64 (``inv_flat``: the reciprocal of the clamped flat)."""
    v = np.float64(value)
    if steps & 1:
        v -= np.float64(bias[i])
    if steps & 2:
        v -= np.float64(dark[i]) * scale
    if steps & 4:
        v *= np.float64(inv_flat[i])
    return v


@njit(cache=True, nogil=True)
def _calibrate_native(values, bias, dark, scale, inv_flat, steps, out):  # type: ignore[no-untyped-def]
    for i in range(values.size):
        out[i] = np.float32(_pixel(values[i], i, bias, dark, scale, inv_flat, steps))


def _make_be16_kernel(steps: int, signed: bool) -> Any:
    """The fused kernel for one set of steps and one pixel encoding (numba compiles each variant once).

    ``steps`` and ``signed`` are closure constants, so each variant's loop has no branch on them;
    numba's cache keys on their values.
    """

    @njit(cache=True, nogil=True)
    def kernel(raw, bias, dark, scale, inv_flat, bits, level, out, mask):  # type: ignore[no-untyped-def]
        total = np.uint64(0)
        for i in range(raw.size):
            r = np.uint32(raw[i])
            u = ((r >> 8) | (r << 8)) & 0xFFFF  # the big-endian word as stored
            value = np.float64(np.int16(u)) if signed else np.float64(u ^ 0x8000)
            b = np.float32(_pixel(value, i, bias, dark, scale, inv_flat, steps)).view(np.uint32)
            total += np.uint64(b)
            out[i] = ((b & 0xFF) << 24) | ((b & 0xFF00) << 8) | ((b >> 8) & 0xFF00) | (b >> 24)
            flags = bits[i] if steps & 4 else np.uint8(0)  # the flat's bits
            mask[i] = flags | (np.uint8(8) if value >= level else np.uint8(0))  # the raw value, saturated
        return total

    return kernel


_BE16_KERNELS: dict[tuple[int, bool], Any] = {}


def _be16_kernel(steps: int, signed: bool) -> Any:
    key = (steps, bool(signed))
    if key not in _BE16_KERNELS:
        _BE16_KERNELS[key] = _make_be16_kernel(*key)
    return _BE16_KERNELS[key]


@njit(cache=True, nogil=True)
def _be_words(image_u32, out_u32):  # type: ignore[no-untyped-def]
    total = np.uint64(0)
    for i in range(image_u32.size):
        b = image_u32[i]
        total += np.uint64(b)
        out_u32[i] = ((b & 0xFF) << 24) | ((b & 0xFF00) << 8) | ((b >> 8) & 0xFF00) | (b >> 24)
    return total


def _flat_arrays(
    size: int, bias: np.ndarray | None, dark: np.ndarray | None, inv_flat: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The masters as contiguous 1-D float32 arrays of ``size`` pixels, a placeholder when absent."""

    def one(image: np.ndarray | None) -> np.ndarray:
        if image is None:
            return np.zeros(1, dtype=np.float32)
        array: np.ndarray = np.ascontiguousarray(image, dtype=np.float32).reshape(-1)
        if array.size != size:
            raise ValueError(f"a master of {array.size} pixels cannot calibrate a frame of {size}")
        return array

    return one(bias), one(dark), one(inv_flat)


def calibrate_image(
    raw: np.ndarray,
    bias: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    dark_scale: float = 1.0,
    flat: np.ndarray | None = None,
    *,
    inv_flat: np.ndarray | None = None,
) -> np.ndarray:
    """``(raw − bias − dark × dark_scale) / flat`` as float32, in one pass.

    Parameters
    ----------
    raw : numpy.ndarray
        The light's pixels (any numeric dtype; BZERO/BSCALE already applied).
    bias, dark : numpy.ndarray or None
        Master bias and master dark (``None``: step not applied).
    dark_scale : float
        ``t_light / t_dark`` (1 for a dark of the light's exposure).
    flat : numpy.ndarray or None
        Master flat already clamped by :func:`clamp_flat` (``None``: not applied).
    inv_flat : numpy.ndarray or None
        Its :func:`flat_reciprocal` instead, when already computed (a worker keeps it per flat).

    Returns
    -------
    numpy.ndarray
        float32 image of ``raw``'s shape.

    Raises
    ------
    ValueError
        When a master's size differs from the frame's.
    """
    values = np.ascontiguousarray(raw).reshape(-1)
    if inv_flat is None and flat is not None:
        inv_flat = flat_reciprocal(flat)
    b, d, f = _flat_arrays(values.size, bias, dark, inv_flat)
    out = np.empty(values.size, dtype=np.float32)
    steps = step_bits(bias is not None, dark is not None, inv_flat is not None)
    _calibrate_native(values, b, d, float(dark_scale), f, steps, out)
    return out.reshape(np.shape(raw))


def calibrate_be16_words(
    raw_words: np.ndarray,
    signed: bool,
    bias: np.ndarray | None,
    dark: np.ndarray | None,
    dark_scale: float,
    inv_flat: np.ndarray | None,
    out: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    bits: np.ndarray | None = None,
    saturation: float | None = None,
) -> int:
    """Calibrate 16-bit FITS pixels straight into the big-endian float32 words of the output data unit,
    and their MASK.

    Parameters
    ----------
    raw_words : numpy.ndarray
        The data unit's bytes viewed as native ``uint16`` (each element a big-endian 16-bit word).
    signed : bool
        ``True`` for BZERO 0 (signed pixels), ``False`` for BZERO 32768 (unsigned, the usual camera case).
    bias, dark, dark_scale
        As :func:`calibrate_image`.
    inv_flat : numpy.ndarray or None
        :func:`flat_reciprocal` of the clamped flat.
    out : numpy.ndarray
        ``uint32`` array of ``raw_words.size`` elements: receives the output words, ready to write.
    mask : numpy.ndarray, optional
        ``uint8`` array of ``raw_words.size`` elements: receives the MASK, ``bits`` ORed with bit 8 where
        the raw value (after BZERO) is at or above ``saturation`` (default: a scratch array, discarded).
    bits : numpy.ndarray, optional
        The flat's MASK bits (:func:`flat_bits`), used with ``inv_flat``.
    saturation : float, optional
        The saturation level (``None``: no sample is saturated).

    Returns
    -------
    int
        The sum of the 32-bit words (unfolded), for the FITS DATASUM (see
        :func:`ccdcal.files.calibrated.fold_checksum`).
    """
    b, d, f = _flat_arrays(raw_words.size, bias, dark, inv_flat)
    steps = step_bits(bias is not None, dark is not None, inv_flat is not None)
    if mask is None:
        mask = np.empty(raw_words.size, dtype=np.uint8)
    flags = np.zeros(1, dtype=np.uint8)
    if inv_flat is not None:
        flags = np.ascontiguousarray(bits if bits is not None else np.zeros(raw_words.size), np.uint8)
        flags = flags.reshape(-1)
        if flags.size != raw_words.size:
            raise ValueError(f"a flat mask of {flags.size} pixels cannot flag a frame of {raw_words.size}")
    level = np.inf if saturation is None else float(saturation)
    kernel = _be16_kernel(steps, signed)
    return int(kernel(raw_words, b, d, float(dark_scale), f, flags, level, out, mask))


def flagged(
    raw: np.ndarray, bits: np.ndarray | None, saturation: float | None, out: np.ndarray | None = None
) -> np.ndarray:
    """The MASK of a light: the flat's ``bits`` (none: zero) ORed with bit 8 where the raw value is at or
    above ``saturation``; the generic path's counterpart of :func:`calibrate_be16_words`'s mask (uint8,
    of ``raw``'s shape; written into ``out`` when given)."""
    shape = np.shape(raw)
    mask = np.zeros(shape, dtype=np.uint8) if out is None else out.reshape(shape)
    if bits is None:
        mask[...] = 0
    else:
        mask[...] = np.asarray(bits, dtype=np.uint8).reshape(shape)
    if saturation is not None:
        mask |= (np.asarray(raw) >= saturation).astype(np.uint8) * np.uint8(SATURATED_BIT)
    return mask


@njit(cache=True, nogil=True)
def _histogram(mask):  # type: ignore[no-untyped-def]
    counts = np.zeros(256, dtype=np.int64)
    for i in range(mask.size):
        value = mask[i]
        if value:  # most pixels are flagged by no bit: nothing to do for them
            counts[value] += 1
    return counts


def mask_bit_counts(mask: np.ndarray) -> tuple[int, dict[int, int]]:
    """How many pixels of a MASK (uint8) have any bit set, and how many have each bit (by its value), in one
    pass without a copy (``numpy.bincount`` first widens the MASK to 8 bytes a pixel: it cost three times the
    calibration pass)."""
    counts = _histogram(np.ascontiguousarray(mask, dtype=np.uint8).reshape(-1))
    values = np.arange(256)
    return int(counts.sum()), {1 << b: int(counts[(values >> b) & 1 == 1].sum()) for b in range(8)}


def be_words(image: np.ndarray, out: np.ndarray) -> int:
    """The big-endian words of a float32 image in ``out`` (uint32), and their unfolded sum."""
    native = np.ascontiguousarray(image, dtype=np.float32).reshape(-1)
    return int(_be_words(native.view(np.uint32), out))


def warm_up(
    step_sets: Iterable[tuple[bool, bool, bool]] = ((True, True, True),),
    signed: Iterable[bool] = (False, True),
    generic: bool = True,
) -> None:
    """Compile (or load from numba's cache) the kernels for these (bias, dark, flat) step sets.

    Called before worker processes are forked, so that they share the compiled code, or in a worker
    process as it starts.

    Parameters
    ----------
    step_sets : iterable of (bool, bool, bool)
        The steps applied, each a variant of the fused kernel.
    signed : iterable of bool
        The pixel encodings of the fused kernel (``False``: BZERO 32768, the usual camera's).
    generic : bool
        Load :func:`calibrate_image` and :func:`be_words` too (the path of other layouts).
    """
    raw = np.zeros(4, dtype=np.uint16)
    plane = np.ones(4, dtype=np.float32)
    inverse = np.ones(4, dtype=np.float32)
    words = np.empty(4, dtype=np.uint32)
    mask = np.empty(4, dtype=np.uint8)
    for bias, dark, flat in set(step_sets):
        masters = (plane if bias else None, plane if dark else None, 1.0, inverse if flat else None)
        for encoding in signed:
            calibrate_be16_words(raw, encoding, *masters, words, mask=mask, bits=mask, saturation=1.0)
    for values in (raw, raw.astype(np.float32), raw.astype(np.float64)) if generic else ():
        be_words(calibrate_image(values, plane, plane, 1.0, plane), words)  # float64: overscan-corrected
    mask_bit_counts(mask)
