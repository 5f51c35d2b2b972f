"""Quality numbers of master frames: their statistics, and how a new master differs from the previous one.

The gate (used by ``ccdcal masters``) compares a new master with the current master of its group, the
one it supersedes. With ``d = new − old`` and a robust noise ``σ`` (see :func:`compare_masters`):

- *level*: ``|median(d)| > QA_SHIFT_SIGMA × σ`` — the master's level moved by more than its pixel noise
  (a bias level that drifted, darks taken at another temperature, a light leak);
- *structure*: more than ``QA_OUTLIER_FRACTION`` of the pixels have ``|d − median(d)| > QA_OUTLIER_SIGMA × σ``
  — the pattern changed (dust that moved, a new hot column, a flat with a gradient).

Either one is a warning, not an error: the new master is still built and used.

A master's *level* (:func:`clipped_level`) is the sigma-clipped mean of its pixels with its standard
error: what the report's bias level and dark current are made of. The median of a master is no level:
the pixels of a master combined from integer frames take few values, and a median of them moves by
whole steps (0 → 0.5 ADU) when one input is dropped.

Before that, a master must have a value: one whose finite pixels are fewer than
``MIN_FINITE_FRACTION`` of the image (:func:`finite_fraction`; its inputs all NaN, or NaN over most of
the image) is not built at all — it would turn every light it calibrates into NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Level gate: a median difference beyond this many σ.
QA_SHIFT_SIGMA = 1.0
#: Structure gate: pixels beyond this many σ ...
QA_OUTLIER_SIGMA = 5.0
#: ... on more than this fraction of the image.
QA_OUTLIER_FRACTION = 0.01
#: A master is built only when at least this fraction of its pixels is finite: a pixel without a finite
#: sample in any input is NaN, and a master that is NaN over more than half the image calibrates nothing.
MIN_FINITE_FRACTION = 0.5


def finite_fraction(image: np.ndarray) -> float:
    """The fraction of an image's pixels that are finite.

    Parameters
    ----------
    image : numpy.ndarray
        A master frame.

    Returns
    -------
    float
        From 0 (every pixel NaN or infinite, or no pixel) to 1.
    """
    values = np.asarray(image)
    return float(np.count_nonzero(np.isfinite(values)) / values.size) if values.size else 0.0


def master_stats(image: np.ndarray) -> dict[str, float]:
    """Median, mean and standard deviation of an image's finite pixels.

    Parameters
    ----------
    image : numpy.ndarray
        A master frame.

    Returns
    -------
    dict
        ``median``, ``mean``, ``std`` (population), each NaN when no pixel is finite.
    """
    return describe_master(image)[0]


#: The clipping of :func:`clipped_level`: bounds median ∓ LEVEL_SIGMA × std, at most LEVEL_MAXITERS passes
#: (astropy's ``sigma_clipped_stats`` defaults).
LEVEL_SIGMA = 3.0
LEVEL_MAXITERS = 5


@dataclass(frozen=True)
class Level:
    """The level of an image: the sigma-clipped mean of its pixels.

    Attributes
    ----------
    mean : float
        Mean of the pixels the clipping kept.
    error : float
        Its standard error, ``std / sqrt(pixels)`` (0 with a single pixel kept).
    std : float
        Standard deviation (``ddof=1``) of the pixels kept.
    pixels : int
        How many pixels were kept.
    """

    mean: float
    error: float
    std: float
    pixels: int


def clipped_level(image: np.ndarray) -> Level | None:
    """The sigma-clipped mean of an image's finite pixels and its standard error.

    The pixels are clipped as ``astropy.stats.sigma_clipped_stats`` does by default (centre the median,
    dispersion the standard deviation, :data:`LEVEL_SIGMA` low and high, at most :data:`LEVEL_MAXITERS`
    passes), so hot pixels, cosmic-ray residues and dead columns do not move the level; the mean of what
    is kept is not quantised as the median of integer data is. The clipping is
    :func:`ccdcal.kernels.select.describe`'s: the same values kept, without copies.

    Parameters
    ----------
    image : numpy.ndarray
        A master frame (any shape).

    Returns
    -------
    Level or None
        ``None`` when no pixel is finite.
    """
    return describe_master(image)[1]


def describe_master(image: np.ndarray) -> tuple[dict[str, float], Level | None]:
    """:func:`master_stats` and :func:`clipped_level` of a master, from one description of its pixels.

    Parameters
    ----------
    image : numpy.ndarray
        A master frame.

    Returns
    -------
    tuple of (dict, Level or None)
        The statistics and the level.
    """
    # Imported here for start-up time: the planners read this module's constants without numba.
    from ccdcal.kernels.select import describe

    found = describe(image, LEVEL_SIGMA, LEVEL_MAXITERS)
    stats = {"median": found.median, "mean": found.mean, "std": found.std}
    if not found.count:
        return stats, None
    error = found.kept_std / float(np.sqrt(found.kept)) if found.kept else 0.0
    return stats, Level(found.kept_mean, error, found.kept_std, found.kept)


def pixel_noise(image: np.ndarray) -> float:
    """A robust estimate of an image's pixel-to-pixel noise: ``mad_std`` of row-to-row differences / √2.

    Differences of adjacent rows remove smooth structure (vignetting, gradients) and column patterns,
    so this measures the noise of single pixels; hot pixels and dust edges do not move a ``mad_std``.

    Parameters
    ----------
    image : numpy.ndarray
        A 2-D image.

    Returns
    -------
    float
        The noise (0 for an image with fewer than two rows or no finite differences).
    """
    # Imported here for start-up time (see describe_master).
    from ccdcal.kernels.select import mad_std

    values = np.asarray(image, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 2:
        return 0.0
    steps = np.diff(values, axis=0)
    if not np.isfinite(steps).any():
        return 0.0
    return float(mad_std(steps) / np.sqrt(2.0))


@dataclass(frozen=True)
class Comparison:
    """How a new master differs from the previous one of its group.

    Attributes
    ----------
    shift : float
        ``median(new − old)``.
    sigma : float
        The noise the differences are measured in (see :func:`compare_masters`).
    outlier_fraction : float
        Fraction of finite pixels with ``|new − old − shift| > QA_OUTLIER_SIGMA × sigma``.
    """

    shift: float
    sigma: float
    outlier_fraction: float

    @property
    def level_moved(self) -> bool:
        """The level gate: ``|shift| > QA_SHIFT_SIGMA × sigma``."""
        return abs(self.shift) > QA_SHIFT_SIGMA * self.sigma

    @property
    def structure_changed(self) -> bool:
        """The structure gate: ``outlier_fraction > QA_OUTLIER_FRACTION``."""
        return self.outlier_fraction > QA_OUTLIER_FRACTION


def compare_masters(new: np.ndarray, old: np.ndarray) -> Comparison | None:
    """Compare two versions of a master pixel by pixel.

    ``σ = max(mad_std(new − old), pixel_noise(new))``. The spread of the difference is the natural
    unit; the new master's own pixel noise is its floor, because two versions that share most of their
    inputs differ far less than either master's noise (and by quantised amounts when the raw frames are
    integers), which would otherwise turn ordinary changes into alarms.

    Parameters
    ----------
    new, old : numpy.ndarray
        Images of the same shape.

    Returns
    -------
    Comparison or None
        ``None`` when the shapes differ or no pixel is finite in both.
    """
    if np.shape(new) != np.shape(old):
        return None
    # Imported here for start-up time (see describe_master).
    from ccdcal.kernels.select import finite_median, mad_std

    difference = np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)
    finite = difference[np.isfinite(difference)]
    if not finite.size:
        return None
    shift = finite_median(finite)
    sigma = max(mad_std(finite), pixel_noise(new))
    if sigma > 0:
        outliers = float(np.mean(np.abs(finite - shift) > QA_OUTLIER_SIGMA * sigma))
    else:  # identical noiseless images: any differing pixel is an outlier
        outliers = float(np.mean(finite != shift))
    return Comparison(shift, float(sigma), outliers)
