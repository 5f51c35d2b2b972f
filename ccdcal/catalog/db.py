"""Opening a catalog: sessions, schema migration on open, and run records (its URL and engine:
:mod:`ccdcal.catalog.engine`).

One :class:`Catalog` holds one engine for its whole life (never one per call). A catalog at an older schema
revision is upgraded by the Alembic migrations when opened; a file that is not a ccdcal catalog, or one
written by a newer ccdcal, raises a :class:`~ccdcal.errors.CatalogError` that names it.

A catalog that cannot be written (an SQLite file on read-only media or without write permission, a
PostgreSQL server or user that may not write) is opened read-only: reading sessions and the scratch
session of a plan (:meth:`Catalog.scratch`) work, a writing session is refused with one line
(:class:`~ccdcal.errors.CatalogReadOnlyError`). An SQLite file is also checked at every writing session
and commit to still be the file that was opened: one deleted or replaced meanwhile stops the command
(:class:`~ccdcal.errors.CatalogGoneError`) instead of writing rows nobody will read.
"""

from __future__ import annotations

import datetime as dt
import getpass
import importlib.metadata
import importlib.resources
import logging
import os
import platform
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, inspect, select, text
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ccdcal._version import __version__
from ccdcal.catalog.engine import (
    READ_OPTION,
    UNCHECKED_OPTION,
    describe,
    file_identity,
    lock_patience,
    make_engine,
    resolve_url,
    shadow,
    sqlite_read_only,
)
from ccdcal.catalog.history import AS_OF_MODELS, as_of_rows
from ccdcal.catalog.models import CATALOG_ID, Base, CatalogInfo, Run, utcnow
from ccdcal.errors import (
    CatalogError,
    CatalogGoneError,
    CatalogReadOnlyError,
    CatalogTooNewError,
    NoCatalogError,
    NotACatalogError,
    UsageError,
)
from ccdcal.runtime.interrupts import shielded

#: The newest schema revision this code knows. A test checks it equals the Alembic script head, so that
#: opening an up-to-date catalog needs neither Alembic nor the migration scripts.
SCHEMA_HEAD = "0008"
#: Seconds a stopping command's cleanup (its run row, its claims) waits for a lock another program holds:
#: past it the cleanup is left to the next run's recovery, and the command stops all the same.
STOPPING_PATIENCE = 2.0
#: The oldest revision this code reads without upgrading it (a read-only catalog cannot be upgraded): the
#: revisions after it only add what no reading command reads. Raise it with a revision that changes what
#: they read: 0008 adds the frame QA tables that ``status -v``, ``masters --list -v`` and ``report`` read.
OLDEST_READABLE = "0008"

_log = logging.getLogger(__name__)

