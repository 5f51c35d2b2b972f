"""The JSON of a calibration, ``calibrations.steps``: its shapes, written down once here, and the readers
every part of ccdcal reads it with.

``calibrations.steps`` is one object (:class:`CalibrationSteps`). Most of its entries are records of
steps: the master steps ``bias``, ``dark`` and ``flat`` and the bad-pixel mask ``bpm``
(:class:`StepRecord`: the plan's :meth:`ccdcal.lights.steps.Step.as_json`, completed by the coordinator
and the worker), the light's saturation level (:class:`SaturationRecord`), and the optional steps
``overscan``, ``uncertainty`` and ``cosmic_rays``
(:class:`OverscanRecord`, :class:`UncertaintyRecord`, :class:`CosmicRecord`: written by the worker,
``applied``, or ``planned`` for an attempt that failed). Two entries are not records: ``warnings``, a list
of texts (a light whose level is far below its master bias), and ``mask``, the pixels the output's MASK
flags (:class:`MaskCounts`). So a reader never walks the object as if every entry were a step: it takes the
records with :func:`step_records`, the warnings with :func:`step_warnings`, the counts with
:func:`mask_of`, and a record's values with :func:`text_of`, :func:`number_of` and :func:`count_of`.

Every reader accepts any JSON value — a row written by an older ccdcal, or edited by hand — and leaves out
what it does not recognise; ``tests/robustness/test_json_records.py`` holds the readers to that, and the
writers to these shapes.

The worker imports this module (it writes :class:`StepDetails`): nothing here touches the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypedDict


class StepRecord(TypedDict, total=False):
    """A master step (``bias``, ``dark``, ``flat``) or the bad-pixel mask (``bpm``).

    ``status`` is ``applied``, ``not_available``, ``skipped`` or ``allowed_missing``; an applied step names
    its master and the numbers of the match; a divided flat adds ``flat_min``, ``masked`` and
    ``norm_value``, and ``flat_low`` with the pixels below it (``low``); the mask adds the pixels it
    ``flagged``.
    """

    status: str
    reason: str
    master_id: int
    path: str
    sha256: str
    delta_temp: float | None
    delta_time: float | None
    scale: float | None
    pinned: bool
    flat_min: float
    masked: int
    norm_value: float
    flat_low: float
    low: int
    flagged: int


class SaturationRecord(TypedDict, total=False):
    """The light's saturation level (:class:`ccdcal.kernels.saturation.Saturation`): ``applied`` with the
    ``level``, its ``source`` and ``detail``, the ``--saturation`` given (``option``) and the raw pixels at
    or above it (``flagged``, MASK bit 8); ``not_available`` with the ``reason`` when no level is known
    (``planned`` for an attempt that failed)."""

    status: str
    reason: str
    level: float | None
    source: str
    detail: str
    option: float | None
    flagged: int


class OverscanRecord(TypedDict, total=False):
    """Overscan subtraction and trim: ``--overscan`` and the plan resolved from the header; once applied,
    the axis of the strip and the level subtracted (``None`` when not finite)."""

    status: str
    mode: str
    method: str
    biassec: str | None
    trimsec: str | None
    axis: int | None
    level: float | None


class UncertaintyRecord(TypedDict, total=False):
    """The UNCERT extension: gain and read noise with where each came from; once applied, which masters
    carried an uncertainty (by role)."""

    status: str
    gain: float
    gain_source: str
    readnoise: float
    readnoise_source: str
    masters: dict[str, bool]


class CosmicRecord(TypedDict, total=False):
    """L.A.Cosmic: its parameters, the gain and read noise used; once applied, the pixels cleaned."""

    status: str
    method: str
    sigclip: float
    sigfrac: float
    objlim: float
    niter: int
    satlevel: float
    cleantype: str
    gain: float | None
    readnoise: float | None
    noise_source: str
    cleaned: int


class MaskCounts(TypedDict):
    """The pixels the MASK extension flags: ``flagged`` in all (any bit), and ``bits``, each bit's
    count by its value as text (``"1"``, ``"2"``, ``"4"``, ``"8"``, ``"16"``)."""

    flagged: int
    bits: dict[str, int]


class StepDetails(TypedDict, total=False):
    """What a worker adds to ``calibrations.steps`` (:attr:`ccdcal.lights.task.FrameResult.details`)."""

    saturation: SaturationRecord
    overscan: OverscanRecord
    uncertainty: UncertaintyRecord
    cosmic_rays: CosmicRecord
    bpm: StepRecord
    warnings: list[str]
    mask: MaskCounts


class CalibrationSteps(StepDetails, total=False):
    """The whole of ``calibrations.steps``: the master steps' records and the worker's details."""

    bias: StepRecord
    dark: StepRecord
    flat: StepRecord


#: The entries of ``calibrations.steps`` that are not a step's record: the warnings, the MASK's counts.
WARNINGS = "warnings"
MASK = "mask"
_NOT_RECORDS = frozenset({WARNINGS, MASK})


def step_records(steps: object) -> dict[str, Mapping[str, object]]:
    """The records of the steps, by step, in their stored order: every entry of ``steps`` that is a JSON
    object (``warnings``, ``mask`` and anything else that is not a record, left out)."""
    if not isinstance(steps, Mapping):
        return {}
    return {
        str(key): record
        for key, record in steps.items()
        if key not in _NOT_RECORDS and isinstance(record, Mapping)
    }


def mask_of(steps: object) -> MaskCounts | None:
    """The MASK's counts recorded with a calibration (``None`` when absent or not of their shape: a
    calibration made before they were recorded)."""
    found = steps.get(MASK) if isinstance(steps, Mapping) else None
    if not isinstance(found, Mapping):
        return None
    flagged, bits = found.get("flagged"), found.get("bits")
    if isinstance(flagged, bool) or not isinstance(flagged, int) or not isinstance(bits, Mapping):
        return None
    counts = {str(k): v for k, v in bits.items() if isinstance(v, int) and not isinstance(v, bool)}
    return {"flagged": flagged, "bits": counts}


def step_warnings(steps: object) -> list[str]:
    """The warnings recorded with a calibration (texts; any other entry of the list left out)."""
    found = steps.get(WARNINGS) if isinstance(steps, Mapping) else None
    if isinstance(found, str):
        return [found]
    return [item for item in found if isinstance(item, str)] if isinstance(found, list) else []


def text_of(record: Mapping[str, object], key: str) -> str | None:
    """A text value of a record (``None`` when absent or not a text)."""
    value = record.get(key)
    return value if isinstance(value, str) else None


def number_of(record: Mapping[str, object], key: str) -> float | None:
    """A finite number of a record (``None`` when absent, not a number — a boolean is not one — or not
    finite)."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a whole number beyond any float
        return None
    return number if math.isfinite(number) else None


def count_of(record: Mapping[str, object], key: str) -> int | None:
    """A whole number of a record (``None`` when absent or not a whole number)."""
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
