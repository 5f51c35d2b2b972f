"""Opening a catalog: the engine, sessions, schema migration on open, and run records.

One :class:`Catalog` holds one engine for its whole life (never one per call). A catalog at an older schema
revision is upgraded by the Alembic migrations when opened; a file that is not a ccdcal catalog, or one
written by a newer ccdcal, raises a :class:`~ccdcal.errors.CatalogError` that names it.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import importlib.resources
import json
import logging
import math
import os
import platform
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    event,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ccdcal._version import __version__
from ccdcal.catalog.models import Base, Run, utcnow
from ccdcal.errors import CatalogError, CatalogTooNewError, NotACatalogError, NotFoundError
from ccdcal.runtime.owners import shielded

#: The newest schema revision this code knows. A test checks it equals the Alembic script head, so that
#: opening an up-to-date catalog needs neither Alembic nor the migration scripts.
SCHEMA_HEAD = "0005"

_log = logging.getLogger(__name__)

#: The databases a catalog can live in (docs/design.md, Catalog).
BACKENDS = ("sqlite", "postgresql")

#: Environment variable naming the catalog when ``--db`` is not given.
ENV_VAR = "CCDCAL_DB"
DEFAULT_DB = "ccdcal.db"

# SQLite waits this long for another writer before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 120_000
# Key of the PostgreSQL advisory lock that serialises schema migrations between processes.
_PG_MIGRATION_LOCK = 0x0CCDCA1


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


def make_engine(db: str | os.PathLike[str] | URL | None = None) -> Engine:
    """Create the engine for a catalog, with ccdcal's connection settings.

    SQLite connections get foreign keys, WAL journaling, a long busy timeout and ``BEGIN IMMEDIATE``
    transactions, so concurrent ccdcal processes queue for the write lock instead of failing with
    "database is locked" when a reader upgrades to a writer; a connection with the execution option
    ``ccdcal_read`` (:meth:`Catalog.reading`) begins a deferred transaction instead, which reads one
    snapshot of the catalog without the write lock.

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
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        if Path(url.database).is_dir():
            raise CatalogError(f"--db {url.database} is a folder; give the path of a catalog file in it")
        if not folder.is_dir():
            raise CatalogError(
                f"cannot create the catalog {url.database}: folder {folder} does not exist; "
                "create it or choose another --db"
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
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_OPTION) else "BEGIN IMMEDIATE")

    _explain_errors(engine, name)
    return engine


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


def _explain_errors(engine: Engine, name: str) -> None:
    """Raise the database errors that come from the catalog's surroundings (a full disk, a read-only
    file, a catalog locked too long, a lost connection) as :class:`CatalogError` naming the catalog, where
    they arise; any other database error propagates as SQLAlchemy raised it."""

    @event.listens_for(engine, "handle_error")
    def _surroundings(context: ExceptionContext) -> None:
        if context.is_pre_ping:  # the pool reconnects on its own
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
    if "readonly database" in lower:
        return CatalogError(
            f"the catalog {name} cannot be written ({first}); check the permissions of the file and "
            "its folder"
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


def software_versions() -> dict[str, str | None]:
    """Versions of ccdcal and the libraries its numbers depend on (read without importing them)."""

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "ccdcal_version": __version__,
        "astropy_version": version("astropy"),
        "ccdproc_version": version("ccdproc"),
        "numpy_version": version("numpy"),
        "python_version": platform.python_version(),
    }


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER")