# Key of the PostgreSQL advisory lock that serialises schema migrations between processes.
_PG_MIGRATION_LOCK = 0x0CCDCA1


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
        Upgrade an older schema on open (the default). With ``False`` the schema is only checked, and no
        catalog is created.
    create
        Create the catalog when there is none (the default): the SQLite file, or ccdcal's tables in an
        empty PostgreSQL database. With ``False`` (every command that only reads or marks a catalog) a
        missing one is refused (:class:`~ccdcal.errors.NoCatalogError`) and nothing is created.

    Examples
    --------
    >>> with Catalog("night.db") as catalog:  # doctest: +SKIP
    ...     with catalog.session() as session:
    ...         session.scalars(select(Frame)).all()
    """

    def __init__(
        self, db: str | os.PathLike[str] | URL | None = None, *, upgrade: bool = True, create: bool = True
    ):
        self.url = db if isinstance(db, URL) else resolve_url(db)
        self.name = describe(self.url)
        self._create = create and upgrade
        if not self._create and self.url.get_backend_name() == "sqlite":
            database = self.url.database
            if database and database != ":memory:" and not Path(database).exists():
                raise NoCatalogError(
                    f"no catalog at {database}; check --db (or CCDCAL_DB) and the current folder, or run "
                    "`ccdcal ingest` first to create one"
                )
            empty = database and database != ":memory:" and Path(database).stat().st_size == 0
            if empty:  # refused before SQLite writes its header into the file
                raise self._no_tables()
        read_only = sqlite_read_only(self.url)
        #: Why the catalog cannot be written (``None``: it can).
        self.read_only: str | None = read_only[0] if read_only is not None else None
        #: Why the catalog can no longer be used: its file was deleted or replaced (``None``: it is there).
        self.gone: str | None = None
        self.engine = make_engine(self.url, read_only)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        unchecked = self.engine.execution_options(**{UNCHECKED_OPTION: True})
        self._unchecked = sessionmaker(unchecked, expire_on_commit=False)  # see session(checked=False)
        reads: dict[str, Any] = {READ_OPTION: True}
        plans: dict[str, Any] = {READ_OPTION: True}
        if self.engine.dialect.name == "postgresql":  # one snapshot, as SQLite's deferred transaction
            reads |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
            plans |= {"isolation_level": "REPEATABLE READ"}  # its temporary tables are written
        self._reader = self.engine.execution_options(**reads)  # the engine, for reading (see reading())
        self._readers = sessionmaker(self._reader, expire_on_commit=False)
        self._planner = self.engine.execution_options(**plans)  # for scratch()
        self._catalog_id: str | None = None
        self._identity: tuple[int, int] | None = None
        #: Read the catalog as it stood at this time (naive UTC; ``--as-of``): every reading session and
        #: scratch plan sees the rows and states of then (:mod:`ccdcal.catalog.history`), and no session
        #: may write. ``None``: as it is.
        self.as_of: dt.datetime | None = None
        try:
            #: The schema revision the catalog had when opened (``None``: it was empty).
            self.revision_on_open = self.ensure_schema(upgrade=upgrade and self.read_only is None)[0]
            if self.dialect == "postgresql" and self.revision_on_open is not None:
                self.read_only = self._postgresql_read_only()
            if self.read_only is not None:
                self._check_readable(self.revision_on_open)
            self._identity = file_identity(self.url)
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

    def require_writable(self) -> None:
        """Refuse a command that writes to a catalog that cannot be written.

        Raises
        ------
        CatalogReadOnlyError
            Naming the catalog, why it is read-only, and what to do.
        """
        if self.read_only is not None:
            raise CatalogReadOnlyError(
                f"the catalog {self.name} is read-only ({self.read_only}) and this command writes to it: "
                "run it on a writable copy; status, process --dry-run, provenance, impact, reproduce, "
                "report, preview, masters --list and db current only read"
            )

    def check_present(self) -> None:
        """Check that an SQLite catalog's file is still the one opened (not deleted, nor replaced).

        Raises
        ------
        CatalogGoneError
            When it is not: nothing more can be recorded in it (every later call raises it too).
        """
        if self.gone is None and self._identity is not None and file_identity(self.url) != self._identity:
            self.gone = (
                f"the catalog {self.name} was deleted or replaced while this command was working: what it "
                "did from then on is not recorded; restore the catalog, then run the command again"
            )
        if self.gone is not None:
            raise CatalogGoneError(self.gone)

    def _no_tables(self) -> NoCatalogError:
        """The error of a database without ccdcal's tables, opened by a command that creates none."""
        return NoCatalogError(
            f"no catalog in {self.name}: the database holds no ccdcal tables; check --db (or CCDCAL_DB), or "
            "run `ccdcal ingest` or `ccdcal db upgrade` first to create one"
        )

    def _check_readable(self, revision: str | None) -> None:
        """A read-only catalog is read as it is: refuse one that needs a schema this code cannot read."""
        if revision == SCHEMA_HEAD:
            return
        if revision is None:
            raise CatalogReadOnlyError(
                f"{self.name} is read-only ({self.read_only}) and holds no catalog; check --db"
            )
        if not revision.isdigit() or int(revision) < int(OLDEST_READABLE):
            raise CatalogReadOnlyError(
                f"the catalog {self.name} is read-only ({self.read_only}) and at schema revision {revision}, "
                f"older than ccdcal {__version__} reads without upgrading ({OLDEST_READABLE}): upgrade a "
                "writable copy with `ccdcal db upgrade`"
            )

    def _postgresql_read_only(self) -> str | None:
        """Why a PostgreSQL catalog cannot be written, asked of the server (``None``: it can)."""
        query = text(
            "SELECT current_setting('default_transaction_read_only') = 'on', pg_is_in_recovery(), "
            "has_table_privilege('runs', 'INSERT'), current_user"
        )
        try:
            with self._connect(read=True) as conn:
                row = conn.execute(query).one()
        except (CatalogError, DatabaseError):
            return None
        read_only, standby, may_insert, user = row
        if standby:
            return "the server is a standby"
        if read_only:
            return "its transactions are read-only"
        return None if may_insert else f"the user {user} may not write its tables"

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
    def session(self, patience: float | None = None, *, checked: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception.

        With ``checked`` false, an SQLite catalog does not check the transaction's foreign keys: for bulk
        inserts whose references hold by construction (ingest's frames and header cards).

        With ``patience``, the transaction waits at most that many seconds for a lock another program
        holds (SQLite's write lock, PostgreSQL's row and advisory locks), then fails: for the cleanup of a
        command that stops, which must not keep the user waiting (:data:`STOPPING_PATIENCE`).

        Ctrl-C never cuts the commit, the rollback or the release of the connection in two
        (:func:`ccdcal.runtime.owners.shielded`): a transaction left half closed would keep an SQLite catalog
        locked. It is raised once they are done — after a commit, with the transaction committed.

        Raises
        ------
        CatalogReadOnlyError
            The catalog cannot be written (before anything is done).
        CatalogGoneError
            The catalog's file was deleted or replaced: checked when the session begins and just before it
            commits (the transaction is then rolled back).
        """
        if self.as_of is not None:
            raise UsageError(
                "--as-of reads the catalog as it stood then: a command that writes cannot use it"
            )
        self.require_writable()
        self.check_present()
        sessions = self._sessions if checked else self._unchecked
        if patience is None:
            with self._transaction(sessions(), before_commit=self.check_present) as session:
                yield session
            return
        with (
            lock_patience(patience),
            self._transaction(sessions(), before_commit=self.check_present) as session,
        ):
            if self.dialect == "postgresql":
                session.execute(text(f"SET LOCAL lock_timeout = {int(patience * 1000)}"))
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reading, in one transaction, as :meth:`session`.

        It reads one snapshot of the catalog (PostgreSQL: ``REPEATABLE READ``, read only) while other
        processes write; on SQLite it does not take the write lock that :meth:`session` takes at once
        (``BEGIN IMMEDIATE``), so that writers are not kept waiting and two readers read at the same time.

        With :attr:`as_of` set, it reads the catalog as it stood then (a :meth:`scratch` session).
        """
        if self.as_of is not None:
            with self.scratch() as session:
                yield session
            return
        with self._transaction(self._readers()) as session:
            yield session

    @contextmanager
    def scratch(self, *shadowed: type[Base]) -> Iterator[Session]:
        """A session for planning what a command would write, writing nothing: it reads one snapshot of
        the catalog (as :meth:`reading`), and the tables of ``shadowed`` are copied into temporary tables
        of the same names, which the session's statements read and write instead (provisional rows). Its
        transaction is rolled back and its connection closed at the end, temporary tables with it. Works on
        a read-only catalog.

        With :attr:`as_of` set, the tables whose rows or states change are copied as they stood then
        (:data:`ccdcal.catalog.history.AS_OF_MODELS`, ``shadowed`` among them).
        """
        models: tuple[type[Base], ...] = shadowed
        sources = None
        if self.as_of is not None:
            models = (*AS_OF_MODELS, *(model for model in shadowed if model not in AS_OF_MODELS))
            sources = as_of_rows(self.as_of)
        try:
            connection = self._planner.connect()
        except DatabaseError as exc:
            raise _explain(exc, self.name) from exc
        try:
            transaction = connection.begin()
            session = Session(bind=connection, expire_on_commit=False)
            try:
                shadow(connection, models, sources)
                yield session
            finally:
                with shielded(), suppress(Exception):
                    session.close()
                    transaction.rollback()
        finally:
            with shielded():
                connection.invalidate()  # never back to a pool: its temporary tables go with it
                connection.close()

    @contextmanager
    def _transaction(self, session: Session, before_commit: Any = None) -> Iterator[Session]:
        try:
            session.begin()
            yield session
            if before_commit is not None:
                before_commit()
            with shielded():
                session.commit()
        except BaseException as exc:
            with shielded(), suppress(Exception):  # after a flush cut short: the pool's reset rolls back
                session.rollback()
            if isinstance(exc, DatabaseError) and _refused_write(exc):  # read-only, and not seen on open
                raise CatalogReadOnlyError(
                    f"the catalog {self.name} cannot be written ({_first_line(exc)}): run the command on a "
                    "writable copy, or one that only reads"
                ) from exc
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
                if not self._create:
                    raise self._no_tables()
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
        run_id: int | None = None
        log: RunLog | None = None
        status = "failed"
        ended = False
        try:  # from the row's insert on: an interrupt held back during its commit is raised after it
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
            yield log
            status = "partial" if log.partial else "ok"
            ended = True
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            # run_id unset: stopped before the row was written. A row rolled back is not found below.
            if run_id is not None and self.gone is None:  # a deleted catalog cannot record the end
                try:
                    with self.session(patience=None if ended else STOPPING_PATIENCE) as session:
                        finished = session.get(Run, run_id)
                        if finished is not None:
                            finished.status = status
                            finished.finished_at = utcnow()
                            finished.summary = dict(log.summary) if log is not None else {}
                except (CatalogError, DatabaseError):
                    if ended:
                        raise
                    # The error that stopped the run is the one to report (a full disk or a lost
                    # connection may also keep its row from being finished: a later run marks it died).
                    _log.debug("run %s: its row could not be finished", run_id, exc_info=True)

    def runs(self, limit: int = 20) -> list[Run]:
        """The most recent runs, newest first."""
        with self.reading() as session:
            return list(session.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))

    def committed(self, model: type[Base], row_id: int | None) -> bool:
        """Whether the row ``row_id`` of ``model`` is in the catalog: after an interrupted transaction,
        whether its commit went through (a Ctrl-C is raised after a commit it arrived during)."""
        if row_id is None or self.gone is not None:  # gone: checked before the commit, so not committed
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


def _refused_write(exc: DatabaseError) -> bool:
    """Whether the database refused a write because it is read-only (SQLite), or the user may not write
    or the transaction is read-only (PostgreSQL)."""
    if getattr(exc.orig, "sqlstate", None) in ("25006", "42501"):
        return True
    return "readonly database" in str(exc.orig)


def _first_line(exc: DatabaseError) -> str:
    message = str(exc.orig if exc.orig is not None else exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


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
