"""``ccdcal status``: what the catalog holds, grouped, what needs attention, and the pending work.

The pending work is computed on the fly, not read from a stored plan (:mod:`ccdcal.pending`): on a catalog
of up to :data:`~ccdcal.pending.PLAN_LIMIT` usable frames it is ``ccdcal process --dry-run`` with the
options of the last ``process`` run (:func:`ccdcal.pipeline.pending_work`), so it always reflects the
catalog as it is now — new frames, frames marked bad, masters rebuilt; on a larger catalog, where that plan
takes seconds, it is counted from the catalog (which lights and master groups are not up to date, and
why), the plan itself being ``ccdcal process --dry-run``. Every select reads an index: ``status`` answers
in under a second on 200,000 frames.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Select, func, select

from ccdcal import pending as pending_module
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import FRAME_KINDS, Frame
from ccdcal.catalog.queries import GROUP_KEYS, frame_groups, no_jit
from ccdcal.pending import light_state_counts, pending_status


def frame_counts_query() -> Select[str, str | None, int]:
    """Frames counted by status and kind, read from the status index alone, in its order."""
    return (
        select(Frame.status, Frame.imagetyp, func.count())
        .group_by(Frame.status, Frame.imagetyp)
        .order_by(Frame.status, Frame.imagetyp)
    )


def unclassified_query() -> Select[Any]:
    """The paths of the frames catalogued without a kind."""
    return select(Frame.path).where(Frame.status == "ok", Frame.imagetyp.is_(None)).order_by(Frame.path)


def catalog_status(catalog: Catalog) -> dict[str, Any]:
    """A JSON-ready description of the catalog.

    Returns
    -------
    dict
        ``catalog`` (its name), ``frames`` (counts by status and kind), ``groups`` (per kind, the group
        keys and frame count of each group), ``unclassified``, ``rejected`` (path and reason), ``missing``
        and ``bad`` (path and reason), and ``pending``: what ``ccdcal process`` would do now — planned
        (masters to build; lights to calibrate, that cannot be, or that failed, each with the reason) or,
        on a large catalog, counted (see :func:`ccdcal.pending.pending_status`).
    """
    with ThreadPoolExecutor(1, thread_name_prefix="ccdcal-status") as background:
        with catalog.reading() as session:
            no_jit(session)
            counts: dict[str, dict[str, int]] = {}
            for status, kind, n in session.execute(frame_counts_query()):
                counts.setdefault(status, {})[kind or "unclassified"] = n
            state_counts = None
            if sum(counts.get("ok", {}).values()) > pending_module.PLAN_LIMIT:
                # A large catalog's lights are counted by state, the longest select, in a second
                # connection while this one reads the rest: both run at once (PostgreSQL, 200,000
                # frames: 0.24 -> 0.15 s; SQLite, as both only read: see Catalog.reading).
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
    }


def pending_lines(pending: dict[str, Any]) -> list[str]:
    """The pending work of :func:`catalog_status` as text lines (what ``ccdcal status`` prints)."""
    if not pending.get("planned", True):
        return _counted_lines(pending)
    lights, masters = pending["lights"], pending["masters_to_build"]
    if not lights and not masters:
        return [f"Pending: nothing ({pending['current']} lights calibrated)"]
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
        return [f"Pending: nothing ({pending['current']} lights calibrated)"]
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
