"""The clip kernel's Python side: per-frame decoding and transform arrays, and one call on a block.

:func:`clip_block` runs :func:`ccdcal.kernels.clipkernel.clip_kernel` on an (n, rows, nx) block of
samples with everything the kernel takes besides the samples: how to decode and scale each frame's
stored values and which values are saturated (:class:`Decoding`, identity for native arrays), the
optional per-frame ``(value - offset) * scale`` (:class:`Transform`, validated from the caller's
arguments by :func:`build_transform`), the comparator networks for ``n`` keys and the tile width.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ccdcal.errors import UsageError
from ccdcal.kernels.clipkernel import NATIVE, clip_kernel
from ccdcal.kernels.sortnet import bitonic_merger, odd_even_merge_network

__all__ = ["NO_OFFSET", "Decoding", "Transform", "build_transform", "clip_block", "tile_width"]

# Pixels per kernel tile (the sort is vectorised across them): about 32 KiB of float64 samples,
# 64 to 256 pixels (measured best on a 2-core Xeon for 5 to 150 frames).
_TILE_BYTES = 32768
_TILE_MIN_PIXELS = 64
_TILE_MAX_PIXELS = 256

#: The kernel's ``off_img`` when no frame has an offset image.
NO_OFFSET = np.zeros((1, 1, 1))


def tile_width(n: int) -> int:
    """Pixels of a row per kernel job for a stack of ``n`` frames.

    Parameters
    ----------
    n : int
        Number of frames.

    Returns
    -------
    int
        About 32 KiB of float64 samples' worth of pixels, a multiple of 8 within [64, 256].
    """
    width = _TILE_BYTES // (8 * max(n, 1))
    return int(max(_TILE_MIN_PIXELS, min(_TILE_MAX_PIXELS, width - width % 8)))


@dataclass
class Decoding:
    """Per-frame decoding passed to the kernel (identity for native arrays).

    Attributes
    ----------
    kind : int
        ``NATIVE``, ``BE_INT`` or ``BE_FLOAT`` (:mod:`ccdcal.kernels.clipkernel`), for all frames.
    bscale, bzero : numpy.ndarray
        Per-frame BSCALE and BZERO (float64).
    in_f32 : numpy.ndarray
        Per-frame flag: astropy scales this frame in float32.
    blank : numpy.ndarray
        Per-frame BLANK value (float64; ignored where ``use_blank`` is false).
    use_blank : numpy.ndarray
        Per-frame flag: samples equal to ``blank`` become NaN.
    saturation : numpy.ndarray or None
        Per-frame saturation level of the scaled values (float64; ``inf``: none): samples at or above it
        become NaN, counted apart (:mod:`ccdcal.kernels.saturation`). ``None``: no frame has one.
    """

    kind: int
    bscale: np.ndarray
    bzero: np.ndarray
    in_f32: np.ndarray
    blank: np.ndarray
    use_blank: np.ndarray
    saturation: np.ndarray | None = None

    def with_saturation(self, levels: Sequence[float | None] | None) -> Decoding:
        """This decoding with each frame's saturation level (``None``: none; no levels: unchanged).

        Raises
        ------
        ccdcal.errors.UsageError
            When ``levels`` has not one value a frame, or a level is not a number.
        """
        if levels is None or len(levels) == 0:
            return self
        n = len(self.bscale)
        if len(levels) != n:
            raise UsageError(f"saturation has {len(levels)} levels for {n} files")
        values = np.full(n, np.inf)
        for i, level in enumerate(levels):
            if level is None:
                continue
            if isinstance(level, bool) or not isinstance(level, numbers.Real) or math.isnan(level):
                raise UsageError(f"saturation[{i}] must be a number or None, not {level!r}")
            values[i] = float(level)
        return replace(self, saturation=values)

    @classmethod
    def identity(cls, n: int) -> Decoding:
        """Native numbers used as they are, for ``n`` frames."""
        return cls(
            NATIVE,
            np.ones(n),
            np.zeros(n),
            np.zeros(n, np.bool_),
            np.zeros(n),
            np.zeros(n, np.bool_),
        )


@dataclass
class Transform:
    """Per-frame ``(value - offset) * scale``: offsets as images (ny, k, nx) or per-frame scalars.

    Attributes
    ----------
    active : bool
        Whether the kernel applies the transform at all.
    off_img : numpy.ndarray
        (ny, k, nx) distinct offset images, or ``NO_OFFSET``.
    off_idx : numpy.ndarray
        Per-frame index into ``off_img``'s axis 1, -1 for a scalar offset.
    off_val : numpy.ndarray
        Per-frame scalar offset.
    scale : numpy.ndarray
        Per-frame factor.
    copied_bytes : int
        Size of the offset images copied here (counted against ``mem_limit``).
    """

    active: bool
    off_img: np.ndarray
    off_idx: np.ndarray
    off_val: np.ndarray
    scale: np.ndarray
    copied_bytes: int = 0

    @classmethod
    def identity(cls, n: int) -> Transform:
        """No transform, for ``n`` frames."""
        return cls(False, NO_OFFSET, np.full(n, -1, np.int64), np.zeros(n), np.ones(n))


def build_transform(
    n: int,
    shape: tuple[int, int],
    scale: Sequence[float] | None,
    offset: Sequence[np.ndarray | float] | None,
) -> Transform:
    """Validate ``scale``/``offset`` and build the kernel's per-frame transform.

    Parameters
    ----------
    n : int
        Number of frames.
    shape : tuple of int
        (ny, nx) of the images.
    scale : sequence of float, optional
        Per-frame finite factor.
    offset : sequence of (numpy.ndarray or float), optional
        Per-frame offset: a real image of ``shape`` or a finite number. Images given as the same object
        are held once; a single C-contiguous image whose dtype is the one chosen (float32 when all
        images are float32, else float64) is used without a copy.

    Returns
    -------
    Transform
        The identity when both are None; ``copied_bytes`` counts the offset images copied.

    Raises
    ------
    ccdcal.errors.UsageError
        A length other than ``n``, a non-finite or non-numeric value, an image of another shape or a
        non-real dtype.
    """
    if scale is None and offset is None:
        return Transform.identity(n)
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
        off_img = NO_OFFSET
    else:
        dtype = np.float32 if all(im.dtype == np.float32 for im in images) else np.float64
        if len(images) == 1 and images[0].dtype == dtype and images[0].flags.c_contiguous:
            off_img = images[0].reshape(shape[0], 1, shape[1])  # a view: no copy
        else:
            off_img = np.empty((shape[0], len(images), shape[1]), dtype)
            for j, im in enumerate(images):
                off_img[:, j, :] = im
            copied = off_img.nbytes
    return Transform(True, off_img, off_idx, off_val, scales, copied)


def clip_block(
    block: np.ndarray,
    decoding: Decoding,
    transform: Transform,
    rows: slice,
    out: np.ndarray,
    rejected: np.ndarray,
    nonfinite: np.ndarray,
    saturated: np.ndarray,
    uncertainty: np.ndarray,
    *,
    sigma_lower: float,
    sigma_upper: float,
    maxiters: int,
    use_mad: bool,
) -> None:
    """Sigma-clipped median of one block of samples and its uncertainty
    (:func:`ccdcal.kernels.clipkernel.clip_kernel`).

    Parameters
    ----------
    block : numpy.ndarray
        (n, r, nx) stored samples, C-contiguous, native or as ``decoding`` describes.
    decoding : Decoding
        How to turn each frame's stored samples into numbers.
    transform : Transform
        The per-frame ``(value - offset) * scale``.
    rows : slice
        The image rows ``block`` holds (selects the rows of the offset images).
    out, rejected, nonfinite, saturated, uncertainty : numpy.ndarray
        (r, nx) float32 combined values, uint16 masked counts, uint16 non-finite counts (saturated
        included), uint16 saturated counts and float32 combine uncertainty, written.
    sigma_lower, sigma_upper : float
        Clipping bounds in units of the dispersion.
    maxiters : int
        Maximum number of clipping passes.
    use_mad : bool
        Dispersion ``mad_std`` when true, else ``std``.
    """
    n = block.shape[0]
    off_img = transform.off_img if transform.off_img is NO_OFFSET else transform.off_img[rows]
    clip_kernel(
        block,
        decoding.kind,
        decoding.bscale,
        decoding.bzero,
        decoding.in_f32,
        decoding.blank,
        decoding.use_blank,
        decoding.saturation if decoding.saturation is not None else np.full(n, np.inf),
        off_img,
        transform.off_idx,
        transform.off_val,
        transform.scale,
        transform.active,
        odd_even_merge_network(n),
        bitonic_merger(n),
        tile_width(n),
        sigma_lower,
        sigma_upper,
        maxiters,
        use_mad,
        out,
        rejected,
        nonfinite,
        saturated,
        uncertainty,
    )
