"""Flat: pre-calibrated frames divided by their own median, combined, and the master normalised to median 1.

A master flat is built as (docs/design.md, Science)::

    flat_i' = (flat_i − bias − dark × t_i / t_dark) / median(flat_i − bias − dark × t_i / t_dark)
    master  = combine(flat_1' … flat_n') / median(combine(…))

:func:`precalibration_offset` gives the subtracted part, :func:`flat_level` the per-frame median, and
:func:`normalise_to_median` the last division; the combine itself is :mod:`ccdcal.kernels.combine`.
"""

from __future__ import annotations

import numpy as np


def finite_median(image: np.ndarray) -> float:
    """The median of an image's finite pixels, as ``numpy.median`` of them
    (:func:`ccdcal.kernels.select.finite_median`, without copying them).

    Parameters
    ----------
    image : numpy.ndarray
        Any array.

    Returns
    -------
    float
        The median, NaN when no pixel is finite.
    """
    # Imported here for start-up time: the planners import this module without numba.
    from ccdcal.kernels.select import finite_median as median

    return median(np.asarray(image))


def flat_level(frame: np.ndarray, offset: np.ndarray | float = 0.0, saturation: float | None = None) -> float:
    """The level a flat is divided by before combining: ``median(frame − offset)`` over its finite
    pixels that are not saturated (as they are left out of the combine).

    Parameters
    ----------
    frame : numpy.ndarray
        A raw flat as astropy scales it, of any real dtype (or one prepared with its saturated pixels
        already NaN); the subtraction is done in float64.
    offset : numpy.ndarray or float
        What pre-calibration subtracts (see :func:`precalibration_offset`).
    saturation : float, optional
        The flat's saturation level (:mod:`ccdcal.kernels.saturation`): pixels at or above it are left out.

    Returns
    -------
    float
        The level (in float64).

    Raises
    ------
    ValueError
        When the level is not a finite positive number (an empty or negative "flat"), or when most
        pixels sit at the frame's maximum or are saturated (a saturated "flat").
    """
    values = np.subtract(frame, offset, dtype=np.float64)
    if saturation is not None:
        saturated = np.asarray(frame) >= saturation
        fraction = int(np.count_nonzero(saturated)) / max(np.size(frame), 1)
        if fraction > 0.5:
            raise ValueError(f"{fraction:.0%} of its pixels are saturated (at or above {saturation:g})")
        values[saturated] = np.nan
    level = finite_median(values)
    if not (np.isfinite(level) and level > 0):
        raise ValueError(f"its level after bias/dark subtraction is {level}, not a flat")
    peak = np.max(frame)
    at_peak = int(np.count_nonzero(frame == peak))
    if at_peak > np.size(frame) // 2:
        share = at_peak / np.size(frame)
        raise ValueError(f"{share:.0%} of its pixels are at its maximum, {peak:g}: saturated")
    return level


def normalise_to_median(image: np.ndarray) -> tuple[np.ndarray, float]:
    """``image / median(image)`` as float32, and the median divided by.

    Parameters
    ----------
    image : numpy.ndarray
        A combined flat.

    Returns
    -------
    normalised : numpy.ndarray
        float32 image of median 1 (computed in float64, then rounded).
    median : float
        The median of the finite pixels of ``image``.

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
    """What is subtracted from a raw flat before normalising: ``bias + dark × dark_scale`` (float64).

    Parameters
    ----------
    bias : numpy.ndarray or None
        Master bias (``None``: not subtracted).
    dark : numpy.ndarray or None
        Master dark, bias subtracted unless ``bias`` is ``None`` (``None``: not subtracted).
    dark_scale : float
        ``t_flat / t_dark`` (1 for a dark at the flat's exposure).

    Returns
    -------
    numpy.ndarray or float
        The offset image, or 0.0 when neither part is given.
    """
    offset: np.ndarray | float = 0.0
    if bias is not None:
        offset = np.asarray(bias, dtype=np.float64)
    if dark is not None:
        offset = offset + np.asarray(dark, dtype=np.float64) * dark_scale
    return offset
