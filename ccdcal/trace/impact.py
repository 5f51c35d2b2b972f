"""Bad frames and masters: ``ccdcal mark-bad``, ``mark-good`` and ``impact``.

Marking a raw frame or a master bad keeps it out of every future master and calibration:

- a raw frame leaves its group (:func:`ccdcal.catalog.queries.usable`), so the next build makes a new
  master version without it; until then its old master — and every dark or flat made with that master —
  is never chosen (:func:`ccdcal.catalog.queries.unusable_masters`);
- a master is never chosen again, nor the masters pre-calibrated with it; they are rebuilt with another
  calibrator when one matches.

The next ``ccdcal process`` then rebuilds the masters downstream and calibrates again every light whose
masters changed; the rows they replace become ``superseded``, with the reason in ``superseded_reason``.
:func:`impact` lists that downstream set beforehand, from the ``master_lineage`` and
``calibration_provenance`` views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.history import change
from ccdcal.catalog.models import Calibration, Frame, FrameQa, Master
from ccdcal.catalog.queries import calibrations_using, downstream_masters
from ccdcal.catalog.targets import Target, find_target
from ccdcal.errors import UsageError
from ccdcal.runtime.words import counted

_KIND_ORDER = {"bias": 0, "dark": 1, "flat": 2}


@dataclass(frozen=True)
class AffectedMaster:
    """A master downstream of the target."""

    id: int
    kind: str
    path: str
    status: str
    is_bad: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "status": self.status,
            "is_bad": self.is_bad,
        }


@dataclass(frozen=True)
class AffectedCalibration:
    """A calibrated output downstream of the target."""

    id: int
    light_id: int
    light_path: str
    path: str | None
    status: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "light_id": self.light_id,
            "light_path": self.light_path,
            "path": self.path,
            "status": self.status,
        }


@dataclass
class Impact:
    """Everything made from a raw frame or a master: masters (at any depth) and calibrated files.

    Attributes
    ----------
    target : Target
        The frame, master or calibration asked about.
    is_bad, bad_reason
        Whether the target is marked bad, and why.
    masters : list of AffectedMaster
        Masters made from it, directly or through a calibrator, every version (by kind, then id).
    calibrations : list of AffectedCalibration
        Calibrations that applied it or one of those masters (or, for a light, its calibrations), every
        status (by light, then id).
    """

    target: Target
    is_bad: bool = False
    bad_reason: str | None = None
    masters: list[AffectedMaster] = field(default_factory=list)
    calibrations: list[AffectedCalibration] = field(default_factory=list)

    def current_masters(self) -> list[AffectedMaster]:
        """The affected masters still in use (status ``current``): the next build replaces them."""
        return [m for m in self.masters if m.status == "current"]

    def current_calibrations(self) -> list[AffectedCalibration]:
        """The affected calibrations still current: the next process calibrates those lights again."""
        return [c for c in self.calibrations if c.status == "current"]

    def headline(self) -> str:
        """One line: what the target is and how much is downstream."""
        bad = f" (marked bad: {self.bad_reason})" if self.is_bad else ""
        return (
            f"{self.target.ref} {self.target.path}{bad}: {counted(len(self.masters), 'master')} "
            f"({len(self.current_masters())} current) and "
            f"{counted(len(self.calibrations), 'calibrated file')} "
            f"({len(self.current_calibrations())} current) downstream"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``ccdcal impact --json``)."""
        return {
            "target": {
                "ref": self.target.ref,
                "kind": self.target.kind,
                "id": self.target.id,
                "path": self.target.path,
                "is_bad": self.is_bad,
                "bad_reason": self.bad_reason,
            },
            "masters": [m.as_dict() for m in self.masters],
            "calibrations": [c.as_dict() for c in self.calibrations],
        }


def impact(catalog: Catalog, text: str) -> Impact:
    """Every master and calibrated file downstream of a raw frame or a master (``ccdcal impact``).

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    text : str
        A catalogued path or an id (``frame:3``, ``master:2``, ``calibration:9``; see
        :mod:`ccdcal.catalog.targets`). A calibrated file has nothing downstream.

    Returns
    -------
    Impact
        The target and what was made from it, current and superseded.
    """
    with catalog.reading() as session:
        return impact_of(session, find_target(session, text))


def impact_of(session: Session, target: Target) -> Impact:
    """:func:`impact` for a target already found, in an open session."""
    result = Impact(target)
    if target.kind == "calibration":
        return result
    row = _row(session, target)
    result.is_bad, result.bad_reason = row.is_bad, row.bad_reason
    if isinstance(row, Frame) and row.imagetyp == "light":
        calibration_ids = list(
            session.scalars(
                select(Calibration.id).where(Calibration.frame_id == row.id).order_by(Calibration.id)
            )
        )
        master_ids: list[int] = []
    else:
        if target.kind == "frame":
            master_ids = downstream_masters(session, frame_id=target.id)
            used = master_ids
        else:
            master_ids = downstream_masters(session, master_id=target.id)
            used = [target.id, *master_ids]
        calibration_ids = calibrations_using(session, used)
    if master_ids:
        masters = session.scalars(select(Master).where(Master.id.in_(master_ids))).all()
        result.masters = sorted(
            (AffectedMaster(m.id, m.kind, m.path, m.status, m.is_bad) for m in masters),
            key=lambda m: (_KIND_ORDER.get(m.kind, 9), m.id),
        )
    if calibration_ids:
        query = (
            select(Calibration, Frame.path)
            .join(Frame, Frame.id == Calibration.frame_id)
            .where(Calibration.id.in_(calibration_ids))
            .order_by(Frame.path, Calibration.id)
        )
        result.calibrations = [
            AffectedCalibration(c.id, c.frame_id, light_path, c.path, c.status)
            for c, light_path in session.execute(query)
        ]
    return result


