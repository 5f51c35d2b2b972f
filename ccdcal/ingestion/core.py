"""``ccdcal ingest``: catalogue raw FITS files, incrementally, reading headers only.

The order of work, top to bottom in :func:`ingest`:

1. walk the given paths and stat every FITS file; a path that is not valid UTF-8 is rejected alone (the
   catalog stores paths as text: :mod:`ccdcal.runtime.pathtext`); paths holding no FITS file, of which the
   catalog knows none either, are refused before a run is recorded;
2. compare with the catalog: unchanged files (same path, size and mtime) are not opened; files the catalog
   had under these paths that are gone are marked ``missing`` (nothing is ever deleted);
3. read the new and changed files (hash + image header) in worker processes;
4. write frames and their header cards in batches, each batch one transaction, so an interrupted ingest
   keeps what it did and the next one resumes; files ccdcal wrote (a CCDCALV card, or the sha256 of an
   output the catalog records) are listed as skipped, not written;
5. apply a forced ``--imagetyp`` to every frame under the paths, read or not.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, count, repeat
from pathlib import PurePath
from typing import Any, NamedTuple, TypedDict

from sqlalchemy import delete, false, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from ccdcal import limits
from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.catalog.history import record as record_changes
from ccdcal.catalog.models import FRAME_KINDS, Calibration, Frame, HeaderCard, Master, utcnow
from ccdcal.catalog.queries import in_chunks
from ccdcal.errors import NoFitsError, UsageError
from ccdcal.ingestion.forced import force_by_name, force_type
from ccdcal.ingestion.normalise import (
    folders_between,
    parse_type_rule,
    type_from_folders,
)
from ccdcal.ingestion.reader import CardColumns, FrameRecord, ReadTask
from ccdcal.ingestion.readers import Progress, read_all, reader_plan
from ccdcal.ingestion.scan import Found, no_fits, resolve_roots, walk
from ccdcal.runtime.cluster import check_address
from ccdcal.runtime.pathtext import is_text, not_text_reason, shown

# Files written per transaction.
BATCH = 250


class PathReason(TypedDict):
    """A file or folder and why it was not catalogued."""

    path: str
    reason: str


class PathNote(TypedDict):
    """A file ccdcal wrote, found under an ingested path, and what it is (not catalogued)."""

    path: str
    note: str


class IngestRecord(TypedDict):
    """``runs.summary`` of an ingest run (:meth:`IngestSummary.as_dict`), read back by the report
    (:func:`ccdcal.report.problems.from_runs`)."""

    new: int
    changed: int
    unchanged: int
    missing: int
    reappeared: int
    forced: int
    rejected: list[PathReason]
    by_type: dict[str, int]
    unclassified: list[str]
    not_read: list[PathReason]
    skipped: list[PathNote]


@dataclass
class IngestSummary:
    """What one ingest did. ``rejected`` lists (path, reason) for every file that could not be catalogued,
    ``unreadable`` for every folder, or file in one, that could not be looked at (no permission): what is
    there is neither catalogued nor marked missing, and its catalogued rows are left as they are."""

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
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    #: (path, note) of every file ccdcal wrote found under the paths: not catalogued (not a problem).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Why nothing was found under the paths (the frames catalogued there are all gone), else ``None``.
    no_fits: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when everything was catalogued; 1 when any file is rejected, a folder could not be read, or
        the paths hold no FITS file (docs/design.md, Commands and exit codes)."""
        return 1 if self.rejected or self.unreadable or self.no_fits else 0

    def problem_lines(self) -> list[str]:
        """For stderr: the files rejected and what could not be read, each with the reason; that the paths
        hold no FITS file."""
        lines = [self.no_fits[:1].upper() + self.no_fits[1:]] if self.no_fits else []
        for title, items in (("Rejected", self.rejected), ("Not read", self.unreadable)):
            if items:
                lines += [f"{title} ({len(items)}):", *(f"  {path}: {reason}" for path, reason in items)]
        return lines

    def as_dict(self) -> IngestRecord:
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
            "not_read": [{"path": path, "reason": reason} for path, reason in self.unreadable],
            "skipped": [{"path": path, "note": note} for path, note in self.skipped],
        }


class _Known(NamedTuple):
    """The catalog's row for a path, as far as the comparison needs it."""

    id: int
    size: int
    mtime: float
    status: str
    sha256: str | None
    imagetyp: str | None
    imagetyp_source: str | None


