"""How a catalog is reached: its URL, engines with ccdcal's connection settings (SQLite's pragmas and
locking, files that cannot be written), the identity of an SQLite file, and the temporary copies of tables
that a plan writes instead of the catalog (:meth:`ccdcal.catalog.db.Catalog.scratch`)."""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    URL,
    Column,
    Connection,
    Engine,
    Index,
    MetaData,
    Select,
    Table,
    create_engine,
    event,
    insert,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.pool import NullPool

from ccdcal.catalog.models import Base
from ccdcal.errors import CatalogError, CatalogReadOnlyError
from ccdcal.runtime.interrupts import raise_deferred

_log = logging.getLogger(__name__)

#: The databases a catalog can live in (docs/design.md, Catalog).
BACKENDS = ("sqlite", "postgresql")

#: Environment variable naming the catalog when ``--db`` is not given.
ENV_VAR = "CCDCAL_DB"
DEFAULT_DB = "ccdcal.db"

# SQLite waits this long for another writer before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 120_000


def resolve_url(db: str | os.PathLike[str] | None = None) -> URL:
    """The SQLAlchemy URL of a catalog given as a URL, a path, or nothing.

    Parameters
    ----------
    db
        A SQLAlchemy URL (``postgresql+psycopg://...``, ``sqlite:///...``) or a file path. ``None`` takes
        ``$CCDCAL_DB``, else ``./ccdcal.db``.

    Returns
    -------
    URL
        The URL; plain paths become absolute ``sqlite`` URLs.
    """
    if db is None:
        db = os.environ.get(ENV_VAR) or DEFAULT_DB
    text_db = os.fspath(db)
    if not text_db.strip():
        raise CatalogError("--db is empty; give a path (SQLite) or a URL such as postgresql+psycopg://...")
    if "://" in text_db:
        try:
            return make_url(text_db)
        except Exception as exc:  # SQLAlchemy raises ArgumentError and ValueError subclasses here
            raise CatalogError(f"--db {text_db!r} is not a valid database URL: {exc}") from exc
    return URL.create("sqlite", database=str(Path(text_db).expanduser().resolve()))


def describe(url: URL) -> str:
    """A short, password-free description of a catalog for messages."""
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.render_as_string(hide_password=True)


#: The execution option of a connection that only reads (:meth:`Catalog.reading`).
READ_OPTION = "ccdcal_read"

#: The execution option of a writing SQLite connection whose transactions skip the foreign-key checks
#: (:meth:`Catalog.session` with ``checked=False``): for bulk inserts whose references hold by
#: construction, where SQLite would look each one up (a sixth of ingest's inserts of header cards).
UNCHECKED_OPTION = "ccdcal_unchecked"


def sqlite_read_only(url: URL) -> tuple[str, bool] | None:
    """Why an SQLite catalog must be opened read-only, and whether as immutable; ``None``: it need not.

    Read-only when the URL asks for it (``?mode=ro``), when its file cannot be written, or when its folder
    cannot (SQLite writes its journal beside it). Immutable (nothing, not even the shared-memory index of
    its write-ahead log, is written or locked) when the folder cannot be written and holds no ``-shm`` file:
    read-only media.

    Raises
    ------
    CatalogError
        When the folder is read-only and a write-ahead log holds changes that only a writable folder lets
        SQLite read.
    """
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    path = Path(database)
    asked = url.query.get("mode") == "ro"
    if not path.exists():
        return ("opened with mode=ro", False) if asked else None
    file_writable = _writable(path)
    folder_writable = _writable(path.parent)
    if file_writable and folder_writable and not asked:
        return None
    if asked:
        why = "opened with mode=ro"
    elif not file_writable:
        why = f"{path} cannot be written"
    else:
        why = f"its folder {path.parent} cannot be written"
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    immutable = not folder_writable and not shm.exists()
    if immutable and wal.exists() and wal.stat().st_size > 0:
        raise CatalogError(
            f"cannot read the catalog {path} read-only: its write-ahead log {wal.name} holds changes that "
            f"SQLite reads only with {shm.name} beside it; open it once where its folder can be written"
        )
    return why, immutable


