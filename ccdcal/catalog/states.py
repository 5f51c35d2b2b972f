"""The states the catalog's rows are counted by, as selects: frames by status and kind, each usable light's
state (from its latest calibration and the masters it used), the masters with an input gone, and the last
``process`` run. ``ccdcal status`` reads them (:mod:`ccdcal.status`) and the EXPLAIN check
(:mod:`ccdcal.catalog.explain`) holds each to an index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, case, exists, func, or_, outerjoin, select, true
from sqlalchemy.orm import aliased

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master, MasterInput, Run
from ccdcal.catalog.queries import unusable_masters, usable

#: A light's state in the catalog, as counted (the words are the reasons shown).
NOT_CALIBRATED = "not calibrated yet"
FAILED = "its last calibration failed"
NOT_CURRENT = "its last calibration was superseded"
RAW_CHANGED = "raw file changed"
MASTER_REPLACED = "a master it was calibrated with was replaced, or marked bad"
CURRENT = "current"

#: The states in the order they are shown.
STATES = (NOT_CALIBRATED, FAILED, NOT_CURRENT, RAW_CHANGED, MASTER_REPLACED, CURRENT)


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


def last_process_run(catalog: Catalog) -> Run | None:
    """The last ``process`` (or ``run``) run among the 50 latest runs, whose options plan the pending
    work (``None``: none)."""
    return next((r for r in catalog.runs(limit=50) if r.command in ("process", "run")), None)


def light_states(grouped: bool = False) -> Any:
    """A subquery: every usable light's ``id``, ``path``, ``state`` (the words of this module) and the
    ``error`` of its last calibration, decided from its latest calibration row and the masters it used.

    The latest calibration of each light is found by a correlated ``max(id)`` (SQLite: an index search a
    light), or with ``grouped`` by ``max(id)`` grouped by light and joined (PostgreSQL, which hash-joins
    it where it would run the correlated select twice a light; the figures are in CHANGES.md).
    """
    frames: Any = Frame
    latest: Any
    if grouped:
        newest = (
            select(Calibration.frame_id, func.max(Calibration.id).label("id"))
            .group_by(Calibration.frame_id)
            .subquery("newest")
        )
        frames, latest = outerjoin(Frame, newest, newest.c.frame_id == Frame.id), newest.c.id
    else:
        earlier = aliased(Calibration)
        latest = select(func.max(earlier.id)).where(earlier.frame_id == Frame.id).scalar_subquery()
    replaced = exists().where(
        CalibrationMaster.calibration_id == Calibration.id,
        CalibrationMaster.master_id == Master.id,
        or_(Master.status != "current", Master.is_bad == true(), Master.id.in_(unusable_masters())),
    )
    state = case(
        (Calibration.id.is_(None), NOT_CALIBRATED),
        (Calibration.status == "failed", FAILED),
        (Calibration.status != "current", NOT_CURRENT),
        (Calibration.raw_sha256.is_distinct_from(Frame.sha256), RAW_CHANGED),
        (replaced, MASTER_REPLACED),
        else_=CURRENT,
    )
    query: Select[Any] = (
        select(Frame.id, Frame.path, state.label("state"), Calibration.error)
        .select_from(frames)
        .outerjoin(Calibration, Calibration.id == latest)  # the light's latest calibration
        .where(usable("light"))
    )
    return query.subquery("states")


def gone_inputs_query() -> Select[Any]:
    """The masters with an input marked bad or no longer ``ok``.

    ``status IN`` the statuses other than ``ok`` rather than ``!= 'ok'``: each side of the OR then
    reads its own index, not every frame."""
    gone = select(Frame.id).where(or_(Frame.is_bad == true(), Frame.status.in_(("missing", "rejected"))))
    return select(MasterInput.master_id).where(MasterInput.frame_id.in_(gone)).distinct()
