"""The report's frame QA, read from the catalog: the frames set aside (and those a person kept against a
rule), and the statistics of the inputs of each master shown.

The decisions shown, per scope:

- the catalog now: each usable calibration frame's current decision
  (:func:`ccdcal.catalog.frameqa.current_decisions`) when it sets the frame aside or is a person's;
- ``--run ID``: the decisions that run made; ``--since DATE``: those made since then (a frame judged
  twice has two rows).

Plain values only (dataclasses), as :mod:`ccdcal.report.data`, so that :mod:`ccdcal.report.html` needs no
database.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.frameqa import (
    BY_PERSON,
    QA_KINDS,
    SET_ASIDE,
    current_decisions,
    input_stats,
    reason_text,
    set_aside_of,
)
from ccdcal.catalog.models import Frame, FrameQa, FrameStat
from ccdcal.catalog.queries import in_chunks


@dataclass(frozen=True)
class QaDecision:
    """One frame-QA decision shown: a frame set aside, or kept by a person against a rule."""

    frame_id: int
    path: str
    kind: str
    rule: str
    decision: str
    decided_by: str
    reason: str
    decided_at: dt.datetime
    run_id: int | None


@dataclass(frozen=True)
class QaFrame:
    """One frame of a master's group with its statistics (``None``: not measured): an input, or a frame
    set aside (``rule`` and ``reason`` set; the reason ends with the rule's name)."""

    frame_id: int
    path: str
    measured: bool
    level: float | None = None
    noise: float | None = None
    diff_noise: float | None = None
    gradient: float | None = None
    saturated_fraction: float | None = None
    signal: float | None = None
    changed: bool = False
    rule: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class MasterQa:
    """The frames of one master shown: its inputs, then the frames its group set aside."""

    master_id: int
    kind: str
    path: str
    label: str
    frames: list[QaFrame]


@dataclass
class FrameQaData:
    """The report's frame QA: the decisions in scope; the masters shown whose frames were measured or
    set aside; how many masters shown have inputs that were never measured (built before frame QA)."""

    decisions: list[QaDecision] = field(default_factory=list)
    masters: list[MasterQa] = field(default_factory=list)
    not_measured: int = 0


class ShownMaster(Protocol):
    """What :func:`select_frame_qa` reads of a master shown (a :class:`ccdcal.report.data.MasterEntry`)."""

    @property
    def id(self) -> int: ...

    @property
    def kind(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def label(self) -> str: ...


def select_frame_qa(
    session: Session,
    masters: Sequence[ShownMaster],
    *,
    run_id: int | None = None,
    since: dt.datetime | None = None,
) -> FrameQaData:
    """The frame QA of a report: the decisions of the scope (see the module docstring) and the frames of
    the bias, dark and flat masters shown.

    Parameters
    ----------
    session : Session
        A reading session of the catalog.
    masters : sequence
        The masters the report shows, in its order.
    run_id : int, optional
        The report's ``--run``.
    since : datetime, optional
        The report's ``--since`` (naive UTC).

    Returns
    -------
    FrameQaData
        The decisions by kind, path and time; the masters with their frames.
    """
    data = FrameQaData(decisions=_decisions(session, run_id, since))
    shown = [m for m in masters if m.kind in QA_KINDS]
    ids = [m.id for m in shown]
    inputs = input_stats(session, ids)
    aside = set_aside_of(session, ids)
    for master in shown:
        frames = [_frame(i.frame_id, i.path, i.stats, changed=i.changed) for i in inputs.get(master.id, [])]
        frames += [
            _frame(a.frame_id, a.path, a.stats, rule=a.rule, reason=reason_text(a.rule, a.reason))
            for a in aside.get(master.id, [])
        ]
        if any(f.measured or f.rule for f in frames):
            data.masters.append(MasterQa(master.id, master.kind, master.path, master.label, frames))
        elif frames:
            data.not_measured += 1
    return data


def _decisions(session: Session, run_id: int | None, since: dt.datetime | None) -> list[QaDecision]:
    """The decisions shown (set aside, or a person's), of the scope."""
    rows: list[FrameQa]
    if run_id is None and since is None:
        rows = list(current_decisions(session).values())
    else:
        scoped = select(FrameQa).order_by(FrameQa.decided_at, FrameQa.id)
        scoped = scoped.where(FrameQa.run_id == run_id) if run_id is not None else scoped
        scoped = scoped.where(FrameQa.decided_at >= since) if since is not None else scoped
        rows = list(session.scalars(scoped))
    rows = [row for row in rows if row.decision == SET_ASIDE or row.decided_by == BY_PERSON]
    frames: dict[int, tuple[str, str]] = {}
    for ids in in_chunks({row.frame_id for row in rows}):
        query = select(Frame.id, Frame.path, Frame.imagetyp).where(Frame.id.in_(ids))
        if run_id is None and since is None:  # now: the frames that could be combined
            query = query.where(Frame.status == "ok", Frame.is_bad.is_not(True))
        frames |= {frame_id: (path, kind or "") for frame_id, path, kind in session.execute(query)}
    found = [
        QaDecision(
            frame_id=row.frame_id,
            path=frames[row.frame_id][0],
            kind=frames[row.frame_id][1],
            rule=row.rule,
            decision=row.decision,
            decided_by=row.decided_by,
            reason=_reason(row),
            decided_at=row.decided_at,
            run_id=row.run_id,
        )
        for row in rows
        if row.frame_id in frames
    ]
    order = {kind: i for i, kind in enumerate(QA_KINDS)}
    return sorted(found, key=lambda d: (order.get(d.kind, len(order)), d.path, d.decided_at))


def _reason(row: FrameQa) -> str:
    """A decision's reason as shown: a rule's with its name; a person's as written."""
    if row.decided_by == BY_PERSON:
        return row.reason or ""
    return reason_text(row.rule, row.reason)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _frame(
    frame_id: int,
    path: str,
    stats: FrameStat | None,
    *,
    changed: bool = False,
    rule: str | None = None,
    reason: str | None = None,
) -> QaFrame:
    if stats is None:
        return QaFrame(frame_id, path, False, changed=changed, rule=rule, reason=reason)
    return QaFrame(
        frame_id,
        path,
        True,
        level=_finite(stats.level),
        noise=_finite(stats.noise),
        diff_noise=_finite(stats.diff_noise),
        gradient=_finite(stats.gradient),
        saturated_fraction=_finite(stats.saturated_fraction),
        signal=_finite(stats.signal),
        changed=changed,
        rule=rule,
        reason=reason,
    )
