"""Comparator networks for the clip kernel: a Batcher odd-even merge sort and a bitonic merger.

A network is a fixed list of compare-exchange pairs ``(i, j)``, ``i < j``: after ``a[i], a[j] =
min, max`` has been applied for every pair in order, the keys are sorted. The clip kernel
(:mod:`ccdcal.kernels.clipkernel`) applies one network to every pixel of a tile at once, so the sort
vectorises across pixels. Both networks are built for the next power of two and pruned to ``n`` keys:
keys beyond ``n`` would be +inf padding, and a comparator touching one never moves anything.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["bitonic_merger", "odd_even_merge_network"]


@functools.lru_cache(maxsize=64)
def odd_even_merge_network(n: int) -> np.ndarray:
    """Batcher odd-even merge sort comparators for ``n`` keys.

    Parameters
    ----------
    n : int
        Number of keys.

    Returns
    -------
    numpy.ndarray
        (m, 2) int64 index pairs ``(i, j)``, ``i < j``, in the order they are applied. Cached: do not
        modify.
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
def bitonic_merger(n: int) -> np.ndarray:
    """Bitonic merger comparators sorting ``n`` keys that are non-increasing then non-decreasing.

    The power-of-two merger: half-cleaners of strides size/2, ..., 1.

    Parameters
    ----------
    n : int
        Number of keys.

    Returns
    -------
    numpy.ndarray
        (m, 2) int64 index pairs ``(i, j)``, ``i < j``, in the order they are applied. Cached: do not
        modify.
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