def _row(session: Session, target: Target) -> Frame | Master:
    row = session.get(Frame, target.id) if target.kind == "frame" else session.get(Master, target.id)
    assert row is not None
    return row


@dataclass
class MarkResult:
    """What ``mark-bad`` or ``mark-good`` changed, and what is downstream of the row."""

    run_id: int
    target: Target
    was_bad: bool
    is_bad: bool
    reason: str | None
    impact: Impact
    #: ``mark-good`` of a frame the frame QA had set aside: the rule a person overrode (else ``None``).
    overrode: str | None = None

    @property
    def changed(self) -> bool:
        """Whether the mark changed (marking a bad row bad again only updates its reason; marking good a
        frame the frame QA set aside keeps it again)."""
        return self.was_bad != self.is_bad or self.overrode is not None

    def headline(self) -> str:
        """One line for the terminal."""
        if self.is_bad:
            verb = "marked bad" if self.changed else "already marked bad; reason updated"
        elif self.overrode is not None:
            verb = f"kept again (a person overrode the frame QA's {self.overrode} rule)"
        else:
            verb = "marked good" if self.changed else "was not marked bad"
        masters, calibrations = self.impact.current_masters(), self.impact.current_calibrations()
        line = f"{self.target.ref} {self.target.path}: {verb}"
        if self.changed and not self.is_bad:
            line += "; `ccdcal process` may use it again"
        elif self.changed and (masters or calibrations):
            line += (
                f"; {len(masters)} current masters and {len(calibrations)} current calibrated files "
                "downstream: `ccdcal process` rebuilds and recalibrates them"
            )
        return line

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run": self.run_id,
            "target": self.target.ref,
            "path": self.target.path,
            "was_bad": self.was_bad,
            "is_bad": self.is_bad,
            "reason": self.reason,
            "overrode": self.overrode,
            "impact": self.impact.as_dict(),
        }


def mark_bad(catalog: Catalog, text: str, reason: str) -> MarkResult:
    """Mark a raw frame or a master bad (``ccdcal mark-bad``): it is never used again until marked good.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    text : str
        A catalogued path or an id (``frame:N``, ``master:N``).
    reason : str
        Why (stored in ``bad_reason``; required).

    Raises
    ------
    UsageError
        The reason is empty, or the target is a calibrated file.
    """
    reason = reason.strip()
    if not reason:
        raise UsageError("--reason must say why the file is bad (it is kept in the catalog)")
    return _mark(catalog, text, True, reason, "mark-bad")


def mark_good(catalog: Catalog, text: str, reason: str | None = None) -> MarkResult:
    """Clear the bad mark of a raw frame or a master (``ccdcal mark-good``); ``reason`` goes to the run."""
    return _mark(catalog, text, False, reason, "mark-good")


def _override_frame_qa(session: Session, frame: Frame, reason: str | None, run_id: int) -> str | None:
    """Keep a frame the frame QA set aside (its content's newest ``frame_qa`` decision): a row ``kept``
    by ``person`` that overrides the rules until the file changes. The rule overridden, else ``None``."""
    newest = session.scalars(
        select(FrameQa)
        .where(FrameQa.frame_id == frame.id, FrameQa.sha256 == frame.sha256)
        .order_by(FrameQa.id.desc())
        .limit(1)
    ).first()
    if newest is None or newest.decision != "set_aside" or frame.sha256 is None:
        return None
    session.add(
        FrameQa(
            frame_id=frame.id,
            sha256=frame.sha256,
            rule=newest.rule,
            decision="kept",
            decided_by="person",
            numbers={},
            reason=reason or "`ccdcal mark-good`",
            run_id=run_id,
        )
    )
    return newest.rule


def _mark(catalog: Catalog, text: str, bad: bool, reason: str | None, command: str) -> MarkResult:
    with catalog.session() as session:
        target = find_target(session, text)
    if target.kind == "calibration":
        raise UsageError(
            f"{text} is a calibrated file: mark its raw light (frame:N) or one of its masters "
            f"(`ccdcal provenance {target.ref}` shows them) {'bad' if bad else 'good'} instead"
        )
    arguments = {"target": target.ref, "path": target.path, "reason": reason}
    with catalog.run(command, arguments) as run, catalog.session() as session:
        row = _row(session, target)
        was_bad = row.is_bad
        change(session, row, run_id=run.id, is_bad=bad, bad_reason=reason if bad else None)
        overrode = None
        if not bad and isinstance(row, Frame):
            overrode = _override_frame_qa(session, row, reason, run.id)
        session.flush()
        result = MarkResult(run.id, target, was_bad, bad, reason, impact_of(session, target), overrode)
        run.summary = {
            "was_bad": was_bad,
            "overrode": overrode,
            "masters_downstream": len(result.impact.current_masters()),
            "calibrations_downstream": len(result.impact.current_calibrations()),
        }
    return result
