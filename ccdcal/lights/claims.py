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
run may have left half done. A killed run renames a calibrated file to its final name just before it
commits the rows, and publishes a master file just before it commits its row, so :func:`recover`:

- deletes an output a dead run claimed that no current calibration describes (published, never
  registered) or that differs from the sha256 its current row records (replaced, never registered) —
  the light is then planned again ("output file missing") and written under the same name;
- deletes master files no ``masters`` row names that ccdcal wrote while a run that did not end cleanly
  (killed, interrupted, failed) was working — the group's master is then built again under the same
  name;
- marks the dead runs ``died``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.catalog.models import Calibration, Claim, Master, Run, utcnow
from ccdcal.files.fitsio import remove_stale_temporaries, sha256_file
from ccdcal.runtime.owners import process_alive

log = logging.getLogger(__name__)

#: How long a claim lasts without renewal (what counts for a run on another machine).
LEASE = dt.timedelta(minutes=10)
#: Seconds between renewals of a working run's claims.
RENEW_EVERY = 60.0
#: Status of a run found dead (its process gone while its row still said ``running``).
DIED = "died"
#: Key of the PostgreSQL advisory lock serialising plans, claims, recovery and master registration.
# Header blocks read when looking for ccdcal's CCDCALV card (a master of 999 inputs has ~60).
_MAX_HEADER_BLOCKS = 200
# Slack between a file's mtime and a recorded time (clock granularity).
_SLACK = dt.timedelta(seconds=2)


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
    finally:
        stop.set()
        renewer.join()
        release(catalog, run_id)


def release(catalog: Catalog, run_id: int) -> None:
    """Delete the claims of a run."""
    with catalog.session() as session:
        session.execute(delete(Claim).where(Claim.run_id == run_id))


def _renew(catalog: Catalog, run_id: int, stop: threading.Event) -> None:
    while not stop.wait(RENEW_EVERY):
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


def recover(catalog: Catalog, run_id: int, masters_dir: Path, output_dir: Path) -> Recovery:
    """Take over the claims of dead runs and repair what they left half done (see the module docstring).

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    run_id : int
        This run (never treated as dead).
    masters_dir, output_dir : Path
        The folders this run writes (orphan masters are looked for in ``masters_dir``).
    """
    done = Recovery()
    now = utcnow()
    with catalog.session() as session:
        lock_writers(session)
        dead = [
            run
            for run in session.scalars(select(Run).where(Run.status == "running", Run.id != run_id))
            if run_alive(run) is False
        ]
        stale = [
            (claim, run)
            for claim, run in session.execute(select(Claim, Run).join(Run, Claim.run_id == Run.id))
            if run.id != run_id and not _claim_live(claim, run, now)
        ]
        for claim_row, run in stale:
            if _repair_output(session, claim_row, run.started_at):
                done.removed.append(claim_row.output)
            session.delete(claim_row)
        done.claims = len(stale)
        done.removed += _remove_orphan_masters(session, masters_dir.expanduser().resolve(), dead, now)
        for run in dead:
            run.status, run.finished_at = DIED, now
        done.runs = [run.id for run in dead]
    remove_stale_temporaries(output_dir.expanduser().resolve())
    for path in done.removed:
        log.info("removed %s, left half done by a run that died", path)
    return done


def _repair_output(session: Session, claim_row: Claim, since: dt.datetime) -> bool:
    """Remove a dead run's output that its rows do not describe; return whether it was removed."""
    path = Path(claim_row.output)
    try:
        modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
    except FileNotFoundError:
        return False
    if modified < since - _SLACK:  # not written since the dead run started: untouched
        return False
    current = session.scalars(
        select(Calibration).where(Calibration.path == str(path), Calibration.status == "current")
    ).first()
    if current is None:
        if not _written_by_ccdcal(path):
            return False
    elif current.frame_id != claim_row.frame_id or sha256_file(path) == current.sha256:
        return False
    path.unlink(missing_ok=True)
    return True


def _remove_orphan_masters(session: Session, folder: Path, dead: list[Run], now: dt.datetime) -> list[str]:
    """Remove the master files no ``masters`` row names that ccdcal wrote while a run that did not end
    cleanly (killed, interrupted, failed) was working: it published them, then stopped before its
    transaction committed. They are built again, under the same names.

    Files written at other times, or not by ccdcal, are left alone. A master being registered by a live
    run is never seen here: registration holds the lock this recovery holds.
    """
    if not folder.is_dir():
        return []
    known = set(session.scalars(select(Master.path).where(Master.path.startswith(str(folder)))))
    unknown = [path for path in sorted(folder.glob("master_*.fits")) if str(path) not in known]
    if not unknown:
        return []
    unclean = session.scalars(select(Run).where(Run.status.in_(("interrupted", "failed", DIED))))
    windows = [(run.started_at - _SLACK, (run.finished_at or now) + _SLACK) for run in [*unclean, *dead]]
    removed = []
    for path in unknown:
        modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
        if any(start <= modified <= end for start, end in windows) and _written_by_ccdcal(path):
            path.unlink(missing_ok=True)
            removed.append(str(path))
    return removed


def _written_by_ccdcal(path: Path) -> bool:
    """Whether a file's primary header carries ccdcal's CCDCALV card (read without astropy)."""
    try:
        with open(path, "rb") as handle:
            for _ in range(_MAX_HEADER_BLOCKS):
                block = handle.read(2880)
                cards = [block[i : i + 8] for i in range(0, len(block), 80)]
                if b"CCDCALV " in cards:
                    return True
                if len(block) < 2880 or b"END     " in cards:
                    return False
    except OSError:
        return False
    return False
