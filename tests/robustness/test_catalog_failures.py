"""The catalog's surroundings failing in the middle of a run: its disk full (SQLite), its server ending the
connection (PostgreSQL). The command ends with one line naming the catalog and what to do, exit status 2;
what was finished is kept, nothing is left half done, and the same command run again ends as an
uninterrupted run would have."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, make_url, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner, Result

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Claim, Run
from ccdcal.cli import app
from ccdcal.ingestion.core import ingest
from ccdcal.lights import coordinator
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from tests.cli.test_errors import assert_one_line
from tests.robustness.cli_runs import State, copy_catalog, ingested_night, state, temporaries

LIGHTS = 4


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingested_night(tmp_path_factory.mktemp("catalog-failures"), seed=31, lights=LIGHTS)


@pytest.fixture(scope="module")
def reference(night: Path) -> State:
    folder = night / "reference"
    folder.mkdir()
    copy_catalog(night / "template.db", folder / "c.db")
    with Catalog(folder / "c.db") as catalog:
        options = ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated", jobs=1)
        assert process(catalog, options).exit_code == 0
    return state(folder / "c.db", folder)


def cli(db: str, folder: Path, *args: str) -> Result:
    """``ccdcal process`` (or ``masters``) with the folders under ``folder``, in this process."""
    options = ["--masters-dir", str(folder / "masters")]
    if args[0] == "process":
        options += ["--output-dir", str(folder / "calibrated"), "--jobs", "1"]
    return CliRunner().invoke(app, ["--db", db, *args, *options])


def assert_resumed(db: str, folder: Path, reference: State) -> None:
    """The next run completes: the catalog and folders are those of an uninterrupted run."""
    again = cli(db, folder, "process")
    assert again.exit_code == 0, again.output
    assert temporaries(folder / "masters", folder / "calibrated") == []
    got = state(db, folder)
    assert (got.masters, got.calibrations, got.outputs) == (
        reference.masters,
        reference.calibrations,
        reference.outputs,
    )
    assert {f"calibrated/{p.name}" for p in (folder / "calibrated").glob("*.fits")} == set(got.outputs)
    assert {f"masters/{p.name}" for p in (folder / "masters").glob("*.fits")} == set(got.masters)
    with Catalog(db) as catalog, catalog.session() as session:
        assert session.scalars(select(Claim)).all() == []


@contextmanager
def full_catalog(db: Path, room: int = 0) -> Iterator[None]:
    """The SQLite catalog ``db`` can grow by ``room`` pages only, as on a full disk (SQLite's
    ``max_page_count``: its writes then fail with "database or disk is full")."""
    with sqlite3.connect(db) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()

    def cap(dbapi: Any, _record: Any) -> None:
        dbapi.execute(f"PRAGMA max_page_count = {pages + room}")

    event.listen(Engine, "connect", cap)
    try:
        yield
    finally:
        event.remove(Engine, "connect", cap)


@pytest.mark.parametrize(
    ("command", "room"),
    [("ingest", 0), ("masters", 0), ("process", 0), ("process", 2)],
    ids=["ingest", "masters", "process-first-row", "process-mid-run"],
)
def test_the_catalog_disk_full_is_one_line_and_the_next_run_resumes(
    night: Path, reference: State, tmp_path: Path, command: str, room: int
) -> None:
    """The catalog can grow by ``room`` pages only; the process run that has room for its row, its plan
    and its claims fails writing its lights' rows."""
    db = tmp_path / "c.db"
    ingesting = ["--db", str(db), "ingest", "--jobs", "1", str(night / "raw")]
    if command == "ingest":  # an empty catalog: the frames' rows fill the disk
        assert CliRunner().invoke(app, ["--db", str(db), "db", "upgrade"]).exit_code == 0
    else:
        copy_catalog(night / "template.db", db)
    if command == "process":  # the masters are registered: the lights' rows fill the disk
        assert cli(str(db), tmp_path, "masters").exit_code == 0
    with full_catalog(db, room):
        result = (
            CliRunner().invoke(app, ingesting) if command == "ingest" else cli(str(db), tmp_path, command)
        )
    assert_one_line(
        result,
        2,
        f"the catalog {db} cannot be written: its disk is full (database or disk is full); free space",
    )
    assert temporaries(tmp_path / "masters", tmp_path / "calibrated") == []
    with Catalog(db) as catalog, catalog.session() as session:
        statuses = session.scalars(select(Run.status).where(Run.command == command)).all()
    # Its row is failed, or still running when finishing it needed room too (a later process run marks
    # it died), or absent when the disk was full from its first row on.
    assert set(statuses) <= {"failed", "running"}
    if room:
        assert statuses == ["failed"]
    if command == "ingest":
        assert CliRunner().invoke(app, ingesting).exit_code == 0
    assert_resumed(str(db), tmp_path, reference)


def terminate_other_connections(url: str) -> None:
    """What ``pg_terminate_backend`` does to every other session of the database (an administrator, a
    server restarting): their next statement fails with ``AdminShutdown``."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_a_lost_postgresql_connection_is_one_line_and_the_next_run_resumes(
    night: Path, reference: State, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the connection while the first lights' rows are being written."""
    with Catalog(pg_url) as catalog:
        ingest(catalog, [night / "raw"], jobs=1)
    row = coordinator._calibration_row
    calls = []

    def cut(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            terminate_other_connections(pg_url)
        return row(*args)

    monkeypatch.setattr(coordinator, "_calibration_row", cut)
    result = cli(pg_url, tmp_path, "process")
    monkeypatch.undo()
    name = make_url(pg_url).render_as_string(hide_password=True)
    line = assert_one_line(result, 2, f"lost the connection to the catalog {name} (terminating connection")
    assert line.endswith("then run the same command again: what was finished is kept")
    assert calls
    with Catalog(pg_url) as catalog, catalog.session() as session:
        assert session.scalars(select(Run.status).where(Run.command == "process")).all() == ["failed"]
        assert session.scalars(select(Claim)).all() == []
    assert_resumed(pg_url, tmp_path, reference)
