"""Saturation: the level at or above which a raw sample is saturated, and the samples that reach it.

A frame's level is the first found of (docs/design.md, Science):

1. ``--saturation ADU`` (``saturation`` of config.ini), the same for every frame;
2. its header: the first of :data:`SATURATION_KEYS` whose value is a positive number (a card present but
   unusable, such as SOAR's ``SATURATE = 'unavail'``, is noted and the next source tried);
3. a level measured from the frames of its camera set-up, where one is stored: the ``measured`` argument
   of :func:`resolve_saturation`. Nothing measures or stores one yet (the ``detector_params`` table is
   planned), so no caller passes it;
4. the largest value its raw data type holds after BZERO and BSCALE (:func:`data_type_level`): 65535 for
   16-bit data stored with BZERO 32768; none for floating-point data.

The level is in the raw frame's physical ADU (after BZERO and BSCALE), and a sample is saturated when it
is at or above it (:func:`saturated`): compared before any bias, dark or overscan is subtracted.
Saturated samples are flagged in bit 8 of a calibrated light's MASK and left out of every master's
combine (as non-finite samples are). A master's inputs get their levels from the catalog's
``header_cards`` (the header as ingested) when the group is planned; a light gets its own from the raw
header its worker reads (:func:`ccdcal.lights.history.light_saturation`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Header keywords that give a frame's saturation level, in the order they are read.
SATURATION_KEYS = ("SATURATE", "DATAMAX", "MAXLIN")
#: The keywords of the raw data type: the largest raw value and its scaling.
SCALING_KEYS = ("BITPIX", "BZERO", "BSCALE")
#: Every keyword :func:`resolve_saturation` reads.
HEADER_KEYS = SATURATION_KEYS + SCALING_KEYS

#: Where a level came from: the option, a measured level, the data type, or nowhere.
OPTION, MEASURED, DATA_TYPE, NONE = "--saturation", "measured", "data type", "none"
#: The sources not read from the frame's own bytes: a master's identity records their levels (a level
#: from the header or the data type is fixed by the inputs' sha256, already part of it).
EXTERNAL_SOURCES = frozenset({OPTION, MEASURED})

#: The MASK bit of a sample saturated in the raw frame.
SATURATED_BIT = 8

#: The largest raw integer of each integer BITPIX.
_RAW_MAX = {8: 255, 16: 32767, 32: 2147483647, 64: 9223372036854775807}


@dataclass(frozen=True)
class Saturation:
    """A frame's saturation level and where it came from.

    Attributes
    ----------
    level : float or None
        Raw samples at or above it are saturated (``None``: no level is known; nothing is flagged).
    source : str
        ``--saturation``, the header keyword (``SATURATE`` ...), ``measured``, ``data type`` or ``none``.
    detail : str
        What else a reader should know: the data type a level was derived from (``BITPIX 16, BZERO
        32768``), header cards present but unusable.
    option : float or None
        ``--saturation`` as given (whatever the source of this level: what planning compares).
    """

    level: float | None
    source: str
    detail: str = ""
    option: float | None = None

    @property
    def external(self) -> bool:
        """Whether the level comes from outside the frame's bytes (:data:`EXTERNAL_SOURCES`)."""
        return self.source in EXTERNAL_SOURCES

    def as_json(self) -> dict[str, Any]:
        """The record of ``calibrations.steps.saturation`` and of a master's inputs."""
        return {"level": self.level, "source": self.source, "detail": self.detail, "option": self.option}

    def describe(self) -> str:
        """The level for HISTORY and messages: ``65535 ADU (data type: BITPIX 16, BZERO 32768)``."""
        if self.level is None:
            return f"none ({self.detail})" if self.detail else "none"
        where = f"{self.source}: {self.detail}" if self.detail else self.source
        return f"{self.level:.10g} ADU ({where})"


#: The level of a frame when nothing is known (a float frame without cards, and no option).
NO_SATURATION = Saturation(None, NONE)


def data_type_level(bitpix: object, bzero: object = 0.0, bscale: object = 1.0) -> float | None:
    """The largest physical value a raw data type holds: the largest raw integer of ``bitpix`` scaled by
    BSCALE and BZERO as astropy scales it (in float32 for BITPIX 8 and 16, else in float64), so that it
    equals the value a sample at the top of the range reads as.

    ``None`` for floating-point data (BITPIX -32, -64), an unknown BITPIX, or a scaling that is not a
    finite number with a positive BSCALE (the largest raw value would not be the largest physical one).
    """
    bits = _number(bitpix)
    zero = 0.0 if bzero is None else _number(bzero)
    scale = 1.0 if bscale is None else _number(bscale)
    if bits is None or zero is None or scale is None or scale <= 0 or int(bits) != bits:
        return None
    top = _RAW_MAX.get(int(bits))
    if top is None:
        return None
    if int(bits) in (8, 16):  # astropy's float32 scaling of these (ccdcal.kernels.clipkernel does the same)
        return float(np.float32(top) * np.float32(scale) + np.float32(zero))
    return float(top) * scale + zero


def resolve_saturation(
    cards: Mapping[str, Any], option: float | None = None, measured: float | None = None
) -> Saturation:
    """A frame's saturation level, first found of the option, the header, a measured level and the data
    type (see the module docstring).

    Parameters
    ----------
    cards : mapping
        The frame's header values of :data:`HEADER_KEYS` (``header_cards`` values: numbers, or texts).
    option : float, optional
        ``--saturation``.
    measured : float, optional
        A level measured from the frames of the camera set-up (none is stored yet: callers pass none).

    Returns
    -------
    Saturation
        The level, its source and the details; :data:`NO_SATURATION`'s level when none is found.
    """
    if option is not None:
        return Saturation(float(option), OPTION, option=float(option))
    unusable: list[str] = []
    for key in SATURATION_KEYS:
        if key not in cards or cards[key] is None:
            continue
        value = _number(cards[key])
        if value is not None and value > 0:
            return Saturation(value, key, "; ".join(unusable))
        unusable.append(f"{key} = {cards[key]!r} is not a positive number: not used")
    if measured is not None:
        return Saturation(float(measured), MEASURED, "; ".join(unusable))
    bitpix, bzero, bscale = (cards.get(k) for k in SCALING_KEYS)
    level = data_type_level(bitpix, bzero, bscale)
    described = _data_type(bitpix, bzero, bscale)
    if level is None:
        why = f"{described}: no data-type maximum" if bitpix is not None else "no BITPIX"
        return Saturation(None, NONE, "; ".join([*unusable, why]))
    return Saturation(level, DATA_TYPE, "; ".join([described, *unusable]))


def saturated(values: np.ndarray, level: float | None) -> np.ndarray:
    """Where raw ``values`` are at or above ``level`` (all false when ``level`` is ``None``)."""
    if level is None:
        return np.zeros(np.shape(values), dtype=bool)
    return np.asarray(values) >= level


def _number(value: object) -> float | None:
    """A finite number from a card's value (a number, or a text that reads as one); else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _data_type(bitpix: object, bzero: object, bscale: object) -> str:
    """``BITPIX 16, BZERO 32768`` (BSCALE shown when not 1)."""
    parts = [f"BITPIX {_shown(bitpix)}"]
    if bzero not in (None, 0, 0.0):
        parts.append(f"BZERO {_shown(bzero)}")
    if bscale not in (None, 1, 1.0):
        parts.append(f"BSCALE {_shown(bscale)}")
    return ", ".join(parts)


def _shown(value: object) -> str:
    number = _number(value)
    return f"{number:.10g}" if number is not None else repr(value)
