"""``ccdcal audit``: hash every file the catalog records again and report what drifted.

Checked: every raw frame (not rejected), every master (current and superseded: both stay on disk) and
every current calibrated file. Superseded calibrations are not checked: a new calibration of a light
replaces the file of the old one under the same name (the old row keeps its sha256 as a record).

Each file is ``ok``, ``changed`` (its sha256 differs), ``missing`` or ``unreadable``. A missing file is
``moved`` when a file with its sha256 is found under one of the search folders; with ``fix=True`` its row
is re-pointed there (a raw frame also gets the new file's size and mtime, and status ``ok``). The audit is
recorded as a ``runs`` row (command ``audit``) with the counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal import limits
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.history import change
from ccdcal.catalog.models import Calibration, Frame, Master
from ccdcal.errors import UsageError
from ccdcal.files.hashing import MISSING, OK, UNCHECKED, fits_files, hash_files
from ccdcal.runtime.pathtext import is_text, not_text_reason, shown
from ccdcal.runtime.words import counted

Progress = Callable[[str, int, int], None]
MOVED = "moved"

#: What each kind of row is called in messages.
_LABELS = {"frame": "raw frame", "master": "master", "calibration": "calibrated file"}


@dataclass
class AuditItem:
    """A recorded file that is not as recorded.

    Attributes
    ----------
    what, id, path, sha256
        The row (``frame``, ``master``, ``calibration``), its id, recorded path and sha256.
    state : str
        ``changed``, ``missing``, ``unreadable`` or ``moved``.
    disk_sha256 : str or None
        The sha256 of the file now (``changed``).
    found : str or None
        Where a moved file is now.
    repointed : bool
        Whether the row now points there (``fix``).
    note : str or None
        Why a moved file was not re-pointed, or why it could not be read.
    """

    what: str
    id: int
    path: str
    sha256: str | None
    state: str
    disk_sha256: str | None = None
    found: str | None = None
    repointed: bool = False
    note: str | None = None

    @property
    def ref(self) -> str:
        """The row as an id (``frame:3``)."""
        return f"{self.what}:{self.id}"

    def line(self) -> str:
        """One line for the terminal."""
        text = f"  {self.state:<10} {self.ref} {self.path}"
        if self.state == "changed" and self.sha256 and self.disk_sha256:
            text += f" (sha256 {self.sha256[:12]}… recorded, {self.disk_sha256[:12]}… on disk)"
        if self.found:
            text += f" → {self.found}" + (" (re-pointed)" if self.repointed else "")
        if self.note:
            text += f" ({self.note})"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "what": self.what,
            "id": self.id,
            "path": self.path,
            "sha256": self.sha256,
            "state": self.state,
            "disk_sha256": self.disk_sha256,
            "found": self.found,
            "repointed": self.repointed,
            "note": self.note,
        }


@dataclass
class AuditReport:
    """What :func:`audit` found: files checked per kind, and those that drifted."""

    run_id: int
    checked: dict[str, int]
    problems: list[AuditItem] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)
    fix: bool = False

    def counts(self) -> dict[str, int]:
        """Files per state: ``ok``, ``changed``, ``missing``, ``unreadable``, ``moved``, and ``repointed``."""
        counts = dict.fromkeys(("changed", "missing", "unreadable", MOVED), 0)
        for item in self.problems:
            counts[item.state] += 1
        return {
            "ok": sum(self.checked.values()) - len(self.problems),
            **counts,
            "repointed": sum(item.repointed for item in self.problems),
        }

    @property
    def exit_code(self) -> int:
        """1 when any file drifted (even when it was re-pointed: the next audit then exits 0), else 0."""
        return 1 if self.problems else 0

    def headline(self) -> str:
        """One line: what was checked and found."""
        total = sum(self.checked.values())
        kinds = ", ".join(counted(n, _LABELS[what]) for what, n in self.checked.items())
        found = ", ".join(f"{n} {state}" for state, n in self.counts().items() if n or state == "ok")
        return f"Audit (run {self.run_id}): {counted(total, 'file')} checked ({kinds}): {found}"

    def lines(self) -> list[str]:
        """The headline, then one line per file that drifted, and what to do."""
        lines = [self.headline(), *(item.line() for item in self.problems)]
        if any(i.state == MISSING for i in self.problems) and not self.searched:
            lines.append(
                "Moved files are found by sha256 with --search PATH, and re-pointed with --fix-missing PATH"
            )
        elif any(i.state == MOVED and not i.repointed for i in self.problems) and not self.fix:
            lines.append("Re-point the moved files with --fix-missing PATH")
        return lines

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``ccdcal audit --json``)."""
        return {
            "run": self.run_id,
            "checked": dict(self.checked),
            "counts": self.counts(),
            "searched": list(self.searched),
            "fix": self.fix,
            "problems": [item.as_dict() for item in self.problems],
        }


@dataclass(frozen=True)
class _Record:
    what: str
    id: int
    path: str
    sha256: str