class Catalog:
    """A ccdcal catalog database: open it, migrate it, and run sessions against it.

    Parameters
    ----------
    db
        A SQLAlchemy URL or a path (see :func:`resolve_url`).
    upgrade
        Upgrade an older schema on open (the default). With ``False`` the schema is only checked (a
        missing SQLite file is then an error rather than a new catalog).

    Examples
    --------
    >>> with Catalog("night.db") as catalog:  # doctest: +SKIP
    ...     with catalog.session() as session:
    ...         session.scalars(select(Frame)).all()
    """

    def __init__(self, db: str | os.PathLike[str] | URL | None = None, *, upgrade: bool = True):
        self.url = db if isinstance(db, URL) else resolve_url(db)
        self.name = describe(self.url)
        if not upgrade and self.url.get_backend_name() == "sqlite":
            database = self.url.database
            if database and database != ":memory:" and not Path(database).exists():
                raise NotFoundError(f"no catalog at {database}; check --db or run `ccdcal ingest` first")
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        reads: dict[str, Any] = {READ_OPTION: True}
        if self.engine.dialect.name == "postgresql":  # one snapshot, as SQLite's deferred transaction
            reads |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        self._reader = self.engine.execution_options(**reads)  # the engine, for reading (see reading())
        self._readers = sessionmaker(self._reader, expire_on_commit=False)
        try:
            #: The schema revision the catalog had when opened (``None``: it was empty).
            self.revision_on_open = self.ensure_schema(upgrade=upgrade)[0]
        except BaseException:
            self.engine.dispose()
            raise

    # -- life cycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every connection of the catalog."""
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception.

        Ctrl-C never cuts the commit, the rollback or the release of the connection in two
        (:func:`ccdcal.runtime.owners.shielded`): a transaction left half closed would keep an SQLite catalog
        locked. It is raised once they are done — after a commit, with the transaction committed.
        """
        with self._transaction(self._sessions()) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reading, in one transaction, as :meth:`session`.

        It reads one snapshot of the catalog (PostgreSQL: ``REPEATABLE READ``, read only) while other
        processes write; on SQLite it does not take the write lock that :meth:`session` takes at once
        (``BEGIN IMMEDIATE``), so that writers are not kept waiting and two readers read at the same time.
        """
        with self._transaction(self._readers()) as session:
            yield session

    @contextmanager
    def _transaction(self, session: Session) -> Iterator[Session]:
        try:
            session.begin()
            yield session
            with shielded():
                session.commit()
        except BaseException:
            with shielded(), suppress(Exception):  # after a flush cut short: the pool's reset rolls back
                session.rollback()
            raise
        finally:
            with shielded():
                session.close()

    # -- schema -------------------------------------------------------------------------------------
    def current_revision(self) -> str | None:
        """The catalog's schema revision, or ``None`` for an empty database."""
        with self._connect(read=True) as conn:
            return _read_revision(conn)

    def ensure_schema(self, *, upgrade: bool = True) -> tuple[str | None, str | None]:
        """Check the schema and upgrade an older one; return (revision before, revision now)."""
        with self._connect(read=True) as conn:
            if _read_revision(conn) == SCHEMA_HEAD:
                return SCHEMA_HEAD, SCHEMA_HEAD
        with self._connect() as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            before = _read_revision(conn)
            if before is None:
                tables = [t for t in inspect(conn).get_table_names() if not t.startswith("sqlite_")]
                if tables:
                    shown = ", ".join(sorted(tables)[:4])
                    raise NotACatalogError(
                        f"{self.name} is not a ccdcal catalog (it holds other tables: {shown}); "
                        "choose another --db"
                    )
            elif before != SCHEMA_HEAD and before not in _known_revisions():
                raise CatalogTooNewError(
                    f"{self.name} is at schema revision {before}, newer than ccdcal {__version__} "
                    f"knows (up to {SCHEMA_HEAD}); upgrade ccdcal to use this catalog"
                )
            if before == SCHEMA_HEAD:
                return before, before
            if not upgrade:
                return before, before
            _alembic_upgrade(conn)
            return before, SCHEMA_HEAD

    @contextmanager
    def _connect(self, read: bool = False) -> Iterator[Connection]:
        try:
            with (self._reader if read else self.engine).connect() as conn:
                yield conn
        except DatabaseError as exc:
            raise _explain(exc, self.name) from exc

    # -- runs ---------------------------------------------------------------------------------------
    @contextmanager
    def run(self, command: str, arguments: dict[str, Any] | None = None) -> Iterator[RunLog]:
        """Record one command that changes the catalog as a ``runs`` row.

        The row is written when the block starts (status ``running``) and finished when it ends:
        ``ok``, or ``partial`` when :attr:`RunLog.partial` was set, ``interrupted`` on Ctrl-C, ``failed``
        on any other exception (which propagates).
        """
        with self.session() as session:
            row = Run(
                command=command,
                arguments=arguments or {},
                started_at=utcnow(),
                status="running",
                host=socket.gethostname(),
                user=_user(),
                pid=os.getpid(),
                **software_versions(),
            )
            session.add(row)
            session.flush()
            run_id = row.id
        log = RunLog(run_id)
        status = "failed"
        ended = False
        try:
            yield log
            status = "partial" if log.partial else "ok"
            ended = True
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            try:
                with self.session() as session:
                    finished = session.get(Run, run_id)
                    if finished is not None:
                        finished.status = status
                        finished.finished_at = utcnow()
                        finished.summary = dict(log.summary)
            except (CatalogError, DatabaseError):
                if ended:
                    raise
                # The error that stopped the run is the one to report (a full disk or a lost connection
                # may also keep its row from being finished: a later process run marks it died).
                _log.debug("run %s: its row could not be finished", run_id, exc_info=True)

    def runs(self, limit: int = 20) -> list[Run]:
        """The most recent runs, newest first."""
        with self.reading() as session:
            return list(session.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))

    def committed(self, model: type[Base], row_id: int | None) -> bool:
        """Whether the row ``row_id`` of ``model`` is in the catalog: after an interrupted transaction,
        whether its commit went through (a Ctrl-C is raised after a commit it arrived during)."""
        if row_id is None:
            return False
        try:
            with self.reading() as session:
                return session.get(model, row_id) is not None
        except Exception:  # the catalog cannot be read now: the row is taken as not committed
            return False


