"""Numba kernels of the sigma-clipped median: sample decoding, medians on sorted runs, the clip kernel.

Everything here is compiled by numba with ``cache=True``. All the compiled functions live in this one
module on purpose: numba's on-disk cache is invalidated by a change of the file a function is defined
in, not of the files its callees are defined in, so a kernel and the helpers it inlines or calls must
share a file for the cache to stay correct.

The kernel (parallel over row tiles) converts each sample to float64 on the fly, so a stack is never
copied to float64. For each tile of up to 256 pixels of a row the stack values are loaded (non-finite →
+inf, counted apart) and sorted along the stack axis by a Batcher odd-even merge network vectorised over
the tile's pixels (:mod:`ccdcal.kernels.sortnet`). The first pass of every pixel without non-finite
samples is also vectorised: median by index, deviations (which run down then up a sorted column) sorted
by a bitonic merger, bounds; a pixel whose first bounds keep all its samples is finished there, as
astropy's loop is. The other pixels (typically a fifth) iterate one at a time on their sorted column,
where every kept set is a contiguous index range: medians are index arithmetic and the median absolute
deviation is the k-th smallest element of two sorted runs (binary search).

The same pass writes each pixel's combine uncertainty, as ``ccdproc.Combiner.median_combine`` computes
it: the ``mad_std`` of the samples the final bounds keep (whatever the clipping's dispersion), divided by
the square root of their number. The kept samples are a contiguous run of the sorted column, so this is
the first pass's MAD for a pixel finished there and one more binary search for the others: a few
operations a pixel beside the sort.

The rules the kernel reproduces (astropy's compiled ``sigma_clip`` then ``np.ma.median``) are in
:mod:`ccdcal.kernels.combine`; the Python-side arguments are built by :mod:`ccdcal.kernels.clipblock`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange

__all__ = ["BE_FLOAT", "BE_INT", "MAD_TO_STD", "NATIVE", "clip_kernel"]

#: astropy's ``mad_std`` factor, 1 / Φ⁻¹(3/4), written as astropy's C code writes it.
MAD_TO_STD = 1.482602218505602

# How the kernel decodes a stored sample (``kind`` argument).
NATIVE = 0  # a native-endian number, used as it is
BE_INT = 1  # big-endian FITS integer bits in an unsigned buffer (BITPIX 8, 16, 32, 64)
BE_FLOAT = 2  # big-endian IEEE float bits in an unsigned buffer (BITPIX -32, -64)


# --------------------------------------------------------------------------------------------------
# Decoding stored samples


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
    """The IEEE single-precision number whose bits are the low 32 of ``bits``, as float64."""
    return np.float64(np.uint32(bits).view(np.float32))


@njit(cache=True, nogil=True)
def _bits_to_f64(bits: Any) -> float:
    """The IEEE double-precision number whose bits are ``bits``."""
    return np.uint64(bits).view(np.float64)


@njit(cache=True, nogil=True)
def _decode_row(src: np.ndarray, kind: int, dst: np.ndarray) -> None:
    """Decode one row of stored samples into float64: ``dst[:]`` = the numbers ``src`` holds.

    One loop per case, so that each vectorises.

    Parameters
    ----------
    src : numpy.ndarray
        1-D stored samples: native numbers (``kind`` ``NATIVE``, converted as they are) or big-endian
        FITS bits in an unsigned array (``BE_INT``: integers, BITPIX 8 unsigned, 16/32/64 signed;
        ``BE_FLOAT``: IEEE floats), byte-swapped and decoded.
    kind : int
        ``NATIVE``, ``BE_INT`` or ``BE_FLOAT``.
    dst : numpy.ndarray
        1-D float64 output, as long as ``src``.
    """
    nbytes = src.itemsize
    w = dst.shape[0]
    if kind == NATIVE or nbytes == 1:
        for x in range(w):
            dst[x] = np.float64(src[x])
    elif nbytes == 2:
        for x in range(w):
            u = np.int64(src[x]) & 0xFFFF
            v = ((u & 0xFF) << 8) | (u >> 8)
            dst[x] = np.float64(v - ((v & 0x8000) << 1))
    elif nbytes == 4:
        if kind == BE_FLOAT:
            for x in range(w):
                u = np.int64(src[x]) & 0xFFFFFFFF
                v = ((u & 0xFF) << 24) | ((u & 0xFF00) << 8) | ((u >> 8) & 0xFF00) | (u >> 24)
                dst[x] = _bits_to_f32(v)
        else:
            for x in range(w):
                u = np.int64(src[x]) & 0xFFFFFFFF
                v = ((u & 0xFF) << 24) | ((u & 0xFF00) << 8) | ((u >> 8) & 0xFF00) | (u >> 24)
                dst[x] = np.float64(v - ((v & 0x80000000) << 1))
    elif kind == BE_FLOAT:
        for x in range(w):
            dst[x] = _bits_to_f64(_bswap(src[x], 8))
    else:
        for x in range(w):
            dst[x] = np.float64(np.int64(_bswap(src[x], 8)))


# --------------------------------------------------------------------------------------------------
# Medians of sorted runs


@njit(inline="always")
def _median_sorted(s: np.ndarray, lo: int, hi: int) -> float:
    """Median of the sorted ``s[lo:hi]`` (``hi > lo``), as astropy's ``wirth_median``."""
    c = hi - lo
    h = lo + c // 2
    if c % 2 == 1:
        return float(s[h])
    return float(0.5 * (s[h] + s[h - 1]))


