"""Uncertainty: each pixel's standard deviation, created from gain and read noise and propagated as
ccdproc and astropy's NDData arithmetic propagate a ``StdDevUncertainty``.

- A light's own deviation (``ccdproc.create_deviation(..., disregard_nan=True)``), in ADU::

      sigma_raw = sqrt(max(gain * signal, 0) + readnoise**2) / gain

  where ``signal`` is the light after overscan and trim, minus the master bias when one is subtracted
  (so that the bias level of a camera without overscan is not counted as photons).
- Subtracting the master bias and the scaled master dark (``subtract_bias``, ``subtract_dark``)::

      sigma = sqrt(sigma_raw**2 + sigma_bias**2 + (scale * sigma_dark)**2)

- Dividing by the clamped flat ``B`` (``flat_correct``; astropy's division formula, correlation 0), the
  numerator ``A`` being the light after bias and dark::

      sigma = sqrt(|B**2 * sigma_A**2| + |A**2 * sigma_B**2|) / B**2

- A master's uncertainty is its combine's, as ``ccdproc.Combiner.median_combine`` computes it: the median
  absolute deviation of the samples kept by the clipping, times 1.482602218505602, divided by the square
  root of their number; the combine kernel computes it in the same pass as the median
  (:mod:`ccdcal.kernels.combine`), and a master flat's is divided by the same median as its pixels.
  :func:`uncertainty_hdu` is the extension every master is written with.

A master without an uncertainty (one written by a ccdcal before every master carried one) contributes
none (NDData arithmetic with one operand's uncertainty).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Keywords holding the gain in electrons per ADU, in order of preference.
EGAIN_KEYS = ("EGAIN", "E-GAIN", "AGAIN_01")
#: Every keyword the gain may be read from: :data:`EGAIN_KEYS`, then ``GAIN`` in the IRAF GAIN/RDNOISE
#: pair only (:func:`noise_model`): N.I.N.A., SharpCap and the other CMOS capture programs write their
#: camera's gain *setting* there (120, 200 ...), which is no number of electrons.
GAIN_KEYS = (*EGAIN_KEYS, "GAIN")
#: Keywords holding the read noise in electrons.
READNOISE_KEYS = ("RDNOISE", "READNOIS", "RDNOIS", "RON", "ARDNS_01")
#: Keywords naming the program that wrote a file.
SOFTWARE_KEYS = ("SWCREATE", "CREATOR", "PROGRAM")
#: Every keyword :func:`noise_model` reads.
NOISE_KEYS = (*GAIN_KEYS, *READNOISE_KEYS, *SOFTWARE_KEYS)
#: Capture programs whose ``GAIN`` is the camera's gain setting, never e-/ADU (matched in
#: :data:`SOFTWARE_KEYS`, any case).
SETTING_GAIN_PROGRAMS = re.compile(
    r"N\.?I\.?N\.?A|SharpCap|ASIAIR|KStars|Ekos|\bINDI\b|FireCapture|Sequence Generator|SGPro|"
    r"Astro Photography Tool|\bAPT\b",
    re.IGNORECASE,
)

#: The extension the uncertainty is written to, and its type card (what ``CCDData.read`` reads).
UNCERT_EXTNAME = "UNCERT"
UNCERT_TYPE = "StdDevUncertainty"


@dataclass(frozen=True)
class NoiseModel:
    """A frame's gain (e-/ADU) and read noise (e-), each with where it came from (keyword or option)."""

    gain: float
    gain_source: str
    readnoise: float
    readnoise_source: str

    def as_json(self) -> dict[str, Any]:
        """The record in ``calibrations.steps``."""
        return {
            "gain": self.gain,
            "gain_source": self.gain_source,
            "readnoise": self.readnoise,
            "readnoise_source": self.readnoise_source,
        }


def noise_model(
    values: Mapping[str, Any], gain: float | None = None, readnoise: float | None = None
) -> tuple[NoiseModel | None, str | None]:
    """The gain and read noise of a frame: the options first, else its header.

    The gain is the first of :data:`EGAIN_KEYS` present in the header. ``GAIN`` is read as e-/ADU only
    in the IRAF GAIN/RDNOISE pair: when no :data:`EGAIN_KEYS` card is present, a read-noise card is,
    and no capture program of :data:`SETTING_GAIN_PROGRAMS` wrote the file (their ``GAIN`` is the
    camera's gain setting). The read noise is the first of :data:`READNOISE_KEYS` present. A card that
    is present but not usable — text, NaN, an infinity, a gain of 0 or less, a negative read noise — is
    a reason naming the card: the next keyword is never read instead.

    Parameters
    ----------
    values : mapping
        Header values by keyword (numbers, or numeric strings; ``None`` for a card without a value).
    gain, readnoise : float, optional
        ``--gain`` (e-/ADU) and ``--readnoise`` (e-).

    Returns
    -------
    model : NoiseModel or None
    reason : str or None
        Why there is no model (which value is missing or unusable, and how to give it).
    """
    g_value, g_source, g_problem = (float(gain), "--gain", None) if gain is not None else _gain_card(values)
    rn_value, rn_source, rn_problem = (
        (float(readnoise), "--readnoise", None)
        if readnoise is not None
        else _card(values, READNOISE_KEYS, _READNOISE)
    )
    problems = [p for p in (g_problem, rn_problem) if p is not None]
    if g_value is None or g_source is None or rn_value is None or rn_source is None:
        return None, "--uncertainty needs " + "; and ".join(problems)
    return NoiseModel(g_value, g_source, rn_value, rn_source), None


