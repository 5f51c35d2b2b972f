"""A step of a light's calibration as ``calibrations.steps`` records it: the master steps (bias, dark,
flat), their statuses, and the catalog facts of the master a step applies.

Every other part of ``ccdcal process`` speaks these words: matching decides each step
(:mod:`ccdcal.lights.matching`), planning compares them with a light's last calibration, the coordinator
records them, the report shows them (see docs/design.md, Grouping and matching).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from ccdcal.catalog.models import Master

#: The calibration steps, in the order they are matched and applied.
ROLES = ("bias", "dark", "flat")

#: Step statuses recorded in ``calibrations.steps`` (``missing`` leaves the light uncalibrated).
APPLIED, NOT_AVAILABLE, SKIPPED, ALLOWED_MISSING, MISSING = (
    "applied",
    "not_available",
    "skipped",
    "allowed_missing",
    "missing",
)


@dataclass(frozen=True)
class MasterInfo:
    """What calibration needs of a ``masters`` row (a plain, picklable copy)."""

    id: int
    kind: str
    path: str
    sha256: str
    version: int
    status: str
    is_bad: bool
    exptime: float | None
    filter: str | None
    ccd_temp_mean: float | None
    date_obs_mean: dt.datetime | None
    includes_bias: bool
    naxis1: int | None
    naxis2: int | None
    #: The other camera keys (a pinned master must share them with the light).
    instrument: str | None = None
    xbinning: int | None = None
    ybinning: int | None = None
    gain: float | None = None
    offset: float | None = None
    readout_mode: str | None = None
    #: The dates of the lights it may serve (``certify``, ``decertify``).
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None

    @classmethod
    def of(cls, master: Master) -> MasterInfo:
        """Copy the row's values."""
        return cls(
            id=master.id,
            kind=master.kind,
            path=master.path,
            sha256=master.sha256,
            version=master.version,
            status=master.status,
            is_bad=master.is_bad,
            exptime=master.exptime,
            filter=master.filter,
            ccd_temp_mean=master.ccd_temp_mean,
            date_obs_mean=master.date_obs_mean,
            includes_bias=master.includes_bias,
            naxis1=master.naxis1,
            naxis2=master.naxis2,
            instrument=master.instrument,
            xbinning=master.xbinning,
            ybinning=master.ybinning,
            gain=master.gain,
            offset=master.offset,
            readout_mode=master.readout_mode,
            valid_from=master.valid_from,
            valid_to=master.valid_to,
        )

    @cached_property
    def name(self) -> str:
        """The file name."""
        return Path(self.path).name


#: How a step that is not applied shows in summaries.
STEP_LABELS = {
    NOT_AVAILABLE: "n/a",
    SKIPPED: "skipped",
    ALLOWED_MISSING: "missing (allowed)",
    MISSING: "missing",
}


@dataclass(slots=True)
class Step:
    """One step of one light's calibration: what was decided and why."""

    role: str
    status: str
    reason: str
    master: MasterInfo | None = None
    delta_temp: float | None = None
    delta_time: float | None = None
    scale: float | None = None
    pinned: bool = False

    def as_json(self) -> dict[str, Any]:
        """The step as stored in ``calibrations.steps``."""
        data: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.master is not None:
            data |= {
                "master_id": self.master.id,
                "path": self.master.path,
                "sha256": self.master.sha256,
                "delta_temp": self.delta_temp,
                "delta_time": self.delta_time,
                "scale": self.scale,
                "pinned": self.pinned,
            }
        return data


class MatchedStep(Step):
    """An applied step chosen by the matching rules, whose reason — the numbers behind the match,
    ``nearest match: ΔT +0.12 °C, Δt -1.50 h`` — is written when first read: a plan of 100,000 lights
    shows few of them, or none. Otherwise a :class:`Step` (same fields, equality and JSON)."""

    __slots__ = ("_note", "_reason")

    def __init__(
        self,
        role: str,
        status: str = APPLIED,
        reason: str | None = None,
        master: MasterInfo | None = None,
        delta_temp: float | None = None,
        delta_time: float | None = None,
        scale: float | None = None,
        pinned: bool = False,
        note: str = "",
    ) -> None:
        self.role, self.status, self._reason, self.master = role, status, reason, master
        self._note = note
        self.delta_temp, self.delta_time, self.scale, self.pinned = delta_temp, delta_time, scale, pinned

    @property
    def reason(self) -> str:
        """The step's reason (see the class docstring)."""
        if self._reason is None:
            self._reason = matched_text(self.delta_temp, self.delta_time, self.scale) + self._note
        return self._reason

    @reason.setter
    def reason(self, value: str) -> None:
        self._reason = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(Step))

    __hash__ = None  # type: ignore[assignment]  # mutable, as a Step


def matched_text(delta_temp: float | None, delta_time: float | None, scale: float | None) -> str:
    """``nearest match: ΔT +0.12 °C, Δt -1.50 h, scaled x2``: the numbers behind an applied step."""
    parts = []
    if delta_temp is not None:
        parts.append(f"ΔT {delta_temp:+.2f} °C")
    if delta_time is not None:
        parts.append(f"Δt {delta_time / 3600:+.2f} h")
    if scale is not None and scale != 1.0:
        parts.append(f"scaled x{scale:.6g}")
    return "nearest match" + (f": {', '.join(parts)}" if parts else "")
