"""Opening a catalog: the engine, sessions, schema migration on open, and run records.

One :class:`Catalog` holds one engine for its whole life (never one per call). A catalog at an older schema
revision is upgraded by the Alembic migrations when opened; a file that is not a ccdcal catalog, or one
written by a newer ccdcal, raises a :class:`~ccdcal.errors.CatalogError` that names it.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import importlib.resources
import os
import platform
import socket
from collections.abc import Iterator
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
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ccdcal._version import __version__
from ccdcal.catalog.models import CATALOG_ID, Base, CatalogInfo, Run, utcnow
from ccdcal.errors import CatalogError, CatalogTooNewError, NotACatalogError, NotFoundError
from ccdcal.runtime.owners import shielded

#: The newest schema revision this code knows. A test checks it equals the Alembic script head, so that
#: opening an up-to-date catalog needs neither Alembic nor the migration scripts.
SCHEMA_HEAD = "0006"

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
    """
    url = db if isinstance(db, URL) else resolve_url(db)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        if not folder.is_dir():
            raise CatalogError(
                f"cannot create the catalog {url.database}: folder {folder} does not exist; "
                "create it or choose another --db"
            )
    engine = create_engine(
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

    return engine


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
        self._catalog_id: str | None = None
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

    @property
    def catalog_id(self) -> str:
        """The catalog's UUID (``catalog_info``, made with the catalog): the owner named in the
        ``.ccdcal-catalog`` marker of every masters and output folder it writes into."""
        if self._catalog_id is None:
            with self.reading() as session:
                found = session.get(CatalogInfo, CATALOG_ID)
            if found is None:
                raise CatalogError(
                    f"{self.name} holds no catalog_id in its catalog_info table; put back the id its "
                    "folders' markers hold: INSERT INTO catalog_info VALUES ('catalog_id', '<the id in "
                    ".ccdcal-catalog>')"
                )
            self._catalog_id = found.value
        return self._catalog_id

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
        try:
            yield log
            status = "partial" if log.partial else "ok"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            with self.session() as session:
                finished = session.get(Run, run_id)
                if finished is not None:
                    finished.status = status
                    finished.finished_at = utcnow()
                    finished.summary = log.summary

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
        self.summary: dict[str, Any] = {}
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
