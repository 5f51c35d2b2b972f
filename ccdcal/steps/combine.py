"""The combine kernel: a sigma-clipped median of a stack of frames, exactly as astropy defines it.

Definition (DESIGN.md, "Science"): the combined pixel equals ::

    np.ma.median(astropy.stats.sigma_clip(stack, sigma=3, maxiters=5, cenfunc="median",
                                          stdfunc="mad_std", axis=0), axis=0)

on the same float data. With string ``cenfunc``/``stdfunc`` and an ``axis``, astropy runs its compiled
path (``astropy/stats/src/compute_bounds.c`` called by ``SigmaClip._sigmaclip_fast``); that path, not
the Python one, is the definition. Per pixel it does:

1. Non-finite samples (NaN, ±inf) are masked before anything else and never take part.
2. Iterate on the set of kept samples: ``median`` (mean of the two middle values for an even count),
   ``std = median(|x - median|) * 1.482602218505602`` (``mad_std``; ``std`` is the population standard
   deviation about the mean), bounds ``median - sigma_lower*std`` and ``median + sigma_upper*std``;
   keep the samples with ``lower <= x <= upper``. Stop when that keeps every sample (converged) or none,
   or after ``maxiters`` passes that removed something (a ``maxiters`` of 5 computes at most 5 pairs of
   bounds). The bounds of the last pass computed are the result, even when that pass removed samples.
3. Those final bounds are applied to *all* the original finite samples (a sample rejected by an earlier,
   narrower pass comes back when the final bounds include it): a sample is masked when
   ``x < lower or x > upper``.
4. The combined value is the median of the kept samples.

Consequences that this module reproduces: a constant pixel has ``mad_std == 0``, so its bounds are the
constant itself and every sample equal to it is kept (a pixel whose majority is one value keeps only that
value); an all-NaN pixel has no bounds (astropy returns NaN bounds) and its median is *masked* (the masked
array's hidden data is 0.0): ccdcal writes NaN there. The rejected count of a pixel is the number of
samples the definition masks, non-finite inputs included (``n`` minus the samples the median is taken
of). The numbers are the C code's: medians ``0.5 * (upper middle + lower middle)``, deviations
``fabs(x - median)``, the factor ``1.482602218505602``, ``std`` summed in the samples' original order,
bounds ``median -/+ sigma * std``, all in float64 without fused multiply-adds, so the same samples are
clipped. Integer stacks are clipped as float64 (astropy's ``astype(float)``), float32 ones as their exact
float64 values. The combined value is computed in float64 and rounded to float32; ``np.ma.median`` keeps
the input's float type, so a float32 stack's definition averages the two middle values in float32 (equal
to within one float32 step) and a float16 stack's in float16 (ccdcal then equals the definition on the
same numbers widened to float32).

The kernel (numba, parallel over row tiles) converts each sample to float64 on the fly, so a stack is
never copied to float64. For each tile of up to 256 pixels of a row the stack values are loaded
(non-finite → +inf, counted apart) and sorted along the stack axis by a Batcher odd-even merge network
vectorised over the tile's pixels. The first pass of every pixel without non-finite samples is also
vectorised: median by index, deviations (which run down then up a sorted column) sorted by a bitonic
merger, bounds; a pixel whose first bounds keep all its samples is finished there, as astropy's loop is.
The other pixels (typically a fifth) iterate one at a time on their sorted column, where every kept set
is a contiguous index range: medians are index arithmetic and the median absolute deviation is the k-th
smallest element of two sorted runs (binary search).

``combine_files`` reads FITS files in row blocks (each file read once, peak memory bounded by
``mem_limit``), decoding the big-endian data unit and applying BSCALE/BZERO/BLANK inside the kernel with
astropy's arithmetic, and optionally computes ``(frame - offset) * scale`` per frame before clipping.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

from ccdcal.errors import FitsFormatError, UsageError

__all__ = [
    "ClipParams",
    "CombineResult",
    "combine_files",
    "sigma_clipped_median",
]

#: astropy's ``mad_std`` factor, 1 / Φ⁻¹(3/4), written as astropy's C code writes it.
MAD_TO_STD = 1.482602218505602

#: Largest stack: the rejected-count image is uint16.
MAX_FRAMES = 65535

# How the kernel decodes a stored sample (``kind`` argument).
_NATIVE = 0  # a native-endian number, used as it is
_BE_INT = 1  # big-endian FITS integer bits in an unsigned buffer (BITPIX 8, 16, 32, 64)
_BE_FLOAT = 2  # big-endian IEEE float bits in an unsigned buffer (BITPIX -32, -64)

# Pixels per kernel tile (the sort is vectorised across them): about 32 KiB of float64 samples,
# 64 to 256 pixels (measured best on a 2-core Xeon for 5 to 150 frames).
_TILE_BYTES = 32768
_TILE_MIN_PIXELS = 64
_TILE_MAX_PIXELS = 256

# Block buffer aimed at by combine_files (within mem_limit): big enough for long reads and many
# parallel tiles, small enough to keep the peak memory low (4 to 64 MiB measured equally fast), and
# at least a few rows so that wide stacks are not read in tiny pieces.
_TARGET_BLOCK_BYTES = 4 * 2**20
_MIN_BLOCK_ROWS = 16


# --------------------------------------------------------------------------------------------------
# Parameters and results


@dataclass(frozen=True)
class ClipParams:
    """Sigma-clipping parameters of the combine.

    Parameters
    ----------
    sigma_lower, sigma_upper : float
        Clip samples below ``median - sigma_lower * std`` and above ``median + sigma_upper * std``.
        Finite and positive.
    maxiters : int
        Maximum number of clipping passes (at least 1), counted as astropy counts them: a pass that
        removes nothing ends the iterations (converged) and does not count.
    cenfunc : str
        Centre function; only ``"median"``.
    stdfunc : str
        Dispersion: ``"mad_std"`` (``1.482602218505602 × median absolute deviation``) or ``"std"``
        (population standard deviation about the mean, as astropy's C code computes it).

    Raises
    ------
    ccdcal.errors.UsageError
        When a value is outside the above.
    """

    sigma_lower: float = 3.0
    sigma_upper: float = 3.0
    maxiters: int = 5
    cenfunc: str = "median"
    stdfunc: str = "mad_std"

    def __post_init__(self) -> None:
        for name in ("sigma_lower", "sigma_upper"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise UsageError(f"{name} must be a finite number above 0, not {value!r}")
        iters = self.maxiters
        if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 1:
            raise UsageError(f"maxiters must be an integer of at least 1, not {iters!r}")
        if iters > 2**31 - 1:
            raise UsageError(f"maxiters must be below 2**31, not {iters!r}")
        if self.cenfunc != "median":
            raise UsageError(f"cenfunc must be 'median' (the only centre supported), not {self.cenfunc!r}")
        if self.stdfunc not in ("mad_std", "std"):
            raise UsageError(f"stdfunc must be 'mad_std' or 'std', not {self.stdfunc!r}")

    def as_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON-ready values, for the catalog.

        Returns
        -------
        dict
            ``method`` (``"sigma_clipped_median"``), the five fields, and ``definition`` naming the
            reference implementation the result matches.
        """
        return {
            "method": "sigma_clipped_median",
            "sigma_lower": float(self.sigma_lower),
            "sigma_upper": float(self.sigma_upper),
            "maxiters": int(self.maxiters),
            "cenfunc": self.cenfunc,
            "stdfunc": self.stdfunc,
            "definition": "astropy.stats.sigma_clip compiled path (last bounds applied to all samples)"
            " then numpy.ma.median",
        }


@dataclass(frozen=True)
class CombineResult:
    """What ``combine_files`` returns.

    Attributes
    ----------
    image : numpy.ndarray
        The combined image, float32 (NaN where no input sample was finite).
    rejected : numpy.ndarray
        Samples masked per pixel, uint16: clipped plus non-finite (the definition's mask count).
    rejected_fraction : float
        ``rejected.sum() / (n_inputs * image.size)``.
    n_inputs : int
        Number of frames combined.
    n_nonfinite : int
        Number of non-finite input samples (after offset and scale), all of them counted in ``rejected``.
    block_rows : int
        Image rows read per block.
    n_blocks : int
        Number of blocks the image was read in.
    params : ClipParams
        The clipping parameters used.
    """

    image: np.ndarray
    rejected: np.ndarray
    rejected_fraction: float
    n_inputs: int
    n_nonfinite: int = 0
    block_rows: int = 0
    n_blocks: int = 0
    params: ClipParams = field(default_factory=ClipParams)


# --------------------------------------------------------------------------------------------------
# The kernel


@njit(cache=True, nogil=True)
def _bswap(raw: Any, nbytes: int) -> Any:
    """Reverse the bytes of an unsigned integer of ``nbytes`` bytes (returned as uint64)."""
    u = np.uint64(raw)
    mask = np.uint64(0xFF)
    eight = np.uint64(8)
    out = np.uint64(0)
    for b in range(nbytes):
        out = (out << eight) | ((u >> np.uint64(8 * b)) & mask)
    return out


@njit(cache=True, nogil=True)
def _bits_to_f32(bits: Any) -> float:
    return np.float64(np.uint32(bits).view(np.float32))


@njit(cache=True, nogil=True)
def _bits_to_f64(bits: Any) -> float:
    return np.uint64(bits).view(np.float64)


@njit(cache=True, nogil=True)
def _decode_row(src: np.ndarray, kind: int, dst: np.ndarray) -> None:
    """``dst[:]`` = the samples ``src`` as float64.

    Native numbers are converted; big-endian FITS bits (``kind`` 1: integers, BITPIX 8 unsigned,
    16/32/64 signed; ``kind`` 2: IEEE floats) are byte-swapped and decoded. One loop per case, so that
    each vectorises.
    """
    nbytes = src.itemsize
    w = dst.shape[0]
    if kind == _NATIVE or nbytes == 1:
        for x in range(w):
            dst[x] = np.float64(src[x])
    elif nbytes == 2:
        for x in range(w):
            u = np.int64(src[x]) & 0xFFFF
            v = ((u & 0xFF) << 8) | (u >> 8)
            dst[x] = np.float64(v - ((v & 0x8000) << 1))
    elif nbytes == 4:
        if kind == _BE_FLOAT:
            for x in range(w):
                u = np.int64(src[x]) & 0xFFFFFFFF
                v = ((u & 0xFF) << 24) | ((u & 0xFF00) << 8) | ((u >> 8) & 0xFF00) | (u >> 24)
                dst[x] = _bits_to_f32(v)
        else:
            for x in range(w):
                u = np.int64(src[x]) & 0xFFFFFFFF
                v = ((u & 0xFF) << 24) | ((u & 0xFF00) << 8) | ((u >> 8) & 0xFF00) | (u >> 24)
                dst[x] = np.float64(v - ((v & 0x80000000) << 1))
    elif kind == _BE_FLOAT:
        for x in range(w):
            dst[x] = _bits_to_f64(_bswap(src[x], 8))
    else:
        for x in range(w):
            dst[x] = np.float64(np.int64(_bswap(src[x], 8)))


@njit(inline="always")
def _median_sorted(s: np.ndarray, lo: int, hi: int) -> float:
    """Median of the sorted ``s[lo:hi]`` (``hi > lo``), as astropy's ``wirth_median``."""
    c = hi - lo
    h = lo + c // 2
    if c % 2 == 1:
        return s[h]
    return 0.5 * (s[h] + s[h - 1])


@njit(inline="always")
def _mad_sorted(s: np.ndarray, lo: int, hi: int, med: float) -> float:
    """Median of ``|s[lo:hi] - med|`` for the sorted ``s[lo:hi]`` whose median is ``med``.

    The deviations are two ascending runs, ``A[p] = |s[i0 - p] - med|`` leftwards and
    ``B[q] = |s[j0 + q] - med|`` rightwards of the middle; the ``t = c // 2 + 1`` smallest deviations are
    ``A[:p]`` and ``B[:t - p]`` for the smallest ``p`` with ``A[p] >= B[t - p - 1]`` (binary search).
    The values are computed as ``fabs(x - median)``, as astropy's C code does, so the result is the same
    double.
    """
    c = hi - lo
    i0 = lo + (c - 1) // 2
    j0 = i0 + 1
    nl = i0 - lo + 1
    nr = hi - j0
    t = c // 2 + 1
    plo = max(0, t - nr)
    phi = min(nl, t)
    while plo < phi:
        p = (plo + phi) // 2
        if abs(s[i0 - p] - med) >= abs(s[j0 + t - p - 1] - med):
            phi = p
        else:
            plo = p + 1
    p = plo
    q = t - p
    a1 = abs(s[i0 - p + 1] - med) if p >= 1 else -1.0
    b1 = abs(s[j0 + q - 1] - med) if q >= 1 else -1.0
    if c % 2 == 1:
        return max(a1, b1)
    a2 = abs(s[i0 - p + 2] - med) if p >= 2 else -1.0
    b2 = abs(s[j0 + q - 2] - med) if q >= 2 else -1.0
    if a1 >= b1:
        return 0.5 * (a1 + max(a2, b1))
    return 0.5 * (b1 + max(a1, b2))


@njit(parallel=True, cache=True, nogil=True, fastmath=False)
def _clip_kernel(
    data: np.ndarray,
    kind: int,
    bscale: np.ndarray,
    bzero: np.ndarray,
    in_f32: np.ndarray,
    blank: np.ndarray,
    use_blank: np.ndarray,
    off_img: np.ndarray,
    off_idx: np.ndarray,
    off_val: np.ndarray,
    scale: np.ndarray,
    transform: bool,
    pairs: np.ndarray,
    merge_pairs: np.ndarray,
    tile_w: int,
    sigma_lower: float,
    sigma_upper: float,
    maxiters: int,
    use_mad: bool,
    out: np.ndarray,
    rejected: np.ndarray,
    nonfinite: np.ndarray,
) -> None:
    """Sigma-clipped median of ``data`` (n, rows, nx) into ``out``/``rejected``/``nonfinite`` (rows, nx).

    Sample value: ``decode(raw)``; if ``use_blank[k]`` and it equals ``blank[k]``: NaN; then
    ``raw * bscale[k] + bzero[k]`` in float32 when ``in_f32[k]`` else float64 (astropy's scaling);
    then, when ``transform``, ``(value - offset) * scale[k]`` in float64, the offset being
    ``off_img[y, off_idx[k], x]`` or ``off_val[k]`` when ``off_idx[k] < 0``.
    """
    n, ny, nx = data.shape
    ntiles = (nx + tile_w - 1) // tile_w
    npairs = pairs.shape[0]
    nmerge = merge_pairs.shape[0]
    h = n // 2
    odd = n % 2 == 1
    for job in prange(ny * ntiles):
        y = job // ntiles
        x0 = (job % ntiles) * tile_w
        w = min(tile_w, nx - x0)
        out_row = out[y, x0 : x0 + w]
        rej_row = rejected[y, x0 : x0 + w]
        bad_row = nonfinite[y, x0 : x0 + w]
        tile = np.empty((n, w), np.float64)
        count = np.zeros(w, np.int64)
        # 1. Load: decode, scale, transform; non-finite -> +inf (sorts last), counted apart.
        for k in range(n):
            row = tile[k]
            _decode_row(data[k, y, x0 : x0 + w], kind, row)
            bs = bscale[k]
            bz = bzero[k]
            if not (use_blank[k] or in_f32[k] or transform):
                for x in range(w):  # the common case, kept simple so that it vectorises
                    v = row[x] * bs + bz
                    fin = np.isfinite(v)
                    row[x] = v if fin else np.inf
                    count[x] += fin
                continue
            f32 = in_f32[k]
            ub = use_blank[k]
            bl = blank[k]
            oi = off_idx[k]
            ov = off_val[k]
            sc = scale[k]
            off_row = off_img[y, oi, x0 : x0 + w] if oi >= 0 else off_img[0, 0, :1]
            for x in range(w):
                v = row[x]
                if ub and v == bl:
                    v = np.nan
                # astropy scales in float32 for BITPIX -32, 8 and 16, else in float64.
                v = np.float64(np.float32(v) * np.float32(bs) + np.float32(bz)) if f32 else v * bs + bz
                if transform:
                    off = np.float64(off_row[x]) if oi >= 0 else ov
                    v = (v - off) * sc
                fin = np.isfinite(v)
                row[x] = v if fin else np.inf
                count[x] += fin
        # Original order of the finite samples, for 'std' (sums in astropy's order).
        orig = np.empty((n if not use_mad else 1, w), np.float64)
        if not use_mad:
            orig[:, :] = tile
        # 2. Sort every pixel's column: compare-exchange network, vectorised over the tile's pixels.
        for p in range(npairs):
            ti = tile[pairs[p, 0]]
            tj = tile[pairs[p, 1]]
            for x in range(w):
                a = ti[x]
                b = tj[x]
                ti[x] = a if a < b else b
                tj[x] = b if a < b else a
        # 3a. First pass of every pixel with n finite samples, vectorised over the tile: median,
        # deviations (V-shaped down a sorted column) sorted by a bitonic merger, MAD, bounds. A
        # pixel whose first bounds keep all its samples is done (astropy stops there too).
        done = np.zeros(w, np.bool_)
        if use_mad:
            med = np.empty(w, np.float64)
            dev = np.empty((n, w), np.float64)
            th = tile[h]
            tl = tile[h - 1] if h >= 1 else tile[h]
            for x in range(w):
                med[x] = th[x] if odd else 0.5 * (th[x] + tl[x])
            for k in range(n):
                tk = tile[k]
                dk = dev[k]
                for x in range(w):
                    dk[x] = abs(tk[x] - med[x])
            for p in range(nmerge):
                di = dev[merge_pairs[p, 0]]
                dj = dev[merge_pairs[p, 1]]
                for x in range(w):
                    a = di[x]
                    b = dj[x]
                    di[x] = a if a < b else b
                    dj[x] = b if a < b else a
            dh = dev[h]
            dl = dev[h - 1] if h >= 1 else dev[h]
            first = tile[0]
            last = tile[n - 1]
            for x in range(w):
                mad = dh[x] if odd else 0.5 * (dh[x] + dl[x])
                std = mad * MAD_TO_STD
                lower = med[x] - sigma_lower * std
                upper = med[x] + sigma_upper * std
                done[x] = (count[x] == n) & (first[x] >= lower) & (last[x] <= upper)
            for x in range(w):  # right for the pixels done; the others are overwritten below
                out_row[x] = med[x]
                rej_row[x] = 0
                bad_row[x] = 0
        # 3b. Every other pixel, one at a time.
        s = np.empty(n, np.float64)
        for x in range(w):
            if done[x]:
                continue
            m = count[x]
            bad_row[x] = n - m
            if m == 0:
                out_row[x] = np.nan
                rej_row[x] = n
                continue
            for k in range(m):
                s[k] = tile[k, x]
            # Iterate on the kept range [lo, hi) of the sorted samples.
            lo = 0
            hi = m
            it = 0
            lower = 0.0
            upper = 0.0
            while True:
                c = hi - lo
                med_x = _median_sorted(s, lo, hi)
                if use_mad:
                    std = _mad_sorted(s, lo, hi, med_x) * MAD_TO_STD
                else:
                    vmin = s[lo]
                    vmax = s[hi - 1]
                    total = 0.0
                    for k in range(n):
                        v = orig[k, x]
                        if v >= vmin and v <= vmax:
                            total += v
                    mean = total / c
                    total = 0.0
                    for k in range(n):
                        v = orig[k, x]
                        if v >= vmin and v <= vmax:
                            total += (v - mean) * (v - mean)
                    std = math.sqrt(total / c)
                lower = med_x - sigma_lower * std
                upper = med_x + sigma_upper * std
                nlo = lo
                while nlo < hi and not (s[nlo] >= lower):
                    nlo += 1
                nhi = hi
                while nhi > nlo and not (s[nhi - 1] <= upper):
                    nhi -= 1
                kept = nhi - nlo
                if kept == c or kept == 0:
                    break
                lo = nlo
                hi = nhi
                it += 1
                if it >= maxiters:
                    break
            # The final bounds mask the original samples; median of the rest.
            a = 0
            while a < m and s[a] < lower:
                a += 1
            b = m
            while b > a and s[b - 1] > upper:
                b -= 1
            out_row[x] = _median_sorted(s, a, b) if b > a else np.nan
            rej_row[x] = n - (b - a)


@functools.lru_cache(maxsize=64)
def _network(n: int) -> np.ndarray:
    """Batcher odd-even merge sort comparators for ``n`` keys (power-of-two network, pruned to n).

    Keys beyond ``n`` would be +inf padding; a comparator touching one never moves anything, so it is
    dropped. Returns an (m, 2) int64 array of index pairs ``(i, j)``, ``i < j``.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@functools.lru_cache(maxsize=64)
def _merger(n: int) -> np.ndarray:
    """Bitonic merger comparators sorting ``n`` keys that are non-increasing then non-decreasing.

    The power-of-two merger (half-cleaners of strides size/2, ..., 1) with +inf padding beyond ``n``;
    comparators reaching the padding never move anything and are dropped. (m, 2) int64 pairs.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    stride = size // 2
    while stride >= 1:
        for i in range(size):
            if i & stride == 0 and i + stride < n:
                pairs.append((i, i + stride))
        stride //= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _tile_width(n: int) -> int:
    width = _TILE_BYTES // (8 * max(n, 1))
    return int(max(_TILE_MIN_PIXELS, min(_TILE_MAX_PIXELS, width - width % 8)))


@dataclass
class _Decoding:
    """Per-frame decoding passed to the kernel (identity for native arrays)."""

    kind: int
    bscale: np.ndarray
    bzero: np.ndarray
    in_f32: np.ndarray
    blank: np.ndarray
    use_blank: np.ndarray

    @classmethod
    def identity(cls, n: int) -> _Decoding:
        return cls(
            _NATIVE,
            np.ones(n),
            np.zeros(n),
            np.zeros(n, np.bool_),
            np.zeros(n),
            np.zeros(n, np.bool_),
        )


_NO_OFFSET = np.zeros((1, 1, 1))


@dataclass
class _Transform:
    """Per-frame ``(value - offset) * scale``: offsets as images (ny, k, nx) or per-frame scalars."""

    active: bool
    off_img: np.ndarray
    off_idx: np.ndarray
    off_val: np.ndarray
    scale: np.ndarray
    copied_bytes: int = 0  # size of the offset images copied here (counted against mem_limit)

    @classmethod
    def identity(cls, n: int) -> _Transform:
        return cls(False, _NO_OFFSET, np.full(n, -1, np.int64), np.zeros(n), np.ones(n))


def _run_kernel(
    block: np.ndarray,
    decoding: _Decoding,
    transform: _Transform,
    rows: slice,
    params: ClipParams,
    out: np.ndarray,
    rejected: np.ndarray,
    nonfinite: np.ndarray,
) -> None:
    n = block.shape[0]
    off_img = transform.off_img if transform.off_img is _NO_OFFSET else transform.off_img[rows]
    _clip_kernel(
        block,
        decoding.kind,
        decoding.bscale,
        decoding.bzero,
        decoding.in_f32,
        decoding.blank,
        decoding.use_blank,
        off_img,
        transform.off_idx,
        transform.off_val,
        transform.scale,
        transform.active,
        _network(n),
        _merger(n),
        _tile_width(n),
        float(params.sigma_lower),
        float(params.sigma_upper),
        int(params.maxiters),
        params.stdfunc == "mad_std",
        out,
        rejected,
        nonfinite,
    )


# --------------------------------------------------------------------------------------------------
# In memory


def _native_stack(stack: Any) -> np.ndarray:
    """The stack as a C-contiguous native-endian real array the kernel can read (copied only if needed)."""
    arr = np.asarray(stack)
    if arr.ndim != 3:
        raise UsageError(f"a stack must have 3 dimensions (frames, rows, columns), not shape {arr.shape}")
    if arr.shape[0] < 1:
        raise UsageError("a stack needs at least one frame")
    if arr.shape[0] > MAX_FRAMES:
        raise UsageError(f"at most {MAX_FRAMES} frames can be combined, not {arr.shape[0]}")
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise UsageError(f"a stack must hold integers or real floats, not {arr.dtype}")
    if kind == "f" and arr.dtype.itemsize not in (4, 8):
        # float16 widens exactly; long double rounds to float64 as astropy's astype(float) does.
        arr = arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def sigma_clipped_median(
    stack: np.ndarray, params: ClipParams = ClipParams()
) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped median along the first axis of an (n, ny, nx) stack.

    Equal to ``np.ma.median(astropy.stats.sigma_clip(stack, sigma=..., maxiters=...,
    cenfunc='median', stdfunc='mad_std', axis=0), axis=0)`` (see the module docstring for the rules),
    computed in float64 and returned as float32.

    Parameters
    ----------
    stack : numpy.ndarray
        Frames along axis 0, any integer or real float dtype. Read as it is (each sample converted to
        float64 inside the kernel); copied only when not C-contiguous, not native-endian, float16 or
        long double.
    params : ClipParams
        Clipping parameters.

    Returns
    -------
    image : numpy.ndarray
        (ny, nx) float32 combined image; NaN where a pixel has no finite sample.
    rejected : numpy.ndarray
        (ny, nx) uint16 number of samples masked per pixel, non-finite ones included (``n`` minus the
        number of samples the median was taken of).

    Raises
    ------
    ccdcal.errors.UsageError
        If the stack is not 3-D numeric with 1 to 65535 frames.
    """
    arr = _native_stack(stack)
    n, ny, nx = arr.shape
    image = np.empty((ny, nx), np.float32)
    rejected = np.empty((ny, nx), np.uint16)
    nonfinite = np.empty((ny, nx), np.uint16)
    if image.size:
        _run_kernel(
            arr,
            _Decoding.identity(n),
            _Transform.identity(n),
            slice(None),
            params,
            image,
            rejected,
            nonfinite,
        )
    return image, rejected


# --------------------------------------------------------------------------------------------------
# From files


@dataclass
class _Frame:
    """One input image: where its data are and how astropy would turn them into numbers."""

    path: Path
    shape: tuple[int, int]
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None  # BLANK as astropy applies it (None: not applied)
    in_f32: bool  # astropy's scaled result is float32
    data_offset: int | None  # byte offset of an uncompressed, unscaled-or-decodable data unit, else None
    hdul: Any = None  # astropy HDUList for frames read through astropy
    fd: int | None = None


def _is_plain_fits(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(9) == b"SIMPLE  ="


def _describe(path: Path, hdu: int) -> _Frame:
    """Open one file's image HDU header (no data read) and decide how to read it."""
    from astropy.io import fits

    try:
        plain = _is_plain_fits(path)
        with warnings.catch_warnings():
            # A short file is reported below with the bytes missing, as a FitsFormatError.
            warnings.filterwarnings("ignore", message="File may have been truncated")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
    except FileNotFoundError as exc:
        raise FitsFormatError("file not found", str(path)) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise FitsFormatError(f"not a readable FITS file ({exc})", str(path)) from exc
    try:
        try:
            unit = hdul[hdu]
        except (IndexError, KeyError) as exc:
            raise FitsFormatError(f"has no HDU {hdu}", str(path)) from exc
        if not isinstance(unit, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            raise FitsFormatError(f"HDU {hdu} is not an image", str(path))
        shape = tuple(int(v) for v in unit.shape)
        if len(shape) != 2:
            raise FitsFormatError(f"HDU {hdu} is not a 2-D image (shape {shape})", str(path))
        shape2 = (shape[0], shape[1])
        header = unit.header
        bitpix = int(header["BITPIX"])
        bscale = header.get("BSCALE", 1)
        bzero = header.get("BZERO", 0)
        blank_card = header.get("BLANK")
        through_astropy = _Frame(path, shape2, bitpix, 1.0, 0.0, None, False, None, hdul=hdul)
        if isinstance(unit, fits.CompImageHDU) or not plain:
            return through_astropy
        if not (isinstance(bscale, numbers.Real) and isinstance(bzero, numbers.Real)):
            return through_astropy
        # astropy's reading rules (io/fits/hdu/image.py, _dtype_for_bitpix/_scale_data):
        # pseudo-unsigned integers are exact; other scaled or BLANK'ed integers become float32
        # (BITPIX 8, 16) or float64 (32, 64), scaled in that type; BLANK (when truthy) -> NaN.
        pseudo = bscale == 1 and (
            (bitpix == 8 and bzero == -128) or (bitpix in (16, 32, 64) and bzero == 1 << (bitpix - 1))
        )
        scaled = not (bzero == 0 and bscale == 1)
        valid_blank = (
            isinstance(blank_card, (int, np.integer)) and not isinstance(blank_card, bool) and bitpix > 0
        )
        if bitpix == 64 and (scaled or valid_blank):
            return through_astropy  # uint64 and int64 beyond 2**53 would round differently
        if valid_blank and bitpix == 8 and pseudo:
            return through_astropy  # astropy's int8 conversion with BLANK: leave it to astropy
        blank = int(blank_card) if valid_blank and blank_card and not pseudo else None
        in_f32 = bitpix == -32 or (bitpix in (8, 16) and not pseudo and (scaled or valid_blank))
        info = hdul.fileinfo(hdu)
        offset = int(info["datLoc"])
        nbytes = shape2[0] * shape2[1] * abs(bitpix) // 8
        size = os.path.getsize(path)
        if offset + nbytes > size:
            raise FitsFormatError(
                f"truncated: the data unit needs {offset + nbytes} bytes, the file has {size}",
                str(path),
            )
        hdul.close()
        return _Frame(path, shape2, bitpix, float(bscale), float(bzero), blank, in_f32, offset)
    except BaseException:
        hdul.close()
        raise


_UNSIGNED = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _read_exact(fd: int, view: memoryview, offset: int, path: Path) -> None:
    done = 0
    total = len(view)
    while done < total:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise FitsFormatError("truncated data unit", str(path))
        done += got


def _check_arrays(
    n: int,
    shape: tuple[int, int],
    scale: Sequence[float] | None,
    offset: Sequence[np.ndarray | float] | None,
) -> _Transform:
    """Validate ``scale``/``offset`` and build the kernel's per-frame transform."""
    if scale is None and offset is None:
        return _Transform.identity(n)
    scales = np.ones(n)
    if scale is not None:
        values = list(scale)
        if len(values) != n:
            raise UsageError(f"scale has {len(values)} values for {n} files")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise UsageError(f"scale[{i}] must be a finite number, not {v!r}")
            scales[i] = float(v)
    off_idx = np.full(n, -1, np.int64)
    off_val = np.zeros(n)
    images: list[np.ndarray] = []
    if offset is not None:
        items = list(offset)
        if len(items) != n:
            raise UsageError(f"offset has {len(items)} values for {n} files")
        seen: dict[int, int] = {}
        for i, item in enumerate(items):
            if isinstance(item, np.ndarray) and item.ndim > 0:
                if item.shape != shape:
                    raise UsageError(f"offset[{i}] has shape {item.shape}; the images are {shape}")
                if item.dtype.kind not in "iuf":
                    raise UsageError(f"offset[{i}] must be a real image, not {item.dtype}")
                if id(item) not in seen:
                    seen[id(item)] = len(images)
                    images.append(item)
                off_idx[i] = seen[id(item)]
            else:
                if isinstance(item, bool) or not isinstance(item, numbers.Real | np.ndarray):
                    raise UsageError(f"offset[{i}] must be an image or a number, not {item!r}")
                value = float(item)
                if not math.isfinite(value):
                    raise UsageError(f"offset[{i}] must be finite, not {value!r}")
                off_val[i] = value
    copied = 0
    if not images:
        off_img = _NO_OFFSET
    else:
        dtype = np.float32 if all(im.dtype == np.float32 for im in images) else np.float64
        if len(images) == 1 and images[0].dtype == dtype and images[0].flags.c_contiguous:
            off_img = images[0].reshape(shape[0], 1, shape[1])  # a view: no copy
        else:
            off_img = np.empty((shape[0], len(images), shape[1]), dtype)
            for j, im in enumerate(images):
                off_img[:, j, :] = im
            copied = off_img.nbytes
    return _Transform(True, off_img, off_idx, off_val, scales, copied)


def combine_files(
    paths: Sequence[Path],
    *,
    hdu: int = 0,
    params: ClipParams = ClipParams(),
    mem_limit: int = 2**30,
    scale: Sequence[float] | None = None,
    offset: Sequence[np.ndarray | float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CombineResult:
    """Sigma-clipped median of FITS images, read in row blocks within a memory budget.

    Each file is read once, block by block; the kernel runs on each block while the next one is read
    (a background thread). Uncompressed image HDUs are read directly from the data unit (big-endian
    bits decoded, BSCALE/BZERO/BLANK applied in the kernel exactly as astropy would: the same float32
    or float64 arithmetic, BLANK → NaN, pseudo-unsigned integers exact); tile-compressed HDUs, gzipped
    files and unsigned 64-bit data go through astropy's ``section``. Either way the numbers clipped are
    those of ``astropy.io.fits.getdata``.

    Parameters
    ----------
    paths : sequence of path
        The FITS files, all with a 2-D image of the same shape in HDU ``hdu``.
    hdu : int
        HDU index of the image in every file.
    params : ClipParams
        Clipping parameters.
    mem_limit : int
        Bytes this call may hold at once: the result images (6 bytes a pixel), the offset images it
        copies (none when a single C-contiguous offset image is shared), and the block buffers (two,
        for overlap, each ``n × rows × nx`` stored samples) — the block rows are chosen to fit.
        The interpreter and numba themselves are not counted.
    scale : sequence of float, optional
        Per-file factor.
    offset : sequence of (numpy.ndarray or float), optional
        Per-file offset: an image of the same shape or a number. Images given as the same object are
        held once.
    progress : callable, optional
        Called as ``progress(rows_done, rows_total)`` after each block.

    Returns
    -------
    CombineResult
        The combined float32 image and rejected-count image, the total rejected fraction, n.

    Notes
    -----
    Each sample is ``(frame - offset) * scale``, evaluated in float64 (``frame`` being the value
    astropy's ``getdata`` returns), before clipping; a non-finite result counts as a rejected sample.

    Raises
    ------
    ccdcal.errors.UsageError
        Bad parameters: no files, more than 65535, ``mem_limit`` too small for one row, bad
        ``scale``/``offset``.
    ccdcal.errors.FitsFormatError
        A file that is unreadable, not a 2-D image, truncated, or whose shape differs from the first
        file's (the message names the file and both shapes).
    """
    paths = [Path(p) for p in paths]
    n = len(paths)
    if n == 0:
        raise UsageError("no files to combine")
    if n > MAX_FRAMES:
        raise UsageError(f"at most {MAX_FRAMES} files can be combined, not {n}")
    if isinstance(mem_limit, bool) or not isinstance(mem_limit, numbers.Integral) or mem_limit <= 0:
        raise UsageError(f"mem_limit must be a positive number of bytes, not {mem_limit!r}")
    if not isinstance(hdu, numbers.Integral) or isinstance(hdu, bool) or hdu < 0:
        raise UsageError(f"hdu must be a non-negative integer, not {hdu!r}")

    frames: list[_Frame] = []
    try:
        for path in paths:
            frame = _describe(path, int(hdu))
            frames.append(frame)
            if frame.shape != frames[0].shape:
                raise FitsFormatError(
                    f"image shape {frame.shape} differs from {frames[0].path}'s {frames[0].shape}",
                    str(path),
                )
        ny, nx = frames[0].shape
        if ny == 0 or nx == 0:
            raise FitsFormatError(f"HDU {hdu} holds an empty image (shape {(ny, nx)})", str(paths[0]))
        transform = _check_arrays(n, (ny, nx), scale, offset)

        raw_mode = all(f.data_offset is not None for f in frames) and len({f.bitpix for f in frames}) == 1
        if raw_mode:
            bitpix = frames[0].bitpix
            buf_dtype = np.dtype(_UNSIGNED[abs(bitpix)])
            decoding = _Decoding(
                _BE_FLOAT if bitpix < 0 else _BE_INT,
                np.array([f.bscale for f in frames]),
                np.array([f.bzero for f in frames]),
                np.array([f.in_f32 for f in frames], np.bool_),
                np.array([0.0 if f.blank is None else float(f.blank) for f in frames]),
                np.array([f.blank is not None for f in frames], np.bool_),
            )
            for f in frames:
                f.fd = os.open(f.path, os.O_RDONLY)
        else:
            from astropy.io import fits

            dtypes = []
            for f in frames:
                if f.hdul is None:
                    f.hdul = fits.open(f.path, memmap=False, lazy_load_hdus=True)
                dtypes.append(f.hdul[hdu].section[0:1, 0:1].dtype)
            buf_dtype = np.dtype(np.result_type(*dtypes)).newbyteorder("=")
            if buf_dtype.kind not in "iuf" or (buf_dtype.kind == "f" and buf_dtype.itemsize > 8):
                buf_dtype = np.dtype(np.float64)
            decoding = _Decoding.identity(n)

        # Memory plan.
        fixed = ny * nx * (4 + 2) + transform.copied_bytes
        row_bytes = n * nx * buf_dtype.itemsize + nx * 2  # samples + non-finite counts
        budget = int(mem_limit) - fixed
        if budget < 2 * row_bytes:
            raise UsageError(
                f"mem_limit={mem_limit} bytes is too small for {n} images of {ny}x{nx}: at least "
                f"{fixed + 2 * row_bytes} bytes are needed"
            )
        target = max(_MIN_BLOCK_ROWS, _TARGET_BLOCK_BYTES // row_bytes)
        rows = max(1, min(ny, budget // (2 * row_bytes), target))
        starts = list(range(0, ny, rows))
        nbuf = 2 if len(starts) > 1 else 1
        buffers = [np.empty((n, rows, nx), buf_dtype) for _ in range(nbuf)]
        nonfinite = np.empty((rows, nx), np.uint16)

        image = np.empty((ny, nx), np.float32)
        rejected = np.empty((ny, nx), np.uint16)
        n_nonfinite = 0

        def read_block(which: int, r0: int) -> np.ndarray:
            r1 = min(ny, r0 + rows)
            # A C-contiguous (n, r1 - r0, nx) view of the buffer, also for a short last block.
            block = buffers[which].reshape(-1)[: n * (r1 - r0) * nx].reshape(n, r1 - r0, nx)
            for i, f in enumerate(frames):
                if raw_mode:
                    assert f.fd is not None
                    assert f.data_offset is not None
                    start = f.data_offset + r0 * nx * buf_dtype.itemsize
                    _read_exact(f.fd, memoryview(block[i]).cast("B"), start, f.path)
                else:
                    block[i] = f.hdul[hdu].section[r0:r1, :]
            return block

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read_block, 0, 0)
            for b, r0 in enumerate(starts):
                block = pending.result()
                if b + 1 < len(starts):
                    pending = pool.submit(read_block, (b + 1) % nbuf, starts[b + 1])
                r1 = r0 + block.shape[1]
                nf = nonfinite[: r1 - r0]
                _run_kernel(
                    block,
                    decoding,
                    transform,
                    slice(r0, r1),
                    params,
                    image[r0:r1],
                    rejected[r0:r1],
                    nf,
                )
                n_nonfinite += int(nf.sum(dtype=np.int64))
                if progress is not None:
                    progress(r1, ny)
    finally:
        for f in frames:
            if f.fd is not None:
                os.close(f.fd)
                f.fd = None
            if f.hdul is not None:
                f.hdul.close()
    total = n * image.size
    fraction = float(rejected.sum(dtype=np.int64)) / total if total else 0.0
    return CombineResult(
        image=image,
        rejected=rejected,
        rejected_fraction=fraction,
        n_inputs=n,
        n_nonfinite=n_nonfinite,
        block_rows=rows,
        n_blocks=len(starts),
        params=params,
    )