class RunLog:
    """What a command reports about its run: a summary (JSON) and whether anything was left undone."""

    def __init__(self, run_id: int) -> None:
        self.id = run_id
        self.summary: Mapping[str, Any] = {}
        self.partial = False


def _read_revision(conn: Connection) -> str | None:
    try:
        if not conn.dialect.has_table(conn, "alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DatabaseError as exc:
        raise _explain(exc, describe(conn.engine.url)) from exc


def _explain(exc: DatabaseError, name: str) -> CatalogError:
    message = str(exc.orig) if exc.orig is not None else str(exc)
    if "not a database" in message or "file is encrypted" in message:
        return NotACatalogError(
            f"{name} is not a ccdcal catalog (not an SQLite database); choose another --db"
        )
    if isinstance(exc, OperationalError) and "unable to open" in message:
        return CatalogError(f"cannot open the catalog {name}: {message}; check the path and permissions")
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return CatalogError(f"cannot use the catalog {name}: {first_line}")


def _alembic_config(connection: Connection | None = None) -> Any:
    # Imported here to keep start-up fast: Alembic loads only to create or upgrade a schema.
    from alembic.config import Config

    config = Config()
    # Found by name, not imported: the migrations package (Alembic's env.py) is Alembic's to load.
    config.set_main_option("script_location", str(importlib.resources.files("ccdcal.migrations")))
    config.attributes["connection"] = connection
    return config


def _known_revisions() -> set[str]:
    # Imported here to keep start-up fast: Alembic loads only to check or upgrade a schema.
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def script_head() -> str | None:
    """The head revision of the migration scripts (for checking :data:`SCHEMA_HEAD`)."""
    # Imported here to keep start-up fast: Alembic loads only to check or upgrade a schema.
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _alembic_upgrade(conn: Connection) -> None:
    # Imported here to keep start-up fast: Alembic loads only to create or upgrade a schema.
    from alembic import command

    command.upgrade(_alembic_config(conn), "head")


#: The PostgreSQL advisory lock taken by :func:`lock_writers`.
_PG_WRITERS_LOCK = 0x0CCDCA2


def lock_writers(session: Session) -> None:
    """Serialise this transaction with the other writers that plan: the plans and claims of concurrent
    ``ccdcal process`` runs, and the registration of masters, take turns (docs/design.md, Runs, claims and
    recovery).

    On PostgreSQL a transaction-level advisory lock, released at commit or rollback. On SQLite every
    ccdcal transaction already holds the database's write lock from its start (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_WRITERS_LOCK})