#: What a usable value is: (test, what the reason says it must be, the option to pass instead).
_GAIN = (lambda x: x > 0, "a positive number of e-/ADU", "--gain")
_READNOISE = (lambda x: x >= 0, "a number of e- (0 or more)", "--readnoise")


def _gain_card(values: Mapping[str, Any]) -> tuple[float | None, str | None, str | None]:
    """The gain from the header: (value, keyword, None), or (None, keyword or None, the reason)."""
    if any(key in values for key in EGAIN_KEYS):
        return _card(values, EGAIN_KEYS, _GAIN)
    software = " ".join(str(values[k]) for k in SOFTWARE_KEYS if values.get(k) is not None)
    iraf_pair = any(key in values for key in READNOISE_KEYS) and not SETTING_GAIN_PROGRAMS.search(software)
    if iraf_pair and "GAIN" in values:
        return _card(values, ("GAIN",), _GAIN)
    return None, None, f"the gain in e-/ADU ({', '.join(EGAIN_KEYS)}, or GAIN with RDNOISE): pass --gain"


def _card(
    values: Mapping[str, Any], keys: Sequence[str], rule: tuple[Callable[[float], bool], str, str]
) -> tuple[float | None, str | None, str | None]:
    """The first of ``keys`` present: (value, keyword, None) when usable by ``rule``, else (None, keyword,
    the reason); (None, None, the reason) when none is present."""
    usable, wanted, option = rule
    for key in keys:
        if key in values:
            number = _number(values[key])
            if number is not None and usable(number):
                return number, key, None
            return None, key, f"a usable {key}: {key} = {_shown(values[key])} is not {wanted}; pass {option}"
    what = "the gain in e-/ADU" if option == "--gain" else "the read noise in e-"
    return None, None, f"{what} ({', '.join(keys)}): pass {option}"


def _shown(value: Any) -> str:
    """A header value as a reason shows it: text quoted, numbers as written."""
    return "no value" if value is None else (repr(value) if isinstance(value, str) else f"{value}")


def _number(value: Any) -> float | None:
    """The finite number a header value holds (a numeric string too), else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


# -- a light --------------------------------------------------------------------------------------------


def deviation(signal: np.ndarray, gain: float, readnoise: float) -> np.ndarray:
    """``ccdproc.create_deviation(signal, gain, readnoise, disregard_nan=True)``: float64, in ADU."""
    electrons = gain * np.asarray(signal, dtype=np.float64)
    electrons[electrons < 0] = 0.0
    result: np.ndarray = np.sqrt(electrons + readnoise**2) / gain
    return result


def propagate(
    raw_sigma: np.ndarray,
    numerator: np.ndarray,
    *,
    bias_sigma: np.ndarray | None = None,
    dark_sigma: np.ndarray | None = None,
    dark_scale: float = 1.0,
    flat: np.ndarray | None = None,
    flat_sigma: np.ndarray | None = None,
) -> np.ndarray:
    """The calibrated light's standard deviation (float64), see the module docstring.

    Parameters
    ----------
    raw_sigma : numpy.ndarray
        :func:`deviation` of the light.
    numerator : numpy.ndarray
        The light minus bias and scaled dark (float64): ``A`` of the division.
    bias_sigma, dark_sigma : numpy.ndarray, optional
        The masters' uncertainties (``None``: the step is not applied, or its master has none).
    dark_scale : float
        ``t_light / t_dark``.
    flat : numpy.ndarray, optional
        The clamped flat divided by (``None``: no flat step).
    flat_sigma : numpy.ndarray, optional
        Its uncertainty.
    """
    variance = np.square(raw_sigma, dtype=np.float64)
    if bias_sigma is not None:
        variance += np.square(bias_sigma, dtype=np.float64)
    if dark_sigma is not None:
        variance += np.square(np.float64(dark_scale) * np.asarray(dark_sigma, dtype=np.float64))
    if flat is None:
        result: np.ndarray = np.sqrt(variance)
        return result
    b2 = np.square(flat, dtype=np.float64)
    top = np.abs(b2 * variance)
    if flat_sigma is not None:
        top += np.abs(np.square(numerator, dtype=np.float64) * np.square(flat_sigma, dtype=np.float64))
    result = np.sqrt(top) / b2
    return result


def uncertainty_hdu(sigma: np.ndarray) -> Any:
    """An ``UNCERT`` image extension (float32) as ``CCDData.write`` writes it (``UTYPE``)."""
    # Imported here for start-up time: the planners read this module's noise model without astropy.
    from astropy.io import fits

    header = fits.Header()
    header["UTYPE"] = (UNCERT_TYPE, "uncertainty type (astropy CCDData)")
    return fits.ImageHDU(np.asarray(sigma, dtype=np.float32), header, name=UNCERT_EXTNAME)
