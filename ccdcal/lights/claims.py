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
another machine, until the claim's ``expires_at`` (:data:`LEASE`) passes without renewal. A killed run's
claims block nothing: the next run takes them over in :func:`recover`, which also repairs what the dead
run may have left half done — and only that. A run renames a calibrated file to its final name just before
it commits the rows, and publishes a master file just before it commits its row, each time after writing
a journal of what it publishes (:mod:`ccdcal.files.journal`); so :func:`recover`:

- reads the journals this catalog's dead runs left in the folders: a file under a name one lists, with
  the sha256 it lists, that no row registers, was published by that run and never registered — it is
  removed (an output it replaced is put back), and the light is planned again ("output file missing") or
  the group's master built again, under the same name. Any other file — another catalog's, a person's, a
  file the dead run never got to write — is left alone;
- marks the dead runs ``died``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from ccdcal.catalog.db import STOPPING_PATIENCE, Catalog, lock_writers
from ccdcal.catalog.models import Calibration, Claim, Master, Run, utcnow
from ccdcal.errors import CatalogError
from ccdcal.files.fitsio import remove_stale_temporaries
from ccdcal.files.journal import left_journals, repair
from ccdcal.runtime.owners import process_alive

log = logging.getLogger(__name__)

#: How long a claim lasts without renewal (what counts for a run on another machine).
LEASE = dt.timedelta(minutes=10)
#: Seconds between renewals of a working run's claims.
RENEW_EVERY = 60.0
#: Status of a run found dead (its process gone while its row still said ``running``).
DIED = "died"


def _epoch(when: dt.datetime) -> float:
    return when.replace(tzinfo=dt.UTC).timestamp()


def run_alive(run: Run) -> bool | None:
    """Whether a run is still working: ``None`` when it runs on another machine (cannot be told)."""
    if run.status != "running":
        return False
    return process_alive(run.pid, run.host, since=_epoch(run.started_at))


def _claim_live(claim: Claim, run: Run, now: dt.datetime) -> bool:
    alive = run_alive(run)
    return claim.expires_at > now if alive is None else alive


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
        if _claim_live(claim, run, now):
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
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(Claim).on_conflict_do_nothing(), rows)
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


@dataclass
class Recovery:
    """What :func:`recover` repaired after dead runs."""

    runs: list[int] = field(default_factory=list)
    claims: int = 0
    removed: list[str] = field(default_factory=list)


def recover(catalog: Catalog, run_id: int, *folders: Path) -> Recovery:
    """Take over the claims of dead runs and undo what they published and never registered (see the
    module docstring).

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    run_id : int
        This run (never treated as dead).
    *folders : Path
        The folders this run writes (masters and output): their journals are read, their stale
        temporaries removed.
    """
    done = Recovery()
    now = utcnow()
    resolved = list(dict.fromkeys(Path(folder).expanduser().resolve() for folder in folders))
    with catalog.session() as session:
        lock_writers(session)
        dead = [
            run
            for run in session.scalars(select(Run).where(Run.status == "running", Run.id != run_id))
            if run_alive(run) is False
        ]
        stale = [
            claim_row
            for claim_row, run in session.execute(select(Claim, Run).join(Run, Claim.run_id == Run.id))
            if run.id != run_id and not _claim_live(claim_row, run, now)
        ]
        for claim_row in stale:
            session.delete(claim_row)
        done.claims = len(stale)
        for folder in resolved:
            done.removed += [
                str(path) for path in _undo_journals(session, catalog.catalog_id, folder, run_id)
            ]
        for run in dead:
            run.status, run.finished_at = DIED, now
        done.runs = [run.id for run in dead]
    for folder in resolved:
        remove_stale_temporaries(folder)
    for path in done.removed:
        log.info("removed %s, published but never recorded by a run that died", path)
    return done


def _undo_journals(session: Session, catalog_id: str, folder: Path, run_id: int) -> list[Path]:
    """Undo what the journals of this catalog's runs that are no longer working prove they published and
    never registered (:func:`ccdcal.files.journal.repair`); the journals of another catalog, and of runs
    still working (or on another machine, still ``running``), are left alone."""
    undone: list[Path] = []
    for journal in left_journals(folder):
        if journal.catalog_id != catalog_id:  # another catalog's: not this one's to judge
            continue
        writer = session.get(Run, journal.run_id)
        if writer is not None and (
            writer.id == run_id or (writer.status == "running" and run_alive(writer) is not False)
        ):
            continue
        undone += repair(journal, partial(_registered, session))
    return undone


def _registered(session: Session, path: Path, sha256: str) -> bool:
    """Whether the catalog registers this file: a master or a current calibration of this path and
    sha256."""
    where = str(path)
    master = select(Master.id).where(Master.path == where, Master.sha256 == sha256)
    if session.scalar(master.limit(1)) is not None:
        return True
    calibration = select(Calibration.id).where(
        Calibration.path == where, Calibration.sha256 == sha256, Calibration.status == "current"
    )
    return session.scalar(calibration.limit(1)) is not None