def ingest(
    catalog: Catalog,
    paths: Iterable[str | os.PathLike[str]],
    *,
    imagetyp: str | None = None,
    jobs: int | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
    type_rules: Sequence[str] = (),
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
        Reader processes (1: read here, in order); by default chosen from the number and sizes of
        the files, see :func:`~ccdcal.ingestion.readers.reader_plan`.
    scheduler
        Read on the workers of this Dask cluster instead (``tcp://HOST:8786`` or ``local:N``; see
        :mod:`ccdcal.runtime.cluster`): for trees too large for one machine's cores. They must see the files
        at the same paths.
    progress
        Called with (files read, files to read).
    type_rules
        ``--type-from-name`` rules ``PATTERN=KIND`` (``'flats*=flat'``): every file under ``paths``
        whose name matches a pattern (shell wildcards, case-insensitive; the first rule that matches)
        gets that kind, as ``imagetyp`` gives one to all (``imagetyp_source = 'forced'``), also when
        already catalogued.

    Returns
    -------
    IngestSummary
    """
    given = [os.fspath(p) for p in paths]
    if not given:
        raise UsageError("ingest needs at least one file or folder")
    if jobs is not None:
        limits.JOBS.check(jobs)
    if imagetyp is not None and imagetyp not in FRAME_KINDS:
        raise UsageError(f"--imagetyp {imagetyp!r}: use one of {', '.join(FRAME_KINDS)}")
    if scheduler is not None:
        check_address(scheduler)
    try:
        rules = [parse_type_rule(text, FRAME_KINDS) for text in type_rules]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    roots = resolve_roots(list(given))
    # Paths are text in the catalog: under a root that is not, nothing can be catalogued or looked up.
    under = [str(r) for r in roots if is_text(r)]
    arguments = {"paths": [shown(r) for r in roots], "imagetyp": imagetyp, "jobs": jobs}
    if scheduler is not None:
        arguments["scheduler"] = scheduler
    if rules:
        arguments["type_from_name"] = list(type_rules)
    summary = IngestSummary()
    found = list(walk(roots, summary.unreadable))
    with catalog.session() as session:
        known = _known_under(session, under)
    if not found and not summary.unreadable:
        if all(row.status == "missing" for row in known.values()):
            raise NoFitsError(no_fits(roots))  # nothing to do: no run is recorded
        summary.no_fits = no_fits(roots)  # what was catalogued there is gone: marked missing
    with catalog.run("ingest", arguments) as run:
        summary.run_id = run.id
        to_read: list[ReadTask] = []
        sizes: list[int] = []
        seen: set[str] = set()
        for item in found:
            if not is_text(item.path):  # rejected alone: the catalog could not store (or find) its path
                summary.rejected.append((shown(item.path), not_text_reason(item.path)))
                continue
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
            to_read.append(ReadTask(item.path, _folder_type(item), item.problem))
            sizes.append(item.size)
        unknown = {path for path, _ in summary.unreadable}  # and what is inside: not known to be gone
        inside = tuple(path.rstrip(os.sep) + os.sep for path in unknown)
        vanished = [
            row.id
            for path, row in known.items()
            if path not in seen
            and row.status != "missing"
            and path not in unknown
            and not path.startswith(inside)
        ]
        summary.missing = len(vanished)

        with _bulk_card_load(catalog, len(to_read)):
            plan = reader_plan(jobs, sizes, scheduler)
            for batch in _batches(read_all(to_read, plan, progress, BATCH), BATCH):
                # Unchecked foreign keys: each card's frame, each frame's run, are this run's rows.
                with catalog.session(checked=False) as session:
                    _write_batch(session, batch, known, imagetyp, run.id, summary)
        with catalog.session() as session:
            if vanished:
                was = {row.id: row.status for row in known.values()}
                record_changes(
                    session, "frames", ((i, "status", was[i], "missing") for i in vanished), run_id=run.id
                )
                session.execute(
                    update(Frame).where(Frame.id.in_(vanished)).values(status="missing", run_id=run.id)
                )
            if imagetyp is not None:
                summary.forced = force_type(session, _under(under), imagetyp, run.id)
            if rules:
                summary.forced += force_by_name(session, _under(under), rules, run.id)
            _tally(session, under, summary)
        summary.skipped.sort()
        run.summary = summary.as_dict()
        run.partial = bool(summary.rejected or summary.unreadable or summary.no_fits)
    return summary


#: Name of the index on ``header_cards.keyword`` (created by migration 0001).
KEYWORD_INDEX = "ix_header_cards_keyword"
# A load of more files than this, into a catalog holding fewer frames than the load, rebuilds the
# keyword index once at the end instead of maintaining it row by row.
BULK_LOAD_FILES = 500


@contextmanager
def _bulk_card_load(catalog: Catalog, files: int) -> Iterator[None]:
    """Defer the SQLite keyword index while a large load fills ``header_cards``.

    Maintaining the index row by row costs about as much as the inserts themselves; building it once
    afterwards costs a fifth of that. The index is rebuilt when the load ends, however it ends; should
    the process die in between, the next ingest rebuilds it (``CREATE INDEX IF NOT EXISTS``), even one
    with nothing to read.
    """
    if catalog.dialect != "sqlite":
        yield
        return
    create = f"CREATE INDEX IF NOT EXISTS {KEYWORD_INDEX} ON header_cards (keyword)"
    bulk = False
    try:  # from the drop on: an interrupt held back during its commit is raised after it
        with catalog.session() as session:
            bulk = files > BULK_LOAD_FILES
            if bulk:
                bulk = (session.scalar(select(func.count()).select_from(Frame)) or 0) < files
            session.execute(text(f"DROP INDEX IF EXISTS {KEYWORD_INDEX}" if bulk else create))
        yield
    finally:
        if bulk:
            with catalog.session() as session:
                session.execute(text(create))


def _folder_type(item: Found) -> str | None:
    return type_from_folders(folders_between(PurePath(item.location), PurePath(item.root)))


def _under(roots: list[str]) -> Any:
    """SQL condition: a frame path equal to one of ``roots`` or inside it (an index range per root)."""
    if not roots:
        return false()
    clauses = []
    for root in roots:
        prefix = root.rstrip(os.sep) + os.sep
        # Every path inside the folder sorts between "root/" and "root0" ('0' follows '/' in ASCII).
        upper = prefix[:-1] + chr(ord(os.sep) + 1)
        clauses.append(Frame.path == root)
        clauses.append((Frame.path >= prefix) & (Frame.path < upper))
    return or_(*clauses)


def _known_rows(session: Session, condition: Any) -> dict[str, _Known]:
    """The catalog's rows of the frames meeting ``condition``, by path."""
    rows = session.connection().execute(
        select(
            Frame.path,
            Frame.id,
            Frame.size,
            Frame.mtime,
            Frame.status,
            Frame.sha256,
            Frame.imagetyp,
            Frame.imagetyp_source,
        ).where(condition)
    )
    return {row[0]: _Known(*row[1:]) for row in rows}


def _known_under(session: Session, roots: list[str]) -> dict[str, _Known]:
    return _known_rows(session, _under(roots))


def _known_paths(session: Session, paths: list[str]) -> dict[str, _Known]:
    """The catalog's rows of ``paths`` (read now)."""
    found: dict[str, _Known] = {}
    for chunk in in_chunks(paths):
        found.update(_known_rows(session, Frame.path.in_(chunk)))
    return found


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
    """Write one batch of read files: new rows, updated rows, and their header cards. Files ccdcal wrote
    (their CCDCALV card, or the sha256 of an output the catalog records) are not written but listed."""
    now = utcnow()
    # Another ingest may have catalogued some of these files since ``known`` was read: the rows are read
    # again in this transaction, after the writers' lock (SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory
    # lock), so that two ingests of one tree both succeed, each file catalogued once.
    lock_writers(session)
    known = {**known, **_known_paths(session, [r.path for r in batch])}
    new_rows: list[dict[str, Any]] = []
    new_cards: list[tuple[int, int, CardColumns]] = []
    pending_cards: list[tuple[int, CardColumns]] = []
    statuses: list[tuple[int, str, Any, Any]] = []  # the known frames' changes of status
    outputs = _recorded_outputs(session, [r.sha256 for r in batch if r.sha256 and r.error is None])
    for record in batch:
        note = record.skipped or outputs.get(record.sha256 or "")
        if note is not None and record.error is None:
            summary.skipped.append((record.path, note))
            continue
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
            statuses.append((previous.id, "status", previous.status, "ok"))
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
        del row["path"], row["ingested_at"]  # the frame has been known since then (--as-of)
        statuses.append((previous.id, "status", previous.status, row["status"]))
        statuses.append((previous.id, "sha256", previous.sha256, row["sha256"]))
        statuses.append((previous.id, "imagetyp", previous.imagetyp, row["imagetyp"]))
        statuses.append((previous.id, "imagetyp_source", previous.imagetyp_source, row["imagetyp_source"]))
        session.execute(update(Frame).where(Frame.id == previous.id).values(**row))
        session.execute(delete(HeaderCard).where(HeaderCard.frame_id == previous.id))
        new_cards.append((previous.id, record.hdu or 0, record.cards))
    if new_rows:
        ids = _insert_frames(session, new_rows)
        new_cards.extend(
            (frame_id, hdu, cards) for frame_id, (hdu, cards) in zip(ids, pending_cards, strict=True)
        )
    _insert_cards(session, new_cards)
    record_changes(session, "frames", statuses, run_id=run_id, at=now)


def _recorded_outputs(session: Session, sha256s: list[str]) -> dict[str, str]:
    """sha256 → note, for the files whose bytes are those of a master or a calibrated output the catalog
    records (a file ccdcal wrote whose CCDCALV card is gone)."""
    found: dict[str, str] = {}
    for chunk in in_chunks(sorted(set(sha256s))):
        for model, what in ((Master, "master"), (Calibration, "calibration")):
            rows = session.execute(select(model.sha256, model.id, model.path).where(model.sha256.in_(chunk)))
            for sha256, row_id, path in rows:
                name = os.path.basename(path or "")
                if sha256:
                    found.setdefault(
                        sha256,
                        f"the same bytes as {what}:{row_id} ({name}), a file ccdcal wrote, not a raw frame: "
                        "not catalogued",
                    )
    return found


def _insert_frames(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert new frame rows; return their ids in the order given.

    On SQLite the transaction holds the write lock (``BEGIN IMMEDIATE``), so the ids SQLite would assign
    (max + 1, ...) are assigned here and the rows go in one executemany; elsewhere ``RETURNING``.
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        start = (connection.execute(select(func.max(Frame.id))).scalar() or 0) + 1
        ids = list(range(start, start + len(rows)))
        for frame_id, row in zip(ids, rows, strict=True):
            row["id"] = frame_id
        connection.execute(insert(Frame), rows)
        return ids
    inserted = connection.execute(insert(Frame).returning(Frame.id, sort_by_parameter_order=True), rows)
    return list(inserted.scalars().all())


#: Rows of ``header_cards`` per INSERT statement on SQLite.
ROWS_PER_INSERT = 140

#: Columns of ``header_cards`` in the order :func:`_insert_cards` writes them.
_CARD_COLUMNS = ("frame_id", "hdu", "position", "keyword", "value", "value_num", "comment")


def _insert_cards(session: Session, cards_by_frame: list[tuple[int, int, CardColumns]]) -> None:
    """Bulk-insert header cards: the hot path of a first ingest (hundreds of thousands of rows).

    SQLAlchemy's executemany builds a parameter dict per row, which costs more than SQLite's insert
    itself; here rows are zipped from the card columns in C and go to the driver as plain tuples
    (PostgreSQL: ``COPY``). Values stay parameters.
    """
    width = len(_CARD_COLUMNS)
    # One flat list of every row's values, in row order: the rows are zipped and flattened in C, no
    # tuple kept per row (zip reuses its tuple once the flattening has read it).
    flat = list(
        chain.from_iterable(
            chain.from_iterable(
                zip(repeat(frame_id), repeat(hdu), count(), *columns)
                for frame_id, hdu, columns in cards_by_frame
            )
        )
    )
    if not flat:
        return
    connection = session.connection()
    columns = ", ".join(_CARD_COLUMNS)
    if connection.dialect.name == "postgresql":
        dbapi: Any = connection.connection.dbapi_connection
        with dbapi.cursor() as cursor, cursor.copy(f"COPY header_cards ({columns}) FROM STDIN") as copy:
            for row in zip(*[iter(flat)] * width, strict=True):
                copy.write_row(row)
        return
    if connection.dialect.paramstyle != "qmark":  # pragma: no cover - other drivers: the portable path
        rows = zip(*[iter(flat)] * width, strict=True)
        connection.execute(insert(HeaderCard), [dict(zip(_CARD_COLUMNS, r, strict=True)) for r in rows])
        return
    # Many rows per statement: SQLite spends less per row than with one statement per row. 140 rows of
    # 7 values stay under 999 parameters, the limit of older SQLite builds.
    one = "(" + ", ".join("?" * width) + ")"
    step = ROWS_PER_INSERT * width
    full = len(flat) // step * step
    if full:
        many = f"INSERT INTO header_cards ({columns}) VALUES " + ", ".join([one] * ROWS_PER_INSERT)
        connection.exec_driver_sql(many, [tuple(flat[i : i + step]) for i in range(0, full, step)])
    if full < len(flat):
        rest = list(zip(*[iter(flat[full:])] * width, strict=True))
        connection.exec_driver_sql(f"INSERT INTO header_cards ({columns}) VALUES {one}", rest)


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


def _tally(session: Session, roots: list[str], summary: IngestSummary) -> None:
    """Count the frames under the roots by kind, list the unclassified and the still-rejected ones."""
    connection = session.connection()
    under = _under(roots)
    for kind, n in connection.execute(
        select(Frame.imagetyp, func.count()).where(under, Frame.status == "ok").group_by(Frame.imagetyp)
    ):
        if kind is not None:
            summary.by_type[kind] = n
    summary.unclassified = list(
        connection.execute(
            select(Frame.path)
            .where(under, Frame.status == "ok", Frame.imagetyp.is_(None))
            .order_by(Frame.path)
        ).scalars()
    )
    reported = {path for path, _ in summary.rejected}
    for path, error in connection.execute(
        select(Frame.path, Frame.error).where(under, Frame.status == "rejected").order_by(Frame.path)
    ):
        if path not in reported:
            summary.rejected.append((path, error or "rejected"))
    summary.rejected.sort()