def _writable(path: Path) -> bool:
    """Whether this process may write ``path`` (a file, or a folder: create files in it)."""
    mode = os.W_OK | (os.X_OK if path.is_dir() else 0)
    effective = os.access in os.supports_effective_ids
    return os.access(path, mode, effective_ids=effective)


def make_engine(
    db: str | os.PathLike[str] | URL | None = None, read_only: tuple[str, bool] | None = None
) -> Engine:
    """Create the engine for a catalog, with ccdcal's connection settings.

    SQLite connections get foreign keys, WAL journaling, a long busy timeout and ``BEGIN IMMEDIATE``
    transactions, so concurrent ccdcal processes queue for the write lock instead of failing with
    "database is locked" when a reader upgrades to a writer; a connection with the execution option
    ``ccdcal_read`` (:meth:`Catalog.reading`) begins a deferred transaction instead, which reads one
    snapshot of the catalog without the write lock. With ``read_only`` (:func:`sqlite_read_only`) the
    file is opened with ``mode=ro`` (and ``immutable=1``), every transaction deferred.

    JSON columns are written by :func:`dumps_json` (standard JSON, which both databases accept), and the
    database's failures that come from its surroundings — a full disk, a read-only file, a lost
    connection — are raised as :class:`~ccdcal.errors.CatalogError` naming the catalog
    (:func:`explain_database_error`).

    Raises
    ------
    CatalogError
        The URL names a database other than SQLite or PostgreSQL, or one whose driver is not installed;
        the folder of an SQLite file does not exist.
    """
    url = db if isinstance(db, URL) else resolve_url(db)
    backend = url.get_backend_name()
    name = describe(url)
    if backend not in BACKENDS:
        raise CatalogError(
            f"--db {url.render_as_string(hide_password=True)}: a ccdcal catalog is an SQLite file or a "
            f"PostgreSQL database, not {backend}; give a path or postgresql+psycopg://USER@HOST/DATABASE"
        )
    if backend != "sqlite":
        engine = _create(url, pool_pre_ping=True)
        _explain_errors(engine, name)
        return engine
    if read_only is not None:
        engine = _read_only_engine(Path(str(url.database)), immutable=read_only[1])
        _explain_errors(engine, name)
        return engine
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        if Path(url.database).is_dir():
            raise CatalogError(f"--db {url.database} is a folder; give the path of a catalog file in it")
        in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if in_the_way is not None:
            raise CatalogError(
                f"cannot create the catalog {url.database}: {in_the_way} is a file, not a folder; "
                "choose another --db"
            )
        if not folder.is_dir():
            raise CatalogError(
                f"cannot create the catalog {url.database}: folder {folder} does not exist; "
                "create it or choose another --db"
            )
        if not Path(url.database).exists() and not _writable(folder):
            raise CatalogError(
                f"cannot create the catalog {url.database}: its folder {folder} cannot be written "
                "(read-only, or no permission); make it writable or choose another --db"
            )
    engine = _create(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(READ_OPTION):
            conn.exec_driver_sql("BEGIN")
        else:
            # Set before each writing transaction (SQLite ignores it inside one): checked unless asked.
            checks = "OFF" if options.get(UNCHECKED_OPTION) else "ON"
            cast(sqlite3.Connection, conn.connection.driver_connection).execute(
                f"PRAGMA foreign_keys = {checks}"
            )
            begin_immediate(conn)

    _explain_errors(engine, name)
    return engine


#: Milliseconds of one attempt at the write lock (:func:`begin_immediate`).
LOCK_ATTEMPT_MS = 50
_lock_patience: ContextVar[float] = ContextVar("ccdcal_lock_patience", default=SQLITE_BUSY_TIMEOUT_MS / 1000)


@contextmanager
def lock_patience(seconds: float) -> Iterator[None]:
    """Wait at most ``seconds`` for the catalog's write lock in the block (SQLite; PostgreSQL's
    ``lock_timeout`` is set by the caller's transaction): for the cleanup after an interrupt, which must
    not keep a stopping command waiting on another program."""
    token = _lock_patience.set(seconds)
    try:
        yield
    finally:
        _lock_patience.reset(token)


def begin_immediate(conn: Connection) -> None:
    """Begin a writing transaction on an SQLite connection: ``BEGIN IMMEDIATE``, waiting for the write
    lock another connection holds for up to :data:`SQLITE_BUSY_TIMEOUT_MS` (or :func:`lock_patience`).

    The wait is taken in attempts of :data:`LOCK_ATTEMPT_MS` (SQLite's busy timeout, which waits in C and
    delays every signal until it returns) with Python between them, so that Ctrl-C or SIGTERM stops a
    command within a tenth of a second even while another process writes
    (:mod:`ccdcal.runtime.interrupts`). The last attempt goes through SQLAlchemy, so that a lock held too
    long is the usual explained error.
    """
    raw = cast(sqlite3.Connection, conn.connection.driver_connection)
    deadline = time.monotonic() + _lock_patience.get()
    raw.execute(f"PRAGMA busy_timeout = {LOCK_ATTEMPT_MS}")
    try:
        while time.monotonic() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    break  # not a wait: SQLAlchemy raises it, explained, below
            raise_deferred()  # Ctrl-C or SIGTERM meanwhile: no transaction has begun, stop here
        raw.execute("PRAGMA busy_timeout = 0")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def _create(url: URL, **options: Any) -> Engine:
    """``create_engine`` with ccdcal's JSON; a dialect or driver that is not installed is a
    :class:`CatalogError`."""
    shown = url.render_as_string(hide_password=True)
    try:
        return create_engine(url, json_serializer=dumps_json, **options)
    except NoSuchModuleError:
        raise CatalogError(
            f"--db {shown}: SQLAlchemy has no database driver {url.drivername!r}; give a path (SQLite) or "
            "postgresql+psycopg://USER@HOST/DATABASE"
        ) from None
    except ImportError as exc:  # the dialect is known, its driver (DBAPI module) is not installed
        raise CatalogError(
            f"--db {shown}: its database driver is not installed ({exc}); give a path (SQLite) or "
            "postgresql+psycopg://USER@HOST/DATABASE, whose driver the postgres extra installs "
            "(pip install 'ccdcal[postgres]')"
        ) from None


def dumps_json(value: Any) -> str:
    """The text of a JSON column: standard JSON, a number that is not finite (NaN, infinity) written
    ``null`` — Python would write ``NaN`` or ``Infinity``, which PostgreSQL refuses and no JSON reader
    has to accept."""
    return json.dumps(_finite_json(value), allow_nan=False)


def _finite_json(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(item) for item in value]
    return value


def _read_only_engine(path: Path, *, immutable: bool) -> Engine:
    """An engine reading the SQLite file ``path`` without writing it (``mode=ro``; ``immutable=1`` on
    read-only media): every transaction deferred, a connection per session."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool, json_serializer=dumps_json)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def file_identity(url: URL) -> tuple[int, int] | None:
    """(device, inode) of an SQLite catalog's file, ``None`` for another database or a missing file."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    try:
        info = os.stat(database)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def shadow(
    connection: Connection,
    models: Sequence[type[Base]],
    sources: Mapping[type[Base], Select[Any]] | None = None,
) -> None:
    """Copy each model's table into a temporary table of the same name, which the connection's unqualified
    statements then read and write (SQLite and PostgreSQL look in the temporary schema first). Columns
    keep their types (and so SQLite's affinities), without defaults or foreign keys; indexes are copied.

    ``sources``: for some models, the select of the rows to copy instead of the table's (its columns in
    the table's order; the catalog as of a time, :mod:`ccdcal.catalog.history`). They are read first,
    into temporary tables of other names, while every name still means the catalog's table.
    """
    if not models:
        return
    schema = (
        "main" if connection.dialect.name == "sqlite" else connection.scalar(text("SELECT current_schema()"))
    )
    staged: dict[type[Base], Table] = {}
    for model in models:
        if sources is not None and model in sources:
            table = cast(Table, model.__table__)
            stage = _temporary(table, f"staged_{table.name}", indexes=False)
            stage.create(connection)
            names = [column.name for column in table.columns]
            connection.execute(insert(stage).from_select(names, sources[model]))
            staged[model] = stage
    for model in models:
        table = cast(Table, model.__table__)
        names = [column.name for column in table.columns]
        copy = _temporary(table, table.name, indexes=True)
        source = staged.get(model)
        if source is None:
            source = Table(
                table.name, MetaData(), *(Column(c.name, c.type) for c in table.columns), schema=schema
            )
        copy.create(connection)
        connection.execute(insert(copy).from_select(names, select(*(source.c[name] for name in names))))


def _temporary(table: Table, name: str, *, indexes: bool) -> Table:
    """A temporary table of ``table``'s columns (no defaults, no foreign keys), with its indexes."""
    copy = Table(
        name,
        MetaData(),
        *(Column(c.name, c.type, primary_key=c.primary_key, autoincrement=False) for c in table.columns),
        prefixes=["TEMPORARY"],
    )
    if indexes:
        for index in table.indexes:
            if len(index.columns) == len(index.expressions):  # an index of columns only
                Index(index.name, *(copy.c[column.name] for column in index.columns), unique=index.unique)
    return copy


def _explain_errors(engine: Engine, name: str) -> None:
    """Raise the database errors that come from the catalog's surroundings (a full disk, a read-only
    file, a catalog locked too long, a lost connection) as :class:`CatalogError` naming the catalog, where
    they arise; any other database error propagates as SQLAlchemy raised it."""

    @event.listens_for(engine, "handle_error")
    def _surroundings(context: ExceptionContext) -> None:
        if context.is_pre_ping:  # the pool reconnects on its own
            return
        if not isinstance(context.original_exception, Exception):  # Ctrl-C or SIGTERM: not the database's
            return
        error = explain_database_error(context.original_exception, name, disconnect=context.is_disconnect)
        if error is not None:
            _log.debug("catalog error", exc_info=context.original_exception)
            raise error


def explain_database_error(exc: BaseException, name: str, *, disconnect: bool = False) -> CatalogError | None:
    """The one-line error of a database failure that comes from the catalog's surroundings, or ``None``.

    Parameters
    ----------
    exc : BaseException
        The driver's exception (or SQLAlchemy's, wrapping it).
    name : str
        The catalog, as messages name it.
    disconnect : bool
        SQLAlchemy found that the connection is lost.
    """
    original = getattr(exc, "orig", None) or exc
    text_ = str(original).strip()
    first = text_.splitlines()[0] if text_ else type(original).__name__
    lower = text_.lower()
    again = "then run the same command again: what was finished is kept"
    if "database or disk is full" in lower or "no space left" in lower or "disk full" in lower:
        return CatalogError(
            f"the catalog {name} cannot be written: its disk is full ({first}); free space, {again}"
        )
    if "readonly database" in lower or getattr(original, "sqlstate", None) in ("25006", "42501"):
        # Read-only, and not seen when the catalog was opened (the media or the server changed since).
        return CatalogReadOnlyError(
            f"the catalog {name} cannot be written ({first}): run the command on a writable copy, or one "
            "that only reads"
        )
    if "disk i/o error" in lower:
        return CatalogError(
            f"the catalog {name} cannot be read or written ({first}); check its disk, {again}"
        )
    if "database is locked" in lower or "database table is locked" in lower:
        return CatalogError(
            f"the catalog {name} stayed locked by another program for "
            f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s ({first}); {again}"
        )
    lost = (
        "terminating connection",
        "server closed the connection",
        "connection is closed",
        "consuming input failed",
    )
    if disconnect or any(word in lower for word in lost):
        return CatalogError(
            f"lost the connection to the catalog {name} ({first}); when the database server answers "
            f"again, {again}"
        )
    return None