@njit(inline="always")
def _mad_sorted(s: np.ndarray, lo: int, hi: int, med: float) -> float:
    """Median of ``|s[lo:hi] - med|`` for the sorted ``s[lo:hi]`` whose median is ``med``.

    The deviations are two ascending runs, ``A[p] = |s[i0 - p] - med|`` leftwards and
    ``B[q] = |s[j0 + q] - med|`` rightwards of the middle; the ``t = c // 2 + 1`` smallest deviations are
    ``A[:p]`` and ``B[:t - p]`` for the smallest ``p`` with ``A[p] >= B[t - p - 1]`` (binary search).
    The values are computed as ``fabs(x - median)``, as astropy's C code does, so the result is the same
    double.

    Parameters
    ----------
    s : numpy.ndarray
        1-D float64 array, ascending on ``[lo, hi)``.
    lo, hi : int
        The run ``s[lo:hi]``, ``hi > lo``.
    med : float
        ``_median_sorted(s, lo, hi)``.

    Returns
    -------
    float
        The median absolute deviation (not yet scaled to a standard deviation).
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


# --------------------------------------------------------------------------------------------------
# The clip kernel


@njit(parallel=True, cache=True, nogil=True, fastmath=False)
def clip_kernel(
    data: np.ndarray,
    kind: int,
    bscale: np.ndarray,
    bzero: np.ndarray,
    in_f32: np.ndarray,
    blank: np.ndarray,
    use_blank: np.ndarray,
    saturation: np.ndarray,
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
    saturated: np.ndarray,
    uncertainty: np.ndarray,
) -> None:
    """Sigma-clipped median of ``data`` (n, rows, nx) into ``out``/``rejected``/``nonfinite`` (rows, nx),
    and its uncertainty into ``uncertainty``.

    Sample value: ``decode(raw)``; if ``use_blank[k]`` and it equals ``blank[k]``: NaN; then
    ``raw * bscale[k] + bzero[k]`` in float32 when ``in_f32[k]`` else float64 (astropy's scaling);
    NaN when that is at or above ``saturation[k]`` (a saturated sample, counted in ``saturated``; +inf:
    none); then, when ``transform``, ``(value - offset) * scale[k]`` in float64, the offset being
    ``off_img[y, off_idx[k], x]`` or ``off_val[k]`` when ``off_idx[k] < 0``.

    Parameters
    ----------
    data : numpy.ndarray
        (n, rows, nx) stored samples, C-contiguous, decoded as ``kind`` says.
    kind : int
        ``NATIVE``, ``BE_INT`` or ``BE_FLOAT``.
    bscale, bzero, in_f32, blank, use_blank : numpy.ndarray
        Per-frame (n) scaling as astropy applies it: factor, zero point, whether the scaling is done
        in float32, the BLANK value and whether it applies.
    saturation : numpy.ndarray
        Per-frame (n) saturation level of the scaled raw values (``inf``: none).
    off_img : numpy.ndarray
        (rows, k, nx) offset images of this block's rows (any real dtype), or a (1, 1, 1) dummy.
    off_idx, off_val, scale : numpy.ndarray
        Per-frame (n) offset image index (-1: use ``off_val``), scalar offset, and factor.
    transform : bool
        Whether to apply ``(value - offset) * scale`` at all.
    pairs, merge_pairs : numpy.ndarray
        (m, 2) comparators of the sorting network and of the bitonic merger for ``n`` keys
        (:func:`ccdcal.kernels.sortnet.odd_even_merge_network`,
    :func:`ccdcal.kernels.sortnet.bitonic_merger`). tile_w : int
        Pixels of a row per parallel job.
    sigma_lower, sigma_upper : float
        Clipping bounds in units of the dispersion.
    maxiters : int
        Maximum number of clipping passes that remove something.
    use_mad : bool
        Dispersion ``mad_std`` when true, else ``std``.
    out : numpy.ndarray
        (rows, nx) float32 combined values (NaN where no sample is finite), written.
    rejected : numpy.ndarray
        (rows, nx) uint16 masked-sample counts, non-finite ones included, written.
    nonfinite : numpy.ndarray
        (rows, nx) uint16 non-finite sample counts (saturated ones included), written.
    saturated : numpy.ndarray
        (rows, nx) uint16 saturated sample counts, written.
    uncertainty : numpy.ndarray
        (rows, nx) float32 combine uncertainty, written: ``MAD_TO_STD * median(|x - median|) /
        sqrt(k)`` of the ``k`` samples kept by the final bounds (ccdproc's ``sigma_func`` over the square
        root of the count), computed in float64; NaN where none is kept.
    """
    n, ny, nx = data.shape
    ntiles = (nx + tile_w - 1) // tile_w
    npairs = pairs.shape[0]
    nmerge = merge_pairs.shape[0]
    h = n // 2
    odd = n % 2 == 1
    root_n = math.sqrt(n)
    for job in prange(ny * ntiles):
        y = job // ntiles
        x0 = (job % ntiles) * tile_w
        w = min(tile_w, nx - x0)
        out_row = out[y, x0 : x0 + w]
        rej_row = rejected[y, x0 : x0 + w]
        bad_row = nonfinite[y, x0 : x0 + w]
        sat_row = saturated[y, x0 : x0 + w]
        unc_row = uncertainty[y, x0 : x0 + w]
        tile = np.empty((n, w), np.float64)
        count = np.zeros(w, np.int64)
        hits = np.zeros(w, np.int64)
        # 1. Load: decode, scale, mask the saturated, transform; non-finite -> +inf (sorts last), counted
        # apart.
        for k in range(n):
            row = tile[k]
            _decode_row(data[k, y, x0 : x0 + w], kind, row)
            bs = bscale[k]
            bz = bzero[k]
            sl = saturation[k]
            if not (use_blank[k] or in_f32[k] or transform):
                for x in range(w):  # the common case, kept simple so that it vectorises
                    v = row[x] * bs + bz
                    hit = v >= sl and v < np.inf  # an infinite sample counts as non-finite only
                    hits[x] += hit
                    fin = np.isfinite(v) and not hit
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
                if v >= sl and v < np.inf:  # saturated in the raw frame: left out as non-finite ones are
                    v = np.nan
                    hits[x] += 1
                if transform:
                    off = np.float64(off_row[x]) if oi >= 0 else ov
                    v = (v - off) * sc
                fin = np.isfinite(v)
                row[x] = v if fin else np.inf
                count[x] += fin
        for x in range(w):
            sat_row[x] = hits[x]
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
                unc_row[x] = std / root_n  # every sample kept: the first pass's MAD is the one
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
                unc_row[x] = np.nan
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
            rej_row[x] = n - (b - a)
            if b > a:
                med_x = _median_sorted(s, a, b)
                out_row[x] = med_x
                unc_row[x] = _mad_sorted(s, a, b, med_x) * MAD_TO_STD / math.sqrt(b - a)
            else:
                out_row[x] = np.nan
                unc_row[x] = np.nan
