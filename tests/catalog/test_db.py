"""Opening catalogs: migrations on SQLite and PostgreSQL, schema checks, run rows."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, make_url, select, text

from ccdcal.catalog.db import SCHEMA_HEAD, Catalog, make_engine, resolve_url, script_head
from ccdcal.catalog.models import Base, Run
from ccdcal.errors import CatalogTooNewError, NoCatalogError, NotACatalogError, NotFoundError

TABLES = {
    "frames",
    "header_cards",
    "masters",
    "master_inputs",
    "master_calibrators",
    "calibrations",
    "calibration_masters",
    "runs",
    "claims",
    "catalog_info",
    "state_changes",
    "frame_stats",
    "frame_qa",
    "master_set_aside",
}


def test_schema_head_constant_matches_the_migration_scripts() -> None:
    assert script_head() == SCHEMA_HEAD


def test_every_table_is_checked_here_and_documented() -> None:
    """Every table of the models is among those the migrations are checked to build; the README's catalog
    table names each; docs/design.md (Catalog, Tables) names each with every column."""
    from tests.conftest import ROOT

    assert set(Base.metadata.tables) == TABLES
    readme = (ROOT / "README.md").read_text().split("\n## The catalog\n", 1)[1].split("\n## ", 1)[0]
    listed = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `")}
    assert listed >= TABLES
    design = (ROOT / "docs" / "design.md").read_text()
    tables = design.split("\n### Tables\n", 1)[1].split("\n### ", 1)[0]
    missing = [
        f"{name}.{column.name}"
        for name, table in Base.metadata.tables.items()
        for column in table.columns
        if f"`{name}`" not in tables or f"`{column.name}`" not in tables
    ]
    assert missing == []


def test_resolve_url_takes_paths_urls_and_environment(tmp_path: Path, monkeypatch) -> None:
    assert resolve_url(tmp_path / "a.db").database == str((tmp_path / "a.db").resolve())
    assert resolve_url("postgresql+psycopg://u@h/db").get_backend_name() == "postgresql"
    monkeypatch.setenv("CCDCAL_DB", str(tmp_path / "env.db"))
    assert resolve_url(None).database == str(tmp_path / "env.db")
    monkeypatch.delenv("CCDCAL_DB")
    monkeypatch.chdir(tmp_path)
    assert resolve_url(None).database == str(tmp_path / "ccdcal.db")


def _check_schema(catalog: Catalog) -> None:
    inspector = inspect(catalog.engine)
    assert set(inspector.get_table_names()) >= TABLES
    assert catalog.current_revision() == SCHEMA_HEAD
    frame_indexes = {ix["name"] for ix in inspector.get_indexes("frames")}
    assert {"ix_frames_group", "ix_frames_imagetyp", "ix_frames_status", "ix_frames_sha256"} <= (
        frame_indexes
    )
    master_indexes = {ix["name"] for ix in inspector.get_indexes("masters")}
    assert "ix_masters_match" in master_indexes
    foreign = {
        (fk["referred_table"], tuple(fk["constrained_columns"]))
        for fk in inspector.get_foreign_keys("calibration_masters")
    }
    assert ("masters", ("master_id",)) in foreign
    assert ("calibrations", ("calibration_id",)) in foreign


def test_migrations_build_the_schema_from_empty_on_sqlite(tmp_path: Path) -> None:
    with Catalog(tmp_path / "new.db") as catalog:
        _check_schema(catalog)
        with catalog.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 60_000


@pytest.mark.postgres
def test_migrations_build_the_schema_from_empty_on_postgresql(pg_url: str) -> None:
    with Catalog(pg_url) as catalog:
        assert catalog.dialect == "postgresql"
        _check_schema(catalog)
    with Catalog(pg_url) as again:  # already at head: opens without migrating
        assert again.current_revision() == SCHEMA_HEAD


def test_migration_matches_the_models(tmp_path: Path) -> None:
    """The tables Alembic builds have the columns the models declare (create_all only for comparison)."""
    from sqlalchemy import create_engine

    reference = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    Base.metadata.create_all(reference)
    with Catalog(tmp_path / "migrated.db") as catalog:
        migrated, modelled = inspect(catalog.engine), inspect(reference)
        for table in TABLES:
            assert [c["name"] for c in migrated.get_columns(table)] == [
                c["name"] for c in modelled.get_columns(table)
            ], table
            assert {i["name"] for i in migrated.get_indexes(table)} == {
                i["name"] for i in modelled.get_indexes(table)
            }, table
    reference.dispose()


def test_an_older_catalog_is_upgraded_on_open(tmp_path: Path) -> None:
    from alembic import command

    from ccdcal.catalog.db import _alembic_config, make_engine

    engine = make_engine(tmp_path / "old.db")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
    engine.dispose()
    with Catalog(tmp_path / "old.db") as catalog:
        assert catalog.current_revision() == SCHEMA_HEAD


def _at_revision(url: str, revision: str) -> None:
    """A catalog made by the migrations up to ``revision`` only (as an older ccdcal made it)."""
    from alembic import command

    from ccdcal.catalog.db import _alembic_config, make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)
    engine.dispose()


def test_revision_0006_gives_a_catalog_at_0005_its_id(db_url: str) -> None:
    """Revision 0006 adds ``catalog_info`` to a catalog made at 0005, with a new UUID as ``catalog_id``,
    on SQLite and PostgreSQL; the frames and runs it held are kept; opening again keeps the id."""
    import uuid

    from ccdcal.catalog.models import CatalogInfo

    _at_revision(db_url, "0005")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        assert "catalog_info" not in inspect(conn).get_table_names()
        conn.execute(
            text(
                "INSERT INTO runs (command, arguments, started_at, status, ccdcal_version) "
                "VALUES ('ingest', '{}', CURRENT_TIMESTAMP, 'ok', '0.9')"
            )
        )
    engine.dispose()
    with Catalog(db_url) as catalog:
        assert catalog.revision_on_open == "0005"
        assert catalog.current_revision() == SCHEMA_HEAD
        with catalog.reading() as session:
            rows = session.scalars(select(CatalogInfo)).all()
            assert [run.command for run in session.scalars(select(Run))] == ["ingest"]
        assert [row.key for row in rows] == ["catalog_id"]
        first = catalog.catalog_id
        assert str(uuid.UUID(first)) == first
    with Catalog(db_url) as again:
        assert again.catalog_id == first


def test_every_new_catalog_gets_an_id_of_its_own(tmp_path: Path) -> None:
    with Catalog(tmp_path / "a.db") as one, Catalog(tmp_path / "b.db") as other:
        assert one.catalog_id != other.catalog_id


def test_a_catalog_without_its_id_says_how_to_put_it_back(catalog: Catalog) -> None:
    from ccdcal.errors import CatalogError

    with catalog.session() as session:
        session.execute(text("DELETE FROM catalog_info"))
    with pytest.raises(CatalogError, match=r"holds no catalog_id in its catalog_info table; put back"):
        print(catalog.catalog_id)


def test_a_non_sqlite_file_is_not_a_catalog(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my observing notes, not a database\n" * 100)
    with pytest.raises(NotACatalogError, match=r"notes\.db is not a ccdcal catalog"):
        Catalog(bogus)
    assert bogus.read_text().startswith("these are my observing notes")


def test_a_foreign_sqlite_database_is_not_a_catalog(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE stars (name TEXT)")
    with pytest.raises(NotACatalogError, match=r"holds other tables: stars"):
        Catalog(other)


def test_a_catalog_from_a_newer_ccdcal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Catalog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(CatalogTooNewError, match=r"revision 9999, newer than ccdcal"):
        Catalog(path)


def test_checking_a_missing_catalog_does_not_create_it(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no catalog at"):
        Catalog(tmp_path / "absent.db", upgrade=False)
    assert not (tmp_path / "absent.db").exists()


def test_a_catalog_not_to_create_is_refused_when_absent(tmp_path: Path) -> None:
    """create=False: a missing file, or an empty one, is no catalog; nothing is created or written."""
    absent = tmp_path / "absent.db"
    with pytest.raises(NoCatalogError, match="no catalog at"):
        Catalog(absent, create=False)
    assert not absent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(NoCatalogError, match="the database holds no ccdcal tables"):
        Catalog(empty, create=False)
    assert empty.stat().st_size == 0
    with Catalog(absent):
        pass
    with Catalog(absent, create=False) as catalog:
        assert catalog.revision_on_open == SCHEMA_HEAD


@pytest.mark.postgres
def test_a_postgresql_database_without_ccdcals_tables_is_no_catalog(pg_url: str) -> None:
    with pytest.raises(NoCatalogError) as refused:
        Catalog(pg_url, create=False)
    name = make_url(pg_url).render_as_string(hide_password=True)
    assert str(refused.value) == (
        f"no catalog in {name}: the database holds no ccdcal tables; check --db (or CCDCAL_DB), or run "
        "`ccdcal ingest` or `ccdcal db upgrade` first to create one"
    )
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []
    engine.dispose()


def test_run_rows_record_versions_status_and_summary(catalog: Catalog) -> None:
    with catalog.run("ingest", {"paths": ["/x"]}) as run:
        run.summary = {"new": 3}
    with pytest.raises(RuntimeError), catalog.run("ingest", {}):
        raise RuntimeError("boom")
    with catalog.session() as session:
        rows = session.scalars(select(Run).order_by(Run.id)).all()
    assert [(r.command, r.status) for r in rows] == [("ingest", "ok"), ("ingest", "failed")]
    first = rows[0]
    assert first.arguments == {"paths": ["/x"]}
    assert first.summary == {"new": 3}
    for version in (first.ccdcal_version, first.astropy_version, first.numpy_version, first.ccdproc_version):
        assert version
    assert first.host
    assert first.finished_at >= first.started_at


def test_sessions_roll_back_on_error(catalog: Catalog) -> None:
    insert_run = text(
        "INSERT INTO runs (command, arguments, started_at, status, ccdcal_version) "
        "VALUES ('x', '{}', CURRENT_TIMESTAMP, 'ok', '0')"
    )

    class Abort(Exception):
        pass

    with pytest.raises(Abort), catalog.session() as session:  # noqa: PT012
        session.execute(insert_run)
        raise Abort
    with catalog.session() as session:
        assert session.scalars(select(Run)).all() == []


def test_a_reading_session_reads_one_snapshot_while_another_writes(catalog: Catalog) -> None:
    """A reading session does not hold the write lock (SQLite's ``BEGIN IMMEDIATE``): a writer commits
    meanwhile, at once, and the reader still sees the catalog as it was when it first read."""
    insert_run = text(
        "INSERT INTO runs (command, arguments, started_at, status, ccdcal_version) "
        "VALUES ('x', '{}', CURRENT_TIMESTAMP, 'ok', '0')"
    )
    with catalog.session() as session:
        session.execute(insert_run)
    with catalog.reading() as reader, catalog.reading() as other:
        assert reader.scalar(select(func.count()).select_from(Run)) == 1
        assert other.scalar(select(func.count()).select_from(Run)) == 1  # two readers at once
        began = time.monotonic()
        with catalog.session() as writer:  # would wait for the reader's lock: SQLite's busy timeout
            writer.execute(insert_run)
        assert time.monotonic() - began < 5
        assert reader.scalar(select(func.count()).select_from(Run)) == 1  # its snapshot
    with catalog.reading() as reader:
        assert reader.scalar(select(func.count()).select_from(Run)) == 2


def test_opening_and_reading_runs_do_not_wait_for_a_writer(catalog: Catalog) -> None:
    """The schema check on open, ``runs()`` and ``committed()`` read: a transaction holding SQLite's write
    lock does not keep them waiting."""
    with catalog.run("ingest", {}):
        pass
    began = time.monotonic()
    with catalog.session() as writer:  # BEGIN IMMEDIATE on SQLite: the write lock, held till the end
        writer.execute(select(Run.id)).all()
        with Catalog(catalog.url) as again:
            assert [run.command for run in again.runs()] == ["ingest"]
            assert again.current_revision() == SCHEMA_HEAD
            assert again.committed(Run, again.runs()[0].id)
    assert time.monotonic() - began < 5


def test_an_interrupt_held_back_by_the_run_rows_commit_marks_the_run_interrupted(catalog: Catalog) -> None:
    """A Ctrl-C arriving while the new ``runs`` row commits is raised once it has committed: the run is
    then ended as ``interrupted``, not left ``running``."""
    import os
    import signal

    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from ccdcal.runtime.interrupts import handling_signals

    sent: list[int] = []

    def interrupt_once(session: Session) -> None:  # (a listener cannot remove itself while called)
        if not sent:
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    event.listen(Session, "after_commit", interrupt_once)
    try:
        with handling_signals(), pytest.raises(KeyboardInterrupt), catalog.run("ingest"):
            time.sleep(1.0)  # not reached: the interrupt is raised as the block starts
    finally:
        event.remove(Session, "after_commit", interrupt_once)
    with catalog.reading() as session:
        assert [(r.command, r.status) for r in session.scalars(select(Run))] == [("ingest", "interrupted")]


def test_an_unchecked_session_skips_foreign_keys_and_the_next_checks_them(tmp_path: Path) -> None:
    """``session(checked=False)`` (ingest's batches) turns SQLite's foreign-key checks off for its
    transaction alone: every other writing session checks them, on the same pooled connection too."""
    with Catalog(tmp_path / "c.db", create=True) as catalog:
        for checked in (True, False, True, False, True):
            with catalog.session(checked=checked) as session:
                assert session.execute(text("PRAGMA foreign_keys")).scalar() == int(checked)
