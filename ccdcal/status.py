"""``ccdcal status``: what the catalog holds, grouped, what needs attention, and the pending work.

The pending work is computed on the fly, not read from a stored plan (:func:`pending_status` chooses how).
Up to :data:`PLAN_LIMIT` usable frames it is the dry run of ``ccdcal process`` with the options of the last
``process`` run (:func:`ccdcal.lights.pipeline.pending_work`): every master to build and every light not
calibrated as it would be, each with its reason, so it always reflects the catalog as it is now — new
frames, frames marked bad, masters rebuilt. Beyond, where that plan takes seconds (it matches every light
and checks every file), ``status`` counts instead, with a few selects that read indexes
(:mod:`ccdcal.catalog.states`):

- lights: never calibrated; whose last attempt failed; whose raw file changed since (its sha256); that
  were calibrated with a master since superseded, marked bad or unusable (an input or calibrator of it
  marked bad); the rest are current. They are listed, with that reason, when at most ``limit`` are
  pending;
- master groups (the groups of ``status``): without a current master; or whose current master was made
  from another number of frames (those it combined and those the frame QA set aside), or from a frame
  since marked bad or gone, or is marked bad.

Those are facts of the catalog. What ``ccdcal process`` will do about them — which master each light
gets, or that none matches; whether the output files are still there — is the plan's:
``ccdcal process --dry-run``. Every select reads an index, and ``status`` reads in a snapshot that keeps
no writer waiting (:meth:`~ccdcal.catalog.db.Catalog.reading`).

With ``-v`` (:func:`frame_qa_status`, :func:`frame_qa_lines`) ``status`` also reads the frame QA: per
calibration kind the usable frames measured and those set aside now, each with its rule and reason, and
the frames a person kept against a rule. Without it nothing of the frame QA is read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.frameqa import (
    BY_PERSON,
    KEPT,
    QA_KINDS,
    SET_ASIDE,
    current_decisions,
    measured_counts,
    reason_text,
)
from ccdcal.catalog.models import FRAME_KINDS, Frame, Master, MasterSetAside
from ccdcal.catalog.queries import GROUP_KEYS, frame_groups, in_chunks, no_jit
from ccdcal.catalog.states import (
    CURRENT,
    FAILED,
    STATES,
    frame_counts_query,
    gone_inputs_query,
    last_process_run,
    light_states,
    unclassified_query,
)
from ccdcal.runtime.words import counted

#: Up to this many usable frames, ``status`` shows the plan of ``process --dry-run``.
PLAN_LIMIT = 10_000

#: Beyond :data:`PLAN_LIMIT`, the pending lights are listed when there are at most this many.
LIST_LIMIT = 1_000

#: Why a master group needs its master built.
NO_MASTER = "no master yet"
FRAMES_CHANGED = "frames added or left out since its master"
INPUT_GONE = "an input of its master was marked bad, or is gone"
MASTER_BAD = "its master is marked bad"

_MASTER_KINDS = ("bias", "dark", "flat")

#: What the plan's outcome would be, as far as the catalog tells.
_OUTCOME = {FAILED: "failed"}


def pending_status(
    catalog: Catalog,
    groups: dict[str, list[dict[str, Any]]],
    *,
    limit: int = LIST_LIMIT,
    state_counts: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """What ``ccdcal process`` would do now: planned (small catalogs) or counted (see the module docstring).

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    groups : dict
        Per kind, the groups of usable frames with their frame counts ``n`` (what ``status`` shows).
    limit : int
        Counted, the pending lights are listed when there are at most this many.
    state_counts : callable, optional
        Gives the lights counted by state when they are counted: :func:`light_state_counts`, asked for
        beforehand (``ccdcal status`` counts them in a second connection meanwhile). By default they
        are counted here.

    Returns
    -------
    dict
        The keys of :func:`ccdcal.lights.pipeline.pending_work` — ``options_of_run``, ``masters_to_build``,
        ``lights`` (``path``, ``outcome``, ``reason``), ``current`` — and ``planned`` (whether it is the
        plan), ``counts`` (lights by outcome when planned, by state when counted); counted, also
        ``groups_to_build`` (``kind``, ``keys``, ``frames``, ``reason``) and ``listed`` (whether
        ``lights`` lists every pending light).
    """
    usable_frames = sum(group["n"] for kind_groups in groups.values() for group in kind_groups)
    if usable_frames <= PLAN_LIMIT:
        # Imported here to keep start-up fast: the numerical stack is loaded only to plan.
        from ccdcal.lights.pipeline import pending_work

        pending = pending_work(catalog)
        counts: dict[str, int] = {}
        for light in pending["lights"]:
            counts[light["outcome"]] = counts.get(light["outcome"], 0) + 1
        return pending | {"planned": True, "counts": counts | {"current": pending["current"]}}
    with catalog.reading() as session:
        no_jit(session)
        counts = state_counts() if state_counts is not None else _state_counts(session)
        pending = _counted(session, groups, limit, counts)
    run = last_process_run(catalog)
    return {"options_of_run": run.id if run is not None else None} | pending


def light_state_counts(catalog: Catalog) -> dict[str, int]:
    """The usable lights counted by state (the words of this module, in their order), in a session of
    its own."""
    with catalog.reading() as session:
        no_jit(session)
        return _state_counts(session)


def _state_counts(session: Session) -> dict[str, int]:
    states = light_states(grouped=_grouped(session))
    query = select(states.c.state, func.count()).group_by(states.c.state)
    found: dict[str, int] = dict(session.execute(query).all())
    return {state: found[state] for state in STATES if state in found}  # in this order


def _counted(
    session: Session, groups: dict[str, list[dict[str, Any]]], limit: int, counts: dict[str, int]
) -> dict[str, Any]:
    counts = dict(counts)
    waiting = sum(n for state, n in counts.items() if state != CURRENT)
    lights = []
    if 0 < waiting <= limit:
        states = light_states(grouped=_grouped(session))
        query = (
            select(states.c.path, states.c.state, states.c.error)
            .where(states.c.state != CURRENT)
            .order_by(states.c.path)
        )
        lights = [_light(path, state, error) for path, state, error in session.execute(query)]
    return {
        "planned": False,
        "masters_to_build": [],
        "groups_to_build": groups_to_build(session, groups),
        "lights": lights,
        "listed": waiting <= limit,
        "current": counts.pop(CURRENT, 0),
        "counts": counts,
    }


def _grouped(session: Session) -> bool:
    """Whether :func:`light_states` joins the latest calibrations grouped (on a server database)."""
    return session.get_bind().dialect.name != "sqlite"


def _light(path: str, state: str, error: str | None) -> dict[str, Any]:
    reason = f"{state}: {error}" if state == FAILED and error else state
    return {"path": path, "outcome": _OUTCOME.get(state, "calibrate"), "reason": reason}


def groups_to_build(session: Session, groups: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The master groups whose current master is missing or not made from the group's frames as they are
    now (see the module docstring), each with the reason."""
    masters: dict[tuple[Any, ...], list[Any]] = {}
    # The frames of its group the frame QA set aside (revision 0008) are the group's too: read with the
    # master, from the primary key of master_set_aside.
    set_aside = (
        select(func.count()).where(MasterSetAside.master_id == Master.id).scalar_subquery().label("set_aside")
    )
    for kind in _MASTER_KINDS:
        columns = [getattr(Master, name) for name in GROUP_KEYS[kind]]
        query = select(Master.id, Master.n_inputs, Master.is_bad, set_aside, *columns).where(
            Master.kind == kind, Master.status == "current"
        )
        for row in session.execute(query):
            masters.setdefault((kind, *row[4:]), []).append(row)
    damaged = _damaged(session, [row.id for rows in masters.values() for row in rows])
    found = []
    for kind in _MASTER_KINDS:
        for group in groups.get(kind, []):
            rows = masters.get((kind, *(group[name] for name in GROUP_KEYS[kind])), [])
            reason = _group_reason(rows, group["n"], damaged)
            if reason is not None:
                keys = {name: group[name] for name in GROUP_KEYS[kind]}
                found.append({"kind": kind, "keys": keys, "frames": group["n"], "reason": reason})
    return found


