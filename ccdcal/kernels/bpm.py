"""Bad-pixel masks: hot pixels from a master dark, dead and deviant pixels from a master flat.

- Hot pixels (:func:`hot_pixels`): the dark current of a pixel above the master dark's median by more
  than ``hot_sigma`` times its robust dispersion (``astropy.stats.mad_std``), and pixels that are not
  finite.
- Flat defects (:func:`flat_defects`): ``ccdproc.ccdmask`` (the IRAF ``ccdmask`` method) on the
  normalised master flat: each pixel compared with the median of its ``nlmed`` × ``ncmed`` neighbours,
  flagged beyond ``lsigma`` below or ``hsigma`` above, the dispersion measured in ``nlsig`` × ``ncsig``
  blocks; dead and low-response pixels are the ones below.

The mask ccdcal stores is their union (uint8, 1 = bad).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ccdcal.errors import UsageError


@dataclass(frozen=True)
class BpmParams:
    """How bad pixels are found (recorded with the bpm master).

    Attributes
    ----------
    hot_sigma : float
        A dark pixel above median + ``hot_sigma`` × mad_std is hot.
    lsigma, hsigma : float
        ``ccdmask`` low and high thresholds (in its sigma) on the flat.
    ncmed, nlmed : int
        Columns and lines of the median filter.
    ncsig, nlsig : int
        Columns and lines of the blocks in which the dispersion is measured.
    byblocks : bool
        Measure the dispersion in blocks (IRAF's way, and much faster) rather than in a moving window.
    """

    hot_sigma: float = 5.0
    lsigma: float = 9.0
    hsigma: float = 9.0
    ncmed: int = 7
    nlmed: int = 7
    ncsig: int = 15
    nlsig: int = 15
    byblocks: bool = True

    def __post_init__(self) -> None:
        for name in ("hot_sigma", "lsigma", "hsigma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise UsageError(f"bad-pixel {name} must be a positive number, not {value!r}")
        for name in ("ncmed", "nlmed", "ncsig", "nlsig"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise UsageError(f"bad-pixel {name} must be a positive integer, not {value!r}")

    def as_json(self) -> dict[str, Any]:
        """The parameters as recorded."""
        return asdict(self)


def hot_pixels(dark: np.ndarray, hot_sigma: float = 5.0) -> np.ndarray:
    """Pixels of a master dark more than ``hot_sigma`` robust sigmas above its median, or not finite.

    Returns
    -------
    numpy.ndarray
        bool, of the dark's shape.
    """
    # Imported here to keep start-up fast: astropy.stats loads only when a bad-pixel mask is built.
    from astropy.stats import mad_std

    values = np.asarray(dark, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return ~finite
    median = float(np.median(values[finite]))
    sigma = float(mad_std(values[finite]))
    hot = np.zeros(values.shape, dtype=bool)
    np.greater(values, median + hot_sigma * sigma, out=hot, where=finite)
    result: np.ndarray = hot | ~finite
    return result


def flat_defects(flat: np.ndarray, params: BpmParams = BpmParams()) -> np.ndarray:
    """``ccdproc.ccdmask`` of a master flat (bool; non-finite pixels included)."""
    # Imported here to keep start-up fast: ccdproc loads only when a bad-pixel mask is built.
    import ccdproc
    from astropy.nddata import CCDData

    ratio = CCDData(np.asarray(flat, dtype=np.float64), unit="")
    mask = ccdproc.ccdmask(
        ratio,
        byblocks=params.byblocks,
        ncmed=params.ncmed,
        nlmed=params.nlmed,
        ncsig=params.ncsig,
        nlsig=params.nlsig,
        lsigma=params.lsigma,
        hsigma=params.hsigma,
    )
    result: np.ndarray = np.asarray(mask, dtype=bool)
    return result


def low_pixels(flat: np.ndarray, defects: np.ndarray) -> int:
    """How many of the flat's defects are below the flat's median (dead or low response)."""
    values = np.asarray(flat, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return int(defects.sum())
    median = float(np.median(values[finite]))
    return int(np.count_nonzero(defects & (~finite | (values < median))))