def audit(
    catalog: Catalog,
    *,
    search: Sequence[str | os.PathLike[str]] = (),
    fix: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Hash every recorded raw frame, master and current calibrated file; report what drifted.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    search : sequence of path-like
        Folders searched (recursively, FITS files only) for the missing files, by sha256.
    fix : bool
        Re-point the rows of the moved files found (``--fix-missing``).
    jobs : int, optional
        Threads hashing files.
    progress : callable, optional
        Called as ``progress(label, done, total)``.

    Returns
    -------
    AuditReport
        The counts and each file that drifted; the audit's run id.

    Raises
    ------
    UsageError
        ``jobs`` outside its range (:data:`ccdcal.limits.JOBS`).
    """
    if jobs is not None:
        limits.JOBS.check(jobs)
    roots = [Path(p).expanduser().resolve() for p in search]
    for root in roots:
        if not root.exists():
            raise UsageError(f"{shown(root)}: no such folder to look for missing files in; check the path")
    arguments = {"search": [shown(r) for r in roots], "fix_missing": fix, "jobs": jobs}
    with catalog.run("audit", arguments) as run:
        with catalog.session() as session:
            records = _records(session)
        checked = {what: sum(r.what == what for r in records) for what in _LABELS}
        report = AuditReport(run.id, checked, searched=[shown(r) for r in roots], fix=fix)
        hashed = hash_files((r.path for r in records), jobs, _labelled(progress, "Hashing recorded files"))
        for record in records:
            state = hashed[record.path].state(record.sha256)
            if state in (OK, UNCHECKED):
                continue
            result = hashed[record.path]
            note = result.error if state == "unreadable" else None
            report.problems.append(
                AuditItem(record.what, record.id, record.path, record.sha256, state, result.sha256, note=note)
            )
        missing = [item for item in report.problems if item.state == MISSING]
        if roots and missing:
            present = {path for path, h in hashed.items() if h.sha256 is not None}
            _find_moved(missing, roots, present, jobs, _labelled(progress, "Searching for moved files"))
        if fix and any(item.state == MOVED for item in report.problems):
            with catalog.session() as session:
                for item in report.problems:
                    if item.state == MOVED:
                        _repoint(session, item, run.id)
        run.summary = {"checked": checked, "counts": report.counts()}
        run.partial = report.exit_code != 0
    return report


def _labelled(progress: Progress | None, label: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(label, done, total)


def _records(session: Session) -> list[_Record]:
    """Every recorded file with a sha256: raw frames (not rejected), masters, current calibrations."""
    frames = session.execute(
        select(Frame.id, Frame.path, Frame.sha256)
        .where(Frame.status != "rejected", Frame.sha256.is_not(None))
        .order_by(Frame.id)
    )
    masters = session.execute(select(Master.id, Master.path, Master.sha256).order_by(Master.id))
    calibrations = session.execute(
        select(Calibration.id, Calibration.path, Calibration.sha256)
        .where(
            Calibration.status == "current", Calibration.path.is_not(None), Calibration.sha256.is_not(None)
        )
        .order_by(Calibration.id)
    )
    records = [_Record("frame", i, path, sha) for i, path, sha in frames if sha]
    records += [_Record("master", i, path, sha) for i, path, sha in masters]
    records += [_Record("calibration", i, path, sha) for i, path, sha in calibrations if path and sha]
    return records


def _find_moved(
    missing: list[AuditItem],
    roots: list[Path],
    present: set[str],
    jobs: int | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Look for the missing files' sha256 among the FITS files under ``roots`` (not those recorded and
    present); mark each found ``moved``, preferring a file of the same name."""
    candidates = [path for path in fits_files(roots) if path not in present]
    by_sha: dict[str, list[str]] = {}
    for path, hashed in hash_files(sorted(set(candidates)), jobs, progress).items():
        if hashed.sha256 is not None:
            by_sha.setdefault(hashed.sha256, []).append(path)
    taken: set[str] = set()
    for item in missing:
        paths = [p for p in by_sha.get(item.sha256 or "", []) if p not in taken]
        if not paths:
            continue
        same_name = [p for p in paths if Path(p).name == Path(item.path).name]
        found = sorted(same_name or paths)[0]
        taken.add(found)
        item.state = MOVED
        item.found = shown(found)
        if not is_text(found):  # the catalog cannot hold its path: shown, never re-pointed
            item.note = f"not re-pointed: {not_text_reason(found)}, then run audit --fix-missing again"


def _repoint(session: Session, item: AuditItem, run_id: int) -> None:
    """Point a moved file's row at the file found (unless another row of its table has that path, or the
    path is not text)."""
    assert item.found is not None
    if item.note is not None:
        return
    if item.what == "frame":
        other = session.scalar(select(Frame.id).where(Frame.path == item.found))
        if other is not None:
            item.note = f"not re-pointed: frame:{other} already has that path"
            return
        frame = session.get(Frame, item.id)
        assert frame is not None
        stat = os.stat(item.found)
        frame.path, frame.size, frame.mtime = item.found, stat.st_size, stat.st_mtime
        if frame.status == MISSING:
            change(session, frame, run_id=run_id, status="ok")
    elif item.what == "master":
        other = session.scalar(select(Master.id).where(Master.path == item.found))
        if other is not None:
            item.note = f"not re-pointed: master:{other} already has that path"
            return
        master = session.get(Master, item.id)
        assert master is not None
        master.path = item.found
    else:
        other = session.scalar(
            select(Calibration.id).where(Calibration.path == item.found, Calibration.status == "current")
        )
        if other is not None:
            item.note = f"not re-pointed: calibration:{other} already has that path"
            return
        calibration = session.get(Calibration, item.id)
        assert calibration is not None
        calibration.path = item.found
    item.repointed = True
