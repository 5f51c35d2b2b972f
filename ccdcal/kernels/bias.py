"""Bias: a master bias is the combine of raw biases; calibration subtracts it."""

from __future__ import annotations

import numpy as np


def subtract_bias(frame: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``frame − bias`` in float32 (as ``ccdproc.subtract_bias``).

    Parameters
    ----------
    frame, bias : numpy.ndarray
        Images of the same shape.

    Returns
    -------
    numpy.ndarray
        float32 difference.
    """
    difference: np.ndarray = np.subtract(frame, bias, dtype=np.float32)
    return difference
