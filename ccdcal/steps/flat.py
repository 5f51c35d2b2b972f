"""Flat: frames normalised by their own median, combined, and the master normalised to median 1."""

from __future__ import annotations

import numpy as np


def finite_median(image: np.ndarray) -> float:
    """The median of an image's finite pixels (NaN when there are none)."""
    values = image[np.isfinite(image)]
    return float(np.median(values)) if values.size else float("nan")


def normalise_to_median(image: np.ndarray) -> tuple[np.ndarray, float]:
    """``image / median(image)`` as float32, and the median divided by.

    Raises
    ------
    ValueError
        When the median is not a finite positive number (an all-zero or negative "flat").
    """
    median = finite_median(image)
    if not (np.isfinite(median) and median > 0):
        raise ValueError(f"the flat's median is {median}, not a positive level")
    return np.divide(image, median, dtype=np.float64).astype(np.float32), median


def precalibration_offset(
    bias: np.ndarray | None, dark: np.ndarray | None, dark_scale: float
) -> np.ndarray | float:
    """What is subtracted from a raw flat before normalising: ``bias + dark × scale`` (float64).

    Either part may be absent (``None``); with neither, 0.
    """
    offset: np.ndarray | float = 0.0
    if bias is not None:
        offset = np.asarray(bias, dtype=np.float64)
    if dark is not None:
        offset = offset + np.asarray(dark, dtype=np.float64) * dark_scale
    return offset
