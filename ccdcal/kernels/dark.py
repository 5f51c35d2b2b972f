"""Dark: a master dark holds the dark current at its own exposure; calibration scales it by exposure."""

from __future__ import annotations

import numpy as np

from ccdcal.errors import UsageError


def dark_scale(target_exptime: float, dark_exptime: float) -> float:
    """The factor that scales a dark taken at ``dark_exptime`` to ``target_exptime`` (t_target / t_dark).

    Raises
    ------
    UsageError
        When the dark's exposure is not positive (a zero-second "dark" cannot be scaled).
    """
    if not dark_exptime > 0:
        raise UsageError(f"a dark of {dark_exptime} s cannot be scaled to {target_exptime} s")
    return float(target_exptime) / float(dark_exptime)


def subtract_dark(frame: np.ndarray, dark: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``frame − dark × scale`` in float32 (as ``ccdproc.subtract_dark`` with ``scale=True``).

    Parameters
    ----------
    frame, dark : numpy.ndarray
        Images of the same shape; the dark already bias-subtracted.
    scale : float
        Exposure ratio, see :func:`dark_scale`.
    """
    difference: np.ndarray = np.subtract(frame, np.multiply(dark, scale, dtype=np.float32), dtype=np.float32)
    return difference
