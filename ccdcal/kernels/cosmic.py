"""Cosmic rays: L.A.Cosmic (van Dokkum 2001) through ``ccdproc.cosmicray_lacosmic`` (astroscrappy).

Run on the calibrated light, in ADU (``gain_apply=False``), with the pixels already flagged (flat below
``flat_min``, bad pixels) given as the input mask so that a hot pixel is not taken for a cosmic ray.
The pixels it flags are replaced by its cleaned values (``cleantype``, by default the mean of the
unflagged neighbours) and flagged in the output's MASK.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ccdcal.errors import UsageError
from ccdcal.limits import CR_OBJLIM, CR_SIGCLIP

#: ccdproc's defaults for the gain (e-/ADU) and read noise (e-) when the frame's are unknown.
DEFAULT_GAIN, DEFAULT_READNOISE = 1.0, 6.5


@dataclass(frozen=True)
class CosmicParams:
    """L.A.Cosmic parameters (``ccdproc.cosmicray_lacosmic``'s names and defaults).

    Attributes
    ----------
    sigclip : float
        Laplacian-to-noise limit for detection (lower flags more; ``--cr-sigclip``, 0 < x <= 100).
    sigfrac : float
        Fraction of ``sigclip`` for the neighbouring pixels.
    objlim : float
        Contrast limit between a cosmic ray and an underlying object (``--cr-objlim``, 0 < x <= 100).
    niter : int
        Iterations.
    satlevel : float
        Level (ADU) above which stars are saturated and kept.
    cleantype : str
        How flagged pixels are replaced (``meanmask``, ``medmask``, ``median``, ``idw``).
    """

    sigclip: float = 4.5
    sigfrac: float = 0.3
    objlim: float = 5.0
    niter: int = 4
    satlevel: float = 65535.0
    cleantype: str = "meanmask"

    def __post_init__(self) -> None:
        CR_SIGCLIP.check(self.sigclip)
        CR_OBJLIM.check(self.objlim)
        for name in ("sigfrac", "satlevel"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise UsageError(f"cosmic-ray {name} must be a positive number, not {value!r}")
        if not (isinstance(self.niter, int) and self.niter >= 1):
            raise UsageError(f"cosmic-ray niter must be an integer of at least 1, not {self.niter!r}")
        if self.cleantype not in ("meanmask", "medmask", "median", "idw"):
            raise UsageError(f"cosmic-ray cleantype {self.cleantype!r}: use meanmask, medmask, median or idw")

    def as_json(self) -> dict[str, Any]:
        """The parameters as recorded."""
        return asdict(self)


def clean_cosmic_rays(
    image: np.ndarray,
    flagged: np.ndarray | None,
    params: CosmicParams,
    gain: float = DEFAULT_GAIN,
    readnoise: float = DEFAULT_READNOISE,
) -> tuple[np.ndarray, np.ndarray]:
    """Detect and clean cosmic rays in a calibrated image.

    Parameters
    ----------
    image : numpy.ndarray
        The calibrated light (ADU).
    flagged : numpy.ndarray or None
        Pixels already flagged (ignored by the detection).
    params : CosmicParams
        L.A.Cosmic parameters.
    gain, readnoise : float
        e-/ADU and e-.

    Returns
    -------
    cleaned : numpy.ndarray
        float32 image with the cosmic-ray pixels replaced.
    cosmic : numpy.ndarray
        bool, True on the pixels flagged as cosmic rays.
    """
    # Imported here to keep start-up fast: ccdproc loads only when cosmic rays are cleaned (--cosmic-rays).
    import ccdproc
    from astropy.nddata import CCDData

    mask = None if flagged is None else np.asarray(flagged, dtype=bool)
    data = CCDData(np.asarray(image, dtype=np.float32), unit="adu", mask=mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN pixels of a flat that is 0 somewhere
        result = ccdproc.cosmicray_lacosmic(
            data,
            sigclip=params.sigclip,
            sigfrac=params.sigfrac,
            objlim=params.objlim,
            gain=gain,
            readnoise=readnoise,
            satlevel=params.satlevel,
            niter=params.niter,
            cleantype=params.cleantype,
            gain_apply=False,
        )
    found = np.asarray(result.mask, dtype=bool)
    cosmic = found if mask is None else found & ~mask
    cleaned = np.asarray(image, dtype=np.float32).copy()
    cleaned[cosmic] = np.asarray(result.data, dtype=np.float32)[cosmic]
    return cleaned, cosmic
