"""A superseded master made current again instead of a duplicate being built.

A master's identity (:func:`~ccdcal.masters.calibrators.master_identities`) says what makes its pixels:
when the master a group would build has the identity of a superseded master of the catalog whose file is
intact — there, with the sha256 the catalog holds — that master is the one to build. ``mark-bad`` of a
raw frame then ``mark-good`` of it is the usual way there: the first build leaves the frame out (a new
version), the second would put it back and make the first version again, bit for bit. Instead of writing a
``_vN`` copy, the old row is made ``current`` again and the group's current master ``superseded`` (with
the reason), in one transaction under the writers' lock (:func:`restore_master`); its run's summary
records the group as ``restored``. The masters made with it follow, as they are planned next (their
identities hold its sha256), and the lights planned after that are calibrated again with it as with any
new master (``new bias master ... (replaces ...)``). Bad-pixel masks are restored alike
(:mod:`ccdcal.masters.bpm`, with :func:`intact_superseded` and :func:`make_current`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.catalog.history import change
from ccdcal.catalog.models import Master, utcnow
from ccdcal.files.fitsio import sha256_file
from ccdcal.masters.files import existing_master, plan_reason, same_group
from ccdcal.masters.groups import GroupPlan, MasterOptions, lacks_uncertainty


def intact_superseded(session: Session, query: Select[Master]) -> Master | None:
    """The master to make current again among the superseded ones ``query`` selects: its file there with
    the sha256 the catalog holds; one not marked bad before one marked bad, then the newest.

    ``None`` when there is none: the master is then built (a missing or changed file is never trusted).
    """
    return first_intact(session.scalars(query.where(Master.status == "superseded")))


def first_intact(candidates: Iterable[Master]) -> Master | None:
    """Of superseded ``candidates``, the first whose file is intact: one not marked bad before one marked
    bad, then the newest (each file hashed in turn, until one is found)."""
    for master in sorted(candidates, key=lambda m: (bool(m.is_bad), -m.id)):
        if _intact(master):
            return master
    return None


def _intact(master: Master) -> bool:
    path = Path(master.path)
    try:
        return path.is_file() and sha256_file(path) == master.sha256
    except OSError:
        return False


def make_current(
    session: Session,
    master: Master,
    current: Iterable[Master],
    reason: Callable[[Master], str],
    run_id: int | None,
) -> None:
    """Make ``master`` current again and supersede ``current`` (its group's current masters), each with
    ``reason(old)`` as its ``superseded_reason``: a row update each, recorded, in the caller's
    transaction."""
    at = utcnow()
    for old in current:
        if old.id != master.id:
            change(session, old, run_id=run_id, at=at, status="superseded", superseded_reason=reason(old))
    change(session, master, run_id=run_id, at=at, status="current", superseded_reason=None)


def restorable(
    session: Session, plan: GroupPlan, options: MasterOptions, candidates: Iterable[Master] | None = None
) -> Master | None:
    """The superseded master of the plan's identities to make current again (:func:`first_intact`), else
    ``None``; one without the UNCERT extension ``--uncertainty`` asks for is not.

    ``candidates``: the superseded masters of the plan's identities, when the caller has read them for
    many plans at once (else they are read here).
    """
    if candidates is None:
        query = select(Master).where(Master.identity.in_(plan.identities), Master.status == "superseded")
        candidates = session.scalars(query)
    found = first_intact(m for m in candidates if not lacks_uncertainty(m, options))
    return found


def restored_reason(master: Master) -> str:
    """Why a group's current master was superseded by ``master`` made current again (its prefix)."""
    return f"{Path(master.path).name} (version {master.version}) made current again, its file intact"


def restore_master(
    catalog: Catalog, plan: GroupPlan, options: MasterOptions, chosen: Master, run_id: int | None = None
) -> tuple[Master | None, bool]:
    """Make ``chosen``, the plan's superseded master found intact by :func:`restorable` (its file hashed
    once, before the lock), current again, in one transaction under the writers' lock.

    Returns
    -------
    master : Master or None
        The master now current with the plan's identity: the one restored, or one a concurrent run made
        current meanwhile; ``None`` when ``chosen`` is no longer superseded or its file is gone (the
        master is then built).
    here : bool
        Whether this call made it current.
    """
    with catalog.session() as session:
        lock_writers(session)  # one registration at a time, as for a new master
        existing = existing_master(session, plan, options)
        if existing is not None:
            return existing, False
        master = session.get(Master, chosen.id)
        if master is None or master.status != "superseded" or not Path(master.path).is_file():
            return None, False
        current = list(session.scalars(same_group(plan)))
        make_current(
            session,
            master,
            current,
            lambda old: f"{restored_reason(master)}: {plan_reason(session, old, plan)}",
            run_id,
        )
    return master, True
