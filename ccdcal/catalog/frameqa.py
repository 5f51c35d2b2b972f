"""Frame QA as the catalog holds it (revision 0008): each frame's current decision, the statistics of the
frames' versions, and the frames a master's group set aside.

``frame_qa`` is never updated: a frame's decision is the newest row (highest id) for the frame and its
current sha256 — a rule's ``set_aside``, or ``kept`` again (by the rules, or by a person, which overrides
the rules for that file content). A decision about an older content of the file is not the frame's any
more. ``frame_stats`` is keyed by content (sha256 and image HDU): another path of the same bytes shares the
row. ``master_set_aside`` lists the frames of a master's group that were not combined into it.

Each function here is one select (run in chunks of :data:`~ccdcal.catalog.queries.IN_CHUNK` ids), read by
``ccdcal status -v``, ``ccdcal masters --list -v`` and the report, and by the build, which needs each
frame's current decision to apply a person's override.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Frame, FrameQa, FrameStat, MasterInput, MasterSetAside
from ccdcal.catalog.queries import in_chunks, usable

#: ``frame_qa.decision``: the frame is not combined, or it is combined again.
SET_ASIDE = "set_aside"
KEPT = "kept"
#: ``frame_qa.decided_by``.
BY_RULE = "rule"
BY_PERSON = "person"

#: The kinds the frame QA judges.
QA_KINDS = ("bias", "dark", "flat")


@dataclass(frozen=True)
class InputStats:
    """One frame combined into a master, in the version combined, with that version's statistics.

    Attributes
    ----------
    master_id, frame_id : int
        The master and the frame.
    path : str
        The frame's file.
    sha256 : str
        The content combined (``master_inputs.sha256``).
    changed : bool
        Whether the file holds other bytes now.
    stats : FrameStat or None
        The statistics of that content (``None``: not measured, as for a master built before frame QA).
    """

    master_id: int
    frame_id: int
    path: str
    sha256: str
    changed: bool
    stats: FrameStat | None


@dataclass(frozen=True)
class SetAside:
    """One frame of a master's group that was not combined into it (``master_set_aside``), with the
    statistics of the content set aside (``None``: not measured or not known)."""

    master_id: int
    frame_id: int
    path: str
    sha256: str | None
    rule: str
    reason: str
    stats: FrameStat | None


def current_decisions_query(
    frame_ids: Sequence[int] | None = None, *, as_of: dt.datetime | None = None
) -> Select[FrameQa]:
    """The select of :func:`current_decisions`: the newest ``frame_qa`` row of each frame among the rows
    about its current sha256 (found by ``ix_frame_qa_frame``), by frame id."""
    newest = (
        select(func.max(FrameQa.id).label("id"))
        .join(Frame, (Frame.id == FrameQa.frame_id) & (Frame.sha256 == FrameQa.sha256))
        .group_by(FrameQa.frame_id)
    )
    if frame_ids is not None:
        newest = newest.where(FrameQa.frame_id.in_(frame_ids))
    if as_of is not None:
        newest = newest.where(FrameQa.decided_at <= as_of)
    latest = newest.subquery()
    return select(FrameQa).join(latest, latest.c.id == FrameQa.id).order_by(FrameQa.frame_id)


def current_decisions(
    session: Session, frame_ids: Iterable[int] | None = None, *, as_of: dt.datetime | None = None
) -> dict[int, FrameQa]:
    """Each frame's frame-QA decision: the newest ``frame_qa`` row about the frame's current content.

    Parameters
    ----------
    session : Session
        A session of the catalog.
    frame_ids : iterable of int, optional
        The frames asked about (default: every frame with a decision).
    as_of : datetime, optional
        The decisions as they stood then (naive UTC; ``--as-of``): rows decided later are left out.

    Returns
    -------
    dict
        Frame id to its decision (a :class:`~ccdcal.catalog.models.FrameQa`); a frame without one, or
        whose decisions are all about another content of its file, is absent (it has not been judged).

    Examples
    --------
    >>> with catalog.reading() as session:  # doctest: +SKIP
    ...     aside = [d for d in current_decisions(session).values() if d.decision == SET_ASIDE]
    """
    if frame_ids is None:
        return {row.frame_id: row for row in session.scalars(current_decisions_query(as_of=as_of))}
    found: dict[int, FrameQa] = {}
    for ids in in_chunks(dict.fromkeys(frame_ids)):
        found |= {row.frame_id: row for row in session.scalars(current_decisions_query(ids, as_of=as_of))}
    return found


def stats_of(
    session: Session, frame_ids: Iterable[int], *, as_of: dt.datetime | None = None
) -> dict[int, FrameStat]:
    """The statistics of each frame's current content (``frame_stats`` of its sha256 and image HDU).

    Parameters
    ----------
    session : Session
        A session of the catalog.
    frame_ids : iterable of int
        The frames.
    as_of : datetime, optional
        Only statistics measured by then (naive UTC).

    Returns
    -------
    dict
        Frame id to its :class:`~ccdcal.catalog.models.FrameStat`; a frame whose content was not measured
        is absent.
    """
    found: dict[int, FrameStat] = {}
    for ids in in_chunks(dict.fromkeys(frame_ids)):
        query = (
            select(Frame.id, FrameStat)
            .join(
                FrameStat, (FrameStat.sha256 == Frame.sha256) & (FrameStat.hdu == func.coalesce(Frame.hdu, 0))
            )
            .where(Frame.id.in_(ids))
        )
        if as_of is not None:
            query = query.where(FrameStat.measured_at <= as_of)
        found |= dict(session.execute(query).all())
    return found


def input_stats(session: Session, master_ids: Iterable[int]) -> dict[int, list[InputStats]]:
    """Each master's inputs, in the versions combined, with their statistics.

    Parameters
    ----------
    session : Session
        A session of the catalog.
    master_ids : iterable of int
        The masters.

    Returns
    -------
    dict
        Master id to its :class:`InputStats`, by path (a master without inputs, a ``bpm``, is absent).
    """
    found: dict[int, list[InputStats]] = {}
    for ids in in_chunks(dict.fromkeys(master_ids)):
        query = (
            select(MasterInput.master_id, MasterInput.frame_id, Frame.path, MasterInput.sha256, Frame.sha256)
            .add_columns(FrameStat)
            .join(Frame, Frame.id == MasterInput.frame_id)
            .outerjoin(
                FrameStat,
                (FrameStat.sha256 == MasterInput.sha256) & (FrameStat.hdu == func.coalesce(Frame.hdu, 0)),
            )
            .where(MasterInput.master_id.in_(ids))
            .order_by(MasterInput.master_id, Frame.path)
        )
        for master_id, frame_id, path, used, now, stats in session.execute(query):
            found.setdefault(master_id, []).append(
                InputStats(master_id, frame_id, path, used, now != used, stats)
            )
    return found


def set_aside_of(session: Session, master_ids: Iterable[int]) -> dict[int, list[SetAside]]:
    """The frames of each master's group that the frame QA set aside (``master_set_aside``).

    Parameters
    ----------
    session : Session
        A session of the catalog.
    master_ids : iterable of int
        The masters.

    Returns
    -------
    dict
        Master id to its :class:`SetAside` frames, by path, each with the rule, the reason and the
        statistics of the content set aside (a master that set none aside is absent).
    """
    found: dict[int, list[SetAside]] = {}
    for ids in in_chunks(dict.fromkeys(master_ids)):
        query = (
            select(
                MasterSetAside.master_id,
                MasterSetAside.frame_id,
                Frame.path,
                MasterSetAside.sha256,
                MasterSetAside.rule,
                MasterSetAside.reason,
            )
            .add_columns(FrameStat)
            .join(Frame, Frame.id == MasterSetAside.frame_id)
            .outerjoin(
                FrameStat,
                (FrameStat.sha256 == MasterSetAside.sha256) & (FrameStat.hdu == func.coalesce(Frame.hdu, 0)),
            )
            .where(MasterSetAside.master_id.in_(ids))
            .order_by(MasterSetAside.master_id, Frame.path)
        )
        for master_id, frame_id, path, sha256, rule, reason, stats in session.execute(query):
            found.setdefault(master_id, []).append(
                SetAside(master_id, frame_id, path, sha256, rule, reason, stats)
            )
    return found


def measured_query(kind: str, *, as_of: dt.datetime | None = None) -> Select[int, int]:
    """The usable frames of one kind counted, and those whose current content was measured."""
    condition = (FrameStat.sha256 == Frame.sha256) & (FrameStat.hdu == func.coalesce(Frame.hdu, 0))
    if as_of is not None:
        condition &= FrameStat.measured_at <= as_of
    return (
        select(func.count(Frame.id), func.count(FrameStat.id))
        .select_from(Frame)
        .outerjoin(FrameStat, condition)
        .where(usable(kind))
    )


def measured_counts(
    session: Session, kinds: Sequence[str] = QA_KINDS, *, as_of: dt.datetime | None = None
) -> dict[str, tuple[int, int]]:
    """Per kind, the usable frames (status ``ok``, not marked bad) and how many of them are measured.

    Parameters
    ----------
    session : Session
        A session of the catalog.
    kinds : sequence of str
        The kinds counted (default: bias, dark and flat).
    as_of : datetime, optional
        Only statistics measured by then (naive UTC).

    Returns
    -------
    dict
        Kind to ``(frames, measured)``.
    """
    counts: dict[str, tuple[int, int]] = {}
    for kind in kinds:
        frames, measured = session.execute(measured_query(kind, as_of=as_of)).one()
        counts[kind] = (frames, measured)
    return counts


def reason_text(rule: str, reason: str | None) -> str:
    """A rule's reason as shown: ``level 812 ADU, group 500 ± 2 (...) (outlier_level rule)``; the rule named
    once, where the reason already names it (the build writes each failure's reason with its rule:
    ``REASON (outlier_level rule); REASON (light_leak rule)``)."""
    named = f"({rule} rule)"
    text = (reason or "").strip()
    if named in text:
        return text
    return f"{text} {named}" if text else named
