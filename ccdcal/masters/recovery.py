"""Recovery after runs that died: what a killed ``ccdcal masters``, ``process`` or ``run`` left half done
is repaired by the next run of the same catalog, and only that.

A run publishes a master file just before it commits its row, and renames a calibrated file to its final
name just before it commits the rows, each time after writing a journal of what it publishes
(:mod:`ccdcal.files.journal`). A run killed in between leaves its row ``running``, its journal and the file.
:func:`recover`, run first by every command that writes masters or outputs:

- reads the journals this catalog's dead runs left in the folders: a file under a name one lists, with
  the sha256 it lists, that no row registers, was published by that run and never registered — it is
  removed (an output it replaced is put back), and the group's master is built again or the light planned
  again ("output file missing"), under the same name. Any other file — another catalog's, a person's, a
  file the dead run never got to write — is left alone;
- deletes the claims of runs no longer working (:mod:`ccdcal.lights.claims`);
- removes the stale temporary files of dead processes, and marks the dead runs ``died``.

A run is alive while its row says ``running`` and its process exists on this machine; for a run on another
machine, which cannot be told, its claims count until their lease (:data:`LEASE`) passes without renewal.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.catalog.models import Calibration, Claim, Master, Run, utcnow
from ccdcal.files.fitsio import remove_stale_temporaries
from ccdcal.files.journal import left_journals, repair
from ccdcal.runtime.owners import process_alive

log = logging.getLogger(__name__)

#: How long a claim lasts without renewal (what counts for a run on another machine).
LEASE = dt.timedelta(minutes=10)
#: Status of a run found dead (its process gone while its row still said ``running``).
DIED = "died"


def _epoch(when: dt.datetime) -> float:
    return when.replace(tzinfo=dt.UTC).timestamp()


def run_alive(run: Run) -> bool | None:
    """Whether a run is still working: ``None`` when it runs on another machine (cannot be told)."""
    if run.status != "running":
        return False
    return process_alive(run.pid, run.host, since=_epoch(run.started_at))


def claim_live(claim: Claim, run: Run, now: dt.datetime) -> bool:
    """Whether a claim still counts: its run alive, or, on another machine, the claim's lease not past."""
    alive = run_alive(run)
    return claim.expires_at > now if alive is None else alive


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
            if run.id != run_id and not claim_live(claim_row, run, now)
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
