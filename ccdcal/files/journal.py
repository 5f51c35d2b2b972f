"""Journals: the files a writer is about to publish under their final names, kept until their catalog rows
are committed — the proof by which recovery tells what a dead run published and never registered.

A master is published (a hard link from its temporary file) and a calibrated light renamed to its final
name inside the catalog transaction that registers it; a process killed between the two leaves a file
under a final name that no row describes. So before publishing, the writer records in a journal — a
temporary file of its own beside them (``.ccdcal-tmp-{owner}-{random}.journal``) — the catalog and run it
writes for, each final name with the sha256 of the file about to be put there, and, for an output that
replaces another, the temporary name the replaced file is kept under. It discards the journal once the
transaction is committed, or rolled back and the files put back.

A journal that outlives its run is what recovery reads (:func:`left_journals`, :func:`repair`): a file
under a name it lists, with the sha256 it lists, that the catalog does not register, was published by that
dead run — it is removed, and the file it replaced put back. A file with other content (another writer's,
or the file the run never got to replace) is left alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ccdcal.files.fitsio import JOURNAL_SUFFIX, TEMP_PREFIX, sha256_file, temporary_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """A file about to be published: its final name (in the journal's folder), its sha256, and the
    temporary name of the file it replaces (``None``: it replaces none)."""

    name: str
    sha256: str
    replaces: str | None = None


@dataclass
class Journal:
    """The journal of one writer's publication in ``folder``, for the run ``run_id`` of the catalog
    ``catalog_id``; written by :meth:`record`, removed by :meth:`discard`."""

    folder: Path
    catalog_id: str
    run_id: int
    path: Path | None = field(default=None, init=False)

    def record(self, entries: Sequence[Entry]) -> None:
        """Write the journal (what it held replaced), on disk before returning: call it before the files
        are published. Written whole under a temporary name, then renamed: never read half written."""
        document = {
            "catalog_id": self.catalog_id,
            "run_id": self.run_id,
            "files": [asdict(entry) for entry in entries],
        }
        target = self.path or temporary_path(self.folder, JOURNAL_SUFFIX)
        staged = temporary_path(self.folder)
        try:
            with open(staged, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        self.path = target

    def record_file(self, path: Path, sha256: str) -> None:
        """:meth:`record` one file of the journal's folder (for :func:`~ccdcal.files.fitsio.write_atomic`)."""
        self.record([Entry(path.name, sha256)])

    def discard(self) -> None:
        """Remove the journal: its files are registered, or were put back."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


@dataclass(frozen=True)
class LeftJournal:
    """A journal found in a folder: where it is, and what it holds."""

    path: Path
    catalog_id: str
    run_id: int
    entries: tuple[Entry, ...]


def left_journals(folder: Path) -> list[LeftJournal]:
    """The journals in ``folder``, oldest name first; one that cannot be read is logged and skipped."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(f"{TEMP_PREFIX}*{JOURNAL_SUFFIX}")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            entries = tuple(
                Entry(str(item["name"]), str(item["sha256"]), item.get("replaces"))
                for item in document["files"]
            )
            found.append(LeftJournal(path, str(document["catalog_id"]), int(document["run_id"]), entries))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read the journal %s (%s): left as it is", path, exc)
    return found


def repair(journal: LeftJournal, registered: Callable[[Path, str], bool]) -> list[Path]:
    """Undo what the journal's dead writer published and never registered; remove the journal.

    Parameters
    ----------
    journal : LeftJournal
        A journal of a writer that is gone.
    registered : callable
        Whether the catalog registers a file of this path and sha256.

    Returns
    -------
    list of Path
        The final names whose unregistered file was removed (or replaced by the file it had replaced).
    """
    folder = journal.path.parent
    undone = []
    for entry in journal.entries:
        final = folder / entry.name
        kept = folder / entry.replaces if entry.replaces else None
        if kept is not None and (kept.parent != folder or not kept.name.startswith(TEMP_PREFIX)):
            kept = None  # a journal names only temporaries of its own folder
        if not registered(final, entry.sha256) and _holds(final, entry.sha256):
            if kept is not None and kept.is_file():
                os.replace(kept, final)  # the file it replaced, back under its name
            else:
                final.unlink(missing_ok=True)
            undone.append(final)
        if kept is not None:
            kept.unlink(missing_ok=True)
    journal.path.unlink(missing_ok=True)
    return undone


def _holds(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a file with this sha256."""
    try:
        return path.is_file() and sha256_file(path) == sha256
    except OSError:
        return False
