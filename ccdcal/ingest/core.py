"""``ccdcal ingest``: catalogue raw FITS files, incrementally, reading headers only.

The order of work, top to bottom in :func:`ingest`:

1. walk the given paths and stat every FITS file;
2. compare with the catalog: unchanged files (same path, size and mtime) are not opened; files the catalog
   had under these paths that are gone are marked ``missing`` (nothing is ever deleted);
3. read the new and changed files (hash + image header) in worker processes;
4. write frames and their header cards in batches, each batch one transaction, so an interrupted ingest
   keeps what it did and the next one resumes;
5. apply a forced ``--imagetyp`` to every frame under the paths, read or not.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, NamedTuple

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import FRAME_KINDS, Frame, HeaderCard, utcnow
from ccdcal.errors import UsageError
from ccdcal.ingest.normalise import folders_between, type_from_folders
from ccdcal.ingest.reader import FrameRecord, ReadTask, read_frame
from ccdcal.ingest.scan import Found, resolve_roots, walk

#: Called as ``progress(done, total)`` while files are read.
Progress = Callable[[int, int], None]

# Files written per transaction.
BATCH = 250
# Fewer files than this are read in-process: starting workers would cost more than it saves.
MIN_FILES_FOR_WORKERS = 48


@dataclass
class IngestSummary:
    """What one ingest did. ``rejected`` lists (path, reason) for every file that could not be catalogued."""

    run_id: int | None = None
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    missing: int = 0
    reappeared: int = 0
    forced: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)
    unclassified: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when everything was catalogued; 1 when any file is rejected (DESIGN.md)."""
        return 1 if self.rejected else 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (also stored as the run's summary)."""
        return {
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "missing": self.missing,
            "reappeared": self.reappeared,
            "forced": self.forced,
            "rejected": [{"path": path, "reason": reason} for path, reason in self.rejected],
            "by_type": dict(sorted(self.by_type.items())),
            "unclassified": self.unclassified,
        }


class _Known(NamedTuple):
    """The catalog's row for a path, as far as the comparison needs it."""

    id: int
    size: int
    mtime: float
    status: str
    sha256: str | None
    imagetyp: str | None


def ingest(
    catalog: Catalog,
    paths: Iterable[str | os.PathLike[str]],
    *,
    imagetyp: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Catalogue every FITS file under ``paths``.

    Parameters
    ----------
    catalog
        The open catalog.
    paths
        Files and folders (folders are walked recursively).
    imagetyp
        Force this kind (``bias``, ``dark``, ``flat``, ``light``) on every file under ``paths``, including
        files already catalogued; recorded as ``imagetyp_source = 'forced'``.
    jobs
        Worker processes reading headers (default: all cores).
    progress
        Called with (files read, files to read).

    Returns
    -------
    IngestSummary
    """
    given = [os.fspath(p) for p in paths]
    if not given:
        raise UsageError("ingest needs at least one file or folder")
    if imagetyp is not None and imagetyp not in FRAME_KINDS:
        raise UsageError(f"--imagetyp {imagetyp!r}: use one of {', '.join(FRAME_KINDS)}")
    roots = resolve_roots(list(given))
    arguments = {"paths": [str(r) for r in roots], "imagetyp": imagetyp, "jobs": jobs}
    summary = IngestSummary()
    with catalog.run("ingest", arguments) as run:
        summary.run_id = run.id
        found = list(walk(roots))
        with catalog.session() as session:
            known = _known_under(session, [str(r) for r in roots])
        to_read: list[ReadTask] = []
        seen: set[str] = set()
        for item in found:
            seen.add(item.path)
            row = known.get(item.path)
            if (
                row is not None
                and row.status != "missing"
                and row.size == item.size
                and row.mtime == item.mtime
            ):
                summary.unchanged += 1
                continue
            to_read.append(ReadTask(item.path, _folder_type(item)))
        vanished = [row.id for path, row in known.items() if path not in seen and row.status != "missing"]
        summary.missing = len(vanished)

        for batch in _batches(_read_all(to_read, jobs, progress), BATCH):
            with catalog.session() as session:
                _write_batch(session, batch, known, imagetyp, run.id, summary)
        with catalog.session() as session:
            if vanished:
                session.execute(
                    update(Frame).where(Frame.id.in_(vanished)).values(status="missing", run_id=run.id)
                )
            if imagetyp is not None:
                summary.forced = _force_type(session, [str(r) for r in roots], imagetyp)
            _tally(session, [str(r) for r in roots], summary)
        run.summary = summary.as_dict()
        run.partial = bool(summary.rejected)
    return summary


def _folder_type(item: Found) -> str | None:
    return type_from_folders(folders_between(PurePath(item.location), PurePath(item.root)))


def _under(roots: list[str]) -> Any:
    """SQL condition: a frame path equal to one of ``roots`` or inside it (an index range per root)."""
    clauses = []
    for root in roots:
        prefix = root.rstrip(os.sep) + os.sep
        # Every path inside the folder sorts between "root/" and "root0" ('0' follows '/' in ASCII).
        upper = prefix[:-1] + chr(ord(os.sep) + 1)
        clauses.append(Frame.path == root)
        clauses.append((Frame.path >= prefix) & (Frame.path < upper))
    return or_(*clauses)


def _known_under(session: Session, roots: list[str]) -> dict[str, _Known]:
    rows = session.execute(
        select(
            Frame.path,
            Frame.id,
            Frame.size,
            Frame.mtime,
            Frame.status,
            Frame.sha256,
            Frame.imagetyp,
        ).where(_under(roots))
    )
    return {row[0]: _Known(*row[1:]) for row in rows}


def _read_all(tasks: list[ReadTask], jobs: int | None, progress: Progress | None) -> Iterator[FrameRecord]:
    """Read files in worker processes (in order), or in-process when there are few."""
    total = len(tasks)
    workers = max(1, min(jobs or os.cpu_count() or 1, total // 16 or 1))
    if progress:
        progress(0, total)
    if workers == 1 or total < MIN_FILES_FOR_WORKERS:
        results: Iterable[FrameRecord] = map(read_frame, tasks)
        for done, record in enumerate(results, 1):
            if progress:
                progress(done, total)
            yield record
        return
    context = multiprocessing.get_context(
        "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    )
    chunk = max(1, min(64, total // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        try:
            for done, record in enumerate(pool.map(read_frame, tasks, chunksize=chunk), 1):
                if progress:
                    progress(done, total)
                yield record
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _batches(records: Iterable[FrameRecord], size: int) -> Iterator[list[FrameRecord]]:
    batch: list[FrameRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_batch(
    session: Session,
    batch: list[FrameRecord],
    known: dict[str, _Known],
    forced: str | None,
    run_id: int,
    summary: IngestSummary,
) -> None:
    """Write one batch of read files: new rows, updated rows, and their header cards."""
    now = utcnow()
    new_rows: list[dict[str, Any]] = []
    new_cards: list[tuple[int, int, list[Any]]] = []
    pending_cards: list[tuple[int, list[Any]]] = []
    for record in batch:
        row = _frame_values(record, forced, run_id, now)
        previous = known.get(record.path)
        if record.error is not None:
            summary.rejected.append((record.path, record.error))
        if previous is None:
            summary.new += 1
            new_rows.append(row)
            pending_cards.append((record.hdu or 0, record.cards))
            continue
        same_content = previous.sha256 == record.sha256 and previous.status != "rejected"
        if previous.status == "missing":
            summary.reappeared += 1
        if same_content and record.error is None:
            # Touched but identical (or back from missing): refresh the file identity only.
            values = {"size": record.size, "mtime": record.mtime, "status": "ok", "run_id": run_id}
            if forced is None:
                values.update(
                    {k: row[k] for k in ("imagetyp", "imagetyp_source") if previous.imagetyp is None}
                )
            session.execute(update(Frame).where(Frame.id == previous.id).values(**values))
            if previous.status != "missing":
                summary.unchanged += 1
            continue
        if previous.sha256 is not None and previous.sha256 != record.sha256:
            row["changed_at"] = now
            summary.changed += 1
        del row["path"]
        session.execute(update(Frame).where(Frame.id == previous.id).values(**row))
        session.execute(delete(HeaderCard).where(HeaderCard.frame_id == previous.id))
        new_cards.append((previous.id, record.hdu or 0, record.cards))
    if new_rows:
        inserted = session.connection().execute(
            insert(Frame).returning(Frame.id, sort_by_parameter_order=True), new_rows
        )
        ids = inserted.scalars().all()
        new_cards.extend(
            (frame_id, hdu, cards) for frame_id, (hdu, cards) in zip(ids, pending_cards, strict=True)
        )
    _insert_cards(session, new_cards)


#: Columns of ``header_cards`` in the order :func:`_insert_cards` writes them.
_CARD_COLUMNS = ("frame_id", "hdu", "position", "keyword", "value", "value_num", "comment")


def _insert_cards(session: Session, cards_by_frame: list[tuple[int, int, list[Any]]]) -> None:
    """Bulk-insert header cards: the hot path of a first ingest (hundreds of thousands of rows).

    SQLAlchemy's executemany builds a parameter dict per row, which costs more than SQLite's insert
    itself; here rows go to the driver as plain tuples (PostgreSQL: ``COPY``). Values stay parameters.
    """
    rows = [
        (frame_id, hdu, position, *card)
        for frame_id, hdu, cards in cards_by_frame
        for position, card in enumerate(cards)
    ]
    if not rows:
        return
    connection = session.connection()
    columns = ", ".join(_CARD_COLUMNS)
    if connection.dialect.name == "postgresql":
        dbapi: Any = connection.connection.dbapi_connection
        with dbapi.cursor() as cursor, cursor.copy(f"COPY header_cards ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    if connection.dialect.paramstyle != "qmark":  # pragma: no cover - other drivers: the portable path
        connection.execute(insert(HeaderCard), [dict(zip(_CARD_COLUMNS, r, strict=True)) for r in rows])
        return
    marks = ", ".join("?" * len(_CARD_COLUMNS))
    connection.exec_driver_sql(f"INSERT INTO header_cards ({columns}) VALUES ({marks})", rows)


def _frame_values(record: FrameRecord, forced: str | None, run_id: int, now: Any) -> dict[str, Any]:
    columns = dict(record.columns)
    if forced is not None:
        columns["imagetyp"] = forced
        columns["imagetyp_source"] = "forced"
    return {
        "path": record.path,
        "sha256": record.sha256,
        "size": record.size,
        "mtime": record.mtime,
        "status": "rejected" if record.error else "ok",
        "error": record.error,
        "hdu": record.hdu,
        "ingested_at": now,
        "run_id": run_id,
        "changed_at": None,
        **{name: columns.get(name) for name in _NORMALISED},
    }


_NORMALISED = (
    "imagetyp",
    "imagetyp_header",
    "imagetyp_source",
    "exptime",
    "ccd_temp",
    "set_temp",
    "temp_key",
    "xbinning",
    "ybinning",
    "gain",
    "offset",
    "filter",
    "instrument",
    "readout_mode",
    "naxis1",
    "naxis2",
    "bitpix",
    "date_obs",
)


def _force_type(session: Session, roots: list[str], kind: str) -> int:
    result = session.execute(
        update(Frame)
        .where(_under(roots), Frame.status != "missing")
        .values(imagetyp=kind, imagetyp_source="forced")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _tally(session: Session, roots: list[str], summary: IngestSummary) -> None:
    """Count the frames under the roots by kind, list the unclassified and the still-rejected ones."""
    rows = session.execute(
        select(Frame.path, Frame.status, Frame.imagetyp, Frame.error)
        .where(_under(roots))
        .order_by(Frame.path)
    )
    reported = {path for path, _ in summary.rejected}
    for path, status, kind, error in rows:
        if status == "ok":
            if kind is None:
                summary.unclassified.append(path)
            else:
                summary.by_type[kind] += 1
        elif status == "rejected" and path not in reported:
            summary.rejected.append((path, error or "rejected"))
    summary.rejected.sort()
