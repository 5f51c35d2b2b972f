"""Concurrent and interrupted ``ccdcal process`` runs: claims on lights, and recovery after a dead run.

Two coordinators may work on one catalog at once (two ``ccdcal process`` started together, on SQLite or
PostgreSQL). Each light is calibrated once, by the run that claims it:

- a run plans its lights and claims those it will calibrate in one transaction (:func:`claim`): the
  claims of other live runs are read first, then the lights are planned, then one ``claims`` row is
  inserted per light to calibrate (``frame_id`` is the primary key, the output path is unique). The
  lights another run holds are ``busy``: not this run's work. These transactions are serialised —
  SQLite's write lock (``BEGIN IMMEDIATE``) does it, on PostgreSQL a transaction-level advisory lock
  (:func:`~ccdcal.catalog.db.lock_writers`) — and a run releases its claims only after its calibrations are
  committed, so a plan sees every light either claimed or calibrated, never neither;
- a run renews its claims while it works (:func:`holding`) and deletes them when it ends, however it ends
  short of being killed.

A claim counts while its run is alive: ``running``, and its process exists on this machine; for a run on
another machine, until the claim's ``expires_at`` (:data:`~ccdcal.masters.recovery.LEASE`) passes without
renewal. A killed run's claims block nothing: the next run deletes them in
:func:`~ccdcal.masters.recovery.recover`, which also repairs what the dead run left half done, and only that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from ccdcal.catalog.db import STOPPING_PATIENCE, Catalog
from ccdcal.catalog.models import Claim, Run, utcnow
from ccdcal.errors import CatalogError
from ccdcal.masters.recovery import LEASE, claim_live

log = logging.getLogger(__name__)

#: Seconds between renewals of a working run's claims.
RENEW_EVERY = 60.0


def describe_run(run: Run) -> str:
    """``run 12 (pid 345 on host, started 2026-03-14 20:01:02 UTC)``."""
    return f"run {run.id} (pid {run.pid} on {run.host}, started {run.started_at:%Y-%m-%d %H:%M:%S} UTC)"


@dataclass
class Busy:
    """Lights and outputs claimed by other live runs, each with the reason shown for it."""

    frames: dict[int, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def reason(self, frame_id: int, output: str | None) -> str | None:
        """Why this light is not this run's work (``None``: it is)."""
        return self.frames.get(frame_id) or (self.outputs.get(output) if output else None)


def busy(session: Session, run_id: int | None) -> Busy:
    """The claims of live runs other than ``run_id``."""
    now = utcnow()
    found = Busy()
    query = select(Claim, Run).join(Run, Claim.run_id == Run.id)
    if run_id is not None:
        query = query.where(Claim.run_id != run_id)
    for claim, run in session.execute(query):
        if claim_live(claim, run, now):
            why = f"being calibrated by {describe_run(run)}"
            found.frames[claim.frame_id] = why
            found.outputs[claim.output] = why
    return found


def mark_busy(reports: list[Any], taken: Busy) -> None:
    """Turn the planned lights that other runs hold into ``busy`` ones (reason: which run)."""
    for report in reports:
        if report.outcome == "calibrate":
            why = taken.reason(report.frame_id, report.output)
            if why is not None:
                report.outcome, report.reason, report.task = "busy", why, None


def claim(session: Session, run_id: int, reports: list[Any], taken: Busy) -> int:
    """Claim the lights planned ``calibrate`` for ``run_id``; the others' become ``busy``.

    Call it in the transaction that planned them, after :func:`lock_writers` and :func:`busy` (read before
    the plan). Returns how many lights were claimed.
    """
    mark_busy(reports, taken)
    planned = [r for r in reports if r.outcome == "calibrate"]
    if not planned:
        return 0
    now = utcnow()
    rows = [
        {
            "frame_id": r.frame_id,
            "run_id": run_id,
            "output": r.output,
            "claimed_at": now,
            "expires_at": now + LEASE,
        }
        for r in planned
    ]
    if session.get_bind().dialect.name == "postgresql":
        # Imported here for start-up time: a dialect's module is loaded by its catalog's engine.
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        session.execute(postgresql_insert(Claim).on_conflict_do_nothing(), rows)
    else:
        # Imported here for start-up time (as above).
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(Claim).on_conflict_do_nothing(), rows)
    mine = set(session.scalars(select(Claim.frame_id).where(Claim.run_id == run_id)))
    for report in planned:
        if report.frame_id not in mine:  # a run that died an instant ago still holds it
            report.outcome, report.task = "busy", None
            report.reason = "claimed by another run; run `ccdcal process` again once it has ended"
    return len(mine)


@contextmanager
def holding(catalog: Catalog, run_id: int) -> Iterator[None]:
    """Renew ``run_id``'s claims while the block runs, and delete them when it ends (however it ends)."""
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(catalog, run_id, stop), name="ccdcal-claims", daemon=True)
    renewer.start()
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the command stops within moments, released or not
        stop.set()
        renewer.join(STOPPING_PATIENCE)  # a daemon thread: left behind if another program keeps the lock
        if catalog.gone is None:
            try:
                release(catalog, run_id, patience=STOPPING_PATIENCE)
            except (CatalogError, DatabaseError):  # the next run takes over the claims of a stopped run
                log.debug("run %s: claims not released", run_id, exc_info=True)
        raise
    except BaseException:
        stop.set()
        renewer.join()
        if catalog.gone is None:  # a catalog deleted meanwhile holds no claim to release
            release(catalog, run_id)
        raise
    stop.set()
    renewer.join()
    if catalog.gone is None:
        release(catalog, run_id)


def release(catalog: Catalog, run_id: int, patience: float | None = None) -> None:
    """Delete the claims of a run (waiting at most ``patience`` seconds for a lock, when given)."""
    with catalog.session(patience) as session:
        session.execute(delete(Claim).where(Claim.run_id == run_id))


def _renew(catalog: Catalog, run_id: int, stop: threading.Event) -> None:
    while not stop.wait(RENEW_EVERY) and catalog.gone is None:
        try:
            with catalog.session() as session:
                session.execute(
                    update(Claim).where(Claim.run_id == run_id).values(expires_at=utcnow() + LEASE)
                )
        except Exception as exc:  # the next renewal tries again; a lapse only matters across machines
            log.warning("cannot renew the claims of run %s: %s", run_id, exc)
