"""Dark: a master dark holds the dark current at its own exposure; calibration scales it by exposure.

The dark current of a camera set-up (:func:`fit_dark_current`) is the slope of its bias-subtracted master
darks' levels (sigma-clipped means, :func:`ccdcal.kernels.qa.clipped_level`) against exposure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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


#: The smallest dark signal [ADU] a set of darks resolves: raw data are integers, and the master of
#: integer frames is no better than their step — a dark current that puts less than this into the
#: longest dark is not resolved, whatever its formal uncertainty.
MIN_DARK_SIGNAL = 1.0


@dataclass(frozen=True)
class DarkCurrentFit:
    """The dark current of one set of master darks (:func:`fit_dark_current`).

    Attributes
    ----------
    rate : float
        The dark current [ADU/s]: the slope of level against exposure, or with one exposure its
        level / exposure.
    error : float
        The standard uncertainty of ``rate``.
    offset, offset_error : float or None
        The level at zero exposure (a residual bias offset) and its uncertainty; ``None`` with one exposure.
    exposures : tuple of float
        The distinct exposures fitted [s], increasing.
    chi2 : float or None
        Chi-square of the line (``None`` with one exposure); ``dof`` its degrees of freedom.
    dof : int
        Levels minus 2 (0 with one or two exposures).
    scale : float
        The factor the uncertainties were multiplied by: ``sqrt(chi2 / dof)`` when the levels scatter
        about the line more than their noise (and ``dof`` > 0), else 1.
    resolved : bool
        Whether the darks resolve the dark current (see :func:`fit_dark_current`).
    notes : tuple of str
        What to know: one or two exposures, the scaling, why it is not resolved, a negative rate.
    """

    rate: float
    error: float
    offset: float | None
    offset_error: float | None
    exposures: tuple[float, ...]
    chi2: float | None
    dof: int
    scale: float
    resolved: bool
    notes: tuple[str, ...]


def _seconds(value: float) -> str:
    return f"{value:g} s"


def fit_dark_current(
    exptimes: Sequence[float], levels: Sequence[float], errors: Sequence[float]
) -> DarkCurrentFit:
    """Fit ``level = rate × exposure + offset`` to master darks by weighted least squares.

    Each level is a bias-subtracted master dark's sigma-clipped mean with its standard error; the weights
    are ``1 / error²``. The offset takes up what the bias subtraction left (a bias level that moved
    between the biases and the darks, the combine's own small offset), so the slope is the dark current
    alone. When the levels scatter about the line more than their errors allow (``chi2 / dof > 1``) both
    uncertainties are multiplied by ``sqrt(chi2 / dof)``, as ``numpy.polyfit(..., cov=True)`` does; they
    are never made smaller than the levels' errors give.

    With a single exposure the rate is the level / exposure (the weighted mean level when that exposure
    appears several times): it includes any residual bias offset, which one exposure cannot separate.

    The rate is *not resolved* when its uncertainty is at least its size, or when it puts less than
    :data:`MIN_DARK_SIGNAL` into the longest dark (short darks: the step of integer data).

    Parameters
    ----------
    exptimes : sequence of float
        Exposures [s], at least one of them positive.
    levels : sequence of float
        The masters' levels [ADU], one per exposure.
    errors : sequence of float
        The levels' standard errors [ADU] (≥ 0; an error of 0 is taken as tiny).

    Returns
    -------
    DarkCurrentFit
        Rate [ADU/s], uncertainty, offset, exposures, chi-square, and whether it is resolved, with notes.

    Raises
    ------
    ValueError
        The sequences differ in length or are empty, a value is not finite, an error is negative, or no
        exposure is positive.
    """
    t = np.asarray(exptimes, dtype=np.float64)
    y = np.asarray(levels, dtype=np.float64)
    sigma = np.asarray(errors, dtype=np.float64)
    if not (t.ndim == y.ndim == sigma.ndim == 1 and t.size == y.size == sigma.size) or not t.size:
        raise ValueError("exposures, levels and errors must be sequences of one length, not empty")
    if not (np.isfinite(t).all() and np.isfinite(y).all() and np.isfinite(sigma).all()):
        raise ValueError("exposures, levels and errors must be finite")
    if (sigma < 0).any():
        raise ValueError("an error cannot be negative")
    if not (t > 0).any():
        raise ValueError("no positive exposure: a dark current needs darks of some exposure")
    exposures = tuple(float(e) for e in np.unique(t))
    with np.errstate(all="ignore"):  # extreme values: refused below, not warned about
        rate, error, offset, offset_error, chi2 = _weighted_line(t, y, sigma, len(exposures))
    if not all(math.isfinite(x) for x in (rate, error, offset, offset_error, chi2)):
        raise ValueError("the levels and their errors are too large or too small to be fitted")
    notes: list[str] = []
    dof, scale = 0, 1.0
    if len(exposures) == 1:
        notes.append(
            f"one exposure ({_seconds(exposures[0])}): the rate is its level / exposure, which cannot "
            "be separated from a residual bias offset"
        )
    else:
        dof = t.size - 2
        scale = math.sqrt(chi2 / dof) if dof > 0 and chi2 > dof else 1.0
        error, offset_error = scale * error, scale * offset_error
        if len(exposures) == 2:
            notes.append(
                "two exposures: the line cannot be checked, its uncertainty is the levels' noise alone"
            )
        if scale > 1.0:
            notes.append(
                f"the levels scatter about the line {scale:.3g} times more than their noise: "
                "the uncertainties are multiplied by that"
            )
    resolved = True
    if not error < abs(rate):
        resolved = False
        notes.append(f"not resolved: its uncertainty {error:.2g} ADU/s is not smaller than the rate")
    signal = abs(rate) * exposures[-1]
    if signal < MIN_DARK_SIGNAL:
        resolved = False
        notes.append(
            f"not resolved: the longest dark ({_seconds(exposures[-1])}) holds {signal:.2g} ADU of dark "
            f"current, less than {MIN_DARK_SIGNAL:g} ADU, the step of integer raw data"
        )
    if resolved and rate < 0:
        notes.append("negative: the darks are below their bias (did the bias level move?)")
    if len(exposures) == 1:
        return DarkCurrentFit(rate, error, None, None, exposures, None, 0, 1.0, resolved, tuple(notes))
    return DarkCurrentFit(
        rate, error, offset, offset_error, exposures, chi2, dof, scale, resolved, tuple(notes)
    )


def _weighted_line(
    t: np.ndarray, y: np.ndarray, sigma: np.ndarray, exposures: int
) -> tuple[float, float, float, float, float]:
    """Rate, its unscaled error, offset, its unscaled error and chi-square of the weighted line; with one
    exposure the weighted mean level / exposure and its error (offset, its error and chi-square 0).

    The weights are ``(s0 / sigma)²`` with ``s0`` the smallest error (an error of 0 taken as tiny), so that
    they stay within (0, 1]; the variances are multiplied back by ``s0²``. Extreme values give a result
    that is not finite (numpy's float64: no exception), which the caller refuses.
    """
    tiny = 1e-9 * max(1.0, float(np.max(np.abs(y))))
    sigma = np.maximum(sigma, tiny)
    s0 = np.float64(np.min(sigma))
    weights = (s0 / sigma) ** 2
    total = np.sum(weights)
    if exposures == 1:
        exposure = np.max(t)
        mean = np.sum(weights * y) / total
        return float(mean / exposure), float(s0 / np.sqrt(total) / exposure), 0.0, 0.0, 0.0
    centre = np.sum(weights * t) / total  # the line through the weighted centre: no cancellation
    spread = np.sum(weights * (t - centre) ** 2)
    rate = np.sum(weights * (t - centre) * y) / spread
    offset = np.sum(weights * y) / total - rate * centre
    chi2 = np.sum(weights * ((y - rate * t - offset) / s0) ** 2)
    error = s0 / np.sqrt(spread)
    offset_error = s0 * np.sqrt(1.0 / total + centre**2 / spread)
    return float(rate), float(error), float(offset), float(offset_error), float(chi2)