def _group_reason(masters: list[Any], frames: int, damaged: set[int]) -> str | None:
    """Why a group needs its master built (``None``: one of its current masters is as its frames: it
    combined them, or set them aside)."""
    if not masters:
        return NO_MASTER
    reasons = []
    for master in masters:
        if master.n_inputs + master.set_aside != frames:
            reasons.append(FRAMES_CHANGED)
        elif master.id in damaged:
            reasons.append(INPUT_GONE)
        elif master.is_bad:
            reasons.append(MASTER_BAD)
        else:
            return None
    return reasons[0]


def _damaged(session: Session, master_ids: list[int]) -> set[int]:
    """Of ``master_ids``, those with an input since marked bad or no longer ``ok`` (missing, rejected):
    found from those few frames. (An input whose file changed is found by ``process --dry-run``.)"""
    wanted = set(master_ids)
    return {master_id for master_id in session.scalars(gone_inputs_query()) if master_id in wanted}


def catalog_status(catalog: Catalog, *, frame_qa: bool = False) -> dict[str, Any]:
    """A JSON-ready description of the catalog.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    frame_qa : bool
        Also describe the frame QA (``status -v``): :func:`frame_qa_status`, read in the same snapshot.
        Without it nothing more is read.

    Returns
    -------
    dict
        ``catalog`` (its name), ``frames`` (counts by status and kind), ``groups`` (per kind, the group
        keys and frame count of each group), ``unclassified``, ``rejected`` (path and reason), ``missing``
        and ``bad`` (path and reason), and ``pending``: what ``ccdcal process`` would do now — planned
        (masters to build; lights to calibrate, that cannot be, or that failed, each with the reason) or,
        on a large catalog, counted (see :func:`ccdcal.status.pending_status`); with ``frame_qa``, also
        ``frame_qa``.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="ccdcal-status") as background:
        with catalog.reading() as session:
            no_jit(session)
            counts: dict[str, dict[str, int]] = {}
            for status, kind, n in session.execute(frame_counts_query()):
                counts.setdefault(status, {})[kind or "unclassified"] = n
            state_counts = None
            if sum(counts.get("ok", {}).values()) > PLAN_LIMIT:
                # A large catalog's lights are counted by state, the longest select, in a second
                # connection while this one reads the rest: both run at once (on SQLite too, as both
                # only read: see Catalog.reading).
                state_counts = background.submit(light_state_counts, catalog).result
            groups = {kind: frame_groups(session, kind) for kind in FRAME_KINDS}
            unclassified = list(session.scalars(unclassified_query()))
            rejected = [
                {"path": path, "reason": error}
                for path, error in session.execute(
                    select(Frame.path, Frame.error).where(Frame.status == "rejected").order_by(Frame.path)
                )
            ]
            missing = list(
                session.scalars(select(Frame.path).where(Frame.status == "missing").order_by(Frame.path))
            )
            bad = [
                {"path": path, "reason": reason}
                for path, reason in session.execute(
                    select(Frame.path, Frame.bad_reason).where(Frame.is_bad.is_(True)).order_by(Frame.path)
                )
            ]
            qa = frame_qa_status(session, as_of=catalog.as_of) if frame_qa else None
        pending = pending_status(catalog, groups, state_counts=state_counts)
    return {
        "catalog": catalog.name,
        "frames": counts,
        "group_keys": {kind: list(keys) for kind, keys in GROUP_KEYS.items()},
        "groups": groups,
        "unclassified": unclassified,
        "rejected": rejected,
        "missing": missing,
        "bad": bad,
        "pending": pending,
    } | ({} if qa is None else {"frame_qa": qa})


def frame_qa_status(session: Session, *, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """The frame QA of the usable calibration frames (status ``ok``, not marked bad): per kind how many
    are measured and how many are set aside now, and the frames whose decision is worth a look.

    A frame is set aside when its current decision (:func:`ccdcal.catalog.frameqa.current_decisions`,
    about its current content) is ``set_aside``; a person's ``kept`` overrides the rules for that content
    and is listed as such. A frame kept by the rules is not listed (that is every frame judged good).

    Parameters
    ----------
    session : Session
        A reading session of the catalog.
    as_of : datetime, optional
        The decisions and statistics as they stood then (``--as-of``).

    Returns
    -------
    dict
        ``kinds``: per kind (bias, dark, flat) ``frames``, ``measured``, ``set_aside`` and
        ``kept_by_person`` counts; ``frames``: the frames set aside or kept by a person, by kind and path,
        each with ``frame_id``, ``path``, ``kind``, ``decision``, ``decided_by``, ``rule``, ``reason``,
        ``numbers``, ``decided_at`` (text, UTC) and ``run_id``.
    """
    counts = measured_counts(session, as_of=as_of)
    decisions = {
        frame_id: row
        for frame_id, row in current_decisions(session, as_of=as_of).items()
        if row.decision == SET_ASIDE or row.decided_by == BY_PERSON
    }
    frames: list[dict[str, Any]] = []
    for ids in in_chunks(decisions):
        query = select(Frame.id, Frame.path, Frame.imagetyp).where(
            Frame.id.in_(ids),
            Frame.imagetyp.in_(QA_KINDS),
            Frame.status == "ok",
            Frame.is_bad.is_not(True),
        )
        for frame_id, path, kind in session.execute(query):
            row = decisions[frame_id]
            frames.append(
                {
                    "frame_id": frame_id,
                    "path": path,
                    "kind": kind,
                    "decision": row.decision,
                    "decided_by": row.decided_by,
                    "rule": row.rule,
                    "reason": row.reason,
                    "numbers": row.numbers if isinstance(row.numbers, dict) else {},
                    "decided_at": str(row.decided_at),
                    "run_id": row.run_id,
                }
            )
    frames.sort(key=lambda f: (QA_KINDS.index(f["kind"]), f["path"], f["frame_id"]))
    kinds = {}
    for kind, (total, measured) in counts.items():
        of_kind = [f for f in frames if f["kind"] == kind]
        kinds[kind] = {
            "frames": total,
            "measured": measured,
            "set_aside": sum(f["decision"] == SET_ASIDE for f in of_kind),
            "kept_by_person": sum(f["decision"] == KEPT for f in of_kind),
        }
    return {"kinds": kinds, "frames": frames}


def frame_qa_lines(frame_qa: dict[str, Any]) -> list[str]:
    """The frame QA of :func:`frame_qa_status` as text lines (what ``ccdcal status -v`` prints): per kind
    with frames, the counts, then its frames set aside or kept by a person, one a line::

        frame:12 b5.fits set aside: level 812 ADU, group 500 ± 2 (156σ, limit 10σ) (outlier_level rule)
    """
    lines = ["Frame QA:"]
    for kind, count in frame_qa["kinds"].items():
        listed = [f for f in frame_qa["frames"] if f["kind"] == kind]
        if not count["frames"] and not listed:
            continue
        aside = f"{count['set_aside']} set aside" if count["set_aside"] else "none set aside"
        kept = f", {count['kept_by_person']} kept by a person" if count["kept_by_person"] else ""
        lines.append(
            f"  {kind}: {count['measured']} of {counted(count['frames'], 'frame')} measured, {aside}{kept}"
        )
        lines += [f"    {decision_line(frame)}" for frame in listed]
    if len(lines) == 1:
        lines.append("  no calibration frames")
    return lines


def decision_line(frame: dict[str, Any]) -> str:
    """One frame's decision as shown: ``frame:12 b5.fits set aside: REASON (RULE rule)``, ``frame:14
    d3.fits kept by a person, over the outlier_noise rule: REASON``."""
    name = f"frame:{frame['frame_id']} {PurePath(frame['path']).name}"
    rule, reason = str(frame["rule"]), frame["reason"]
    if frame["decision"] != SET_ASIDE:
        over = f", over the {rule} rule" if rule != BY_PERSON else ""
        return f"{name} kept by a person{over}" + (f": {reason}" if reason else "")
    if frame["decided_by"] == BY_PERSON:
        said = reason if rule == BY_PERSON else reason_text(rule, reason)
        return f"{name} set aside by a person" + (f": {said}" if said else "")
    return f"{name} set aside: {reason_text(rule, reason)}"


def pending_lines(pending: dict[str, Any]) -> list[str]:
    """The pending work of :func:`catalog_status` as text lines (what ``ccdcal status`` prints)."""
    if not pending.get("planned", True):
        return _counted_lines(pending)
    lights, masters = pending["lights"], pending["masters_to_build"]
    if not lights and not masters:
        return [f"Pending: nothing ({counted(pending['current'], 'light')} calibrated)"]
    run = pending["options_of_run"]
    source = f"the options of run {run}" if run is not None else "default options"
    lines = [f"Pending (what `ccdcal process` would do now, with {source}):"]
    if masters:
        lines += [f"  masters to build ({len(masters)}):", *(f"    {name}" for name in masters)]
    lines += _light_lines(lights)
    return lines


def _light_lines(lights: list[dict[str, Any]]) -> list[str]:
    lines = []
    for title, outcome in (
        ("to calibrate", "calibrate"),
        ("cannot be calibrated", "cannot"),
        ("failed", "failed"),
    ):
        listed = [light for light in lights if light["outcome"] == outcome]
        if listed:
            lines.append(f"  lights {title} ({len(listed)}):")
            lines += [f"    {light['path']}: {light['reason']}" for light in listed]
    return lines


def _counted_lines(pending: dict[str, Any]) -> list[str]:
    """The lines of pending work counted from the catalog (a large one)."""
    groups, counts = pending["groups_to_build"], pending["counts"]
    if not groups and not counts:
        return [f"Pending: nothing ({counted(pending['current'], 'light')} calibrated)"]
    lines = [
        "Pending (counted from the catalog; `ccdcal process --dry-run` plans each master and light):",
        f"  master groups to build ({len(groups)}):" if groups else "  master groups to build: none",
    ]
    by_reason: dict[str, int] = {}
    for group in groups:
        by_reason[group["reason"]] = by_reason.get(group["reason"], 0) + 1
    lines += [f"    {n}: {reason}" for reason, n in by_reason.items()]
    waiting = sum(counts.values())
    lines.append(f"  lights not up to date ({waiting}; {pending['current']} current):")
    lines += [f"    {n}: {state}" for state, n in counts.items()]
    if pending["listed"]:
        lines += _light_lines(pending["lights"])
    else:
        lines.append("  (too many to list here: `ccdcal process --dry-run` lists them, with their masters)")
    return lines
