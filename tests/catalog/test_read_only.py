"""Read-only catalogs (an archive on read-only media, a user who may only read): the commands that only
read work — the dry run plans as on a writable catalog, writing nothing — and those that write answer one
line, exit 2, before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url

from ccdcal.catalog.db import Catalog
from ccdcal.errors import CatalogReadOnlyError
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import dry_run, process
from ccdcal.masters.build import build_masters, list_masters
from ccdcal.masters.groups import MasterOptions
from ccdcal.simulate import simulate_night
from ccdcal.status import catalog_status
from ccdcal.trace.impact import impact, mark_bad
from ccdcal.trace.provenance import provenance

#: The message of a writing command, after the catalog's name and why it is read-only.
WRITES = (
    "and this command writes to it: run it on a writable copy; status, process --dry-run, provenance, "
    "impact, reproduce, report, preview, masters --list and db current only read"
)


def options(folder: Path, **changes: Any) -> ProcessOptions:
    return ProcessOptions(
        **({"masters_dir": folder / "masters", "output_dir": folder / "calibrated", "jobs": 1} | changes)
    )


def files_of(*paths: Path) -> dict[str, str]:
    """Every file under ``paths`` with the sha256 of its bytes; not the shared-memory index and empty
    log SQLite makes beside a catalog to read it when its folder can be written."""
    found = {}
    for root in paths:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file() and not path.name.endswith(("-shm", "-wal")):
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def checkpointed(db: Path) -> None:
    """Fold the write-ahead log into the file, as a clean close leaves it (and an archive is copied)."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.fixture
def night(tmp_path: Path) -> Path:
    """A night ingested into ``c.db``, one light calibrated (its masters built), one light added after."""
    raw = simulate_night(tmp_path / "raw", seed=9, shape=(32, 40), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    later = raw.files["light"][1]
    shutil.move(later, tmp_path / later.name)
    with Catalog(tmp_path / "c.db") as catalog:
        ingest(catalog, [raw.root])
        assert process(catalog, options(tmp_path)).exit_code == 0
        shutil.move(tmp_path / later.name, later)
        ingest(catalog, [raw.root])
    checkpointed(tmp_path / "c.db")
    return tmp_path


def read_only(folder: Path) -> str:
    return f"sqlite:///{folder / 'c.db'}?mode=ro"


def test_reading_commands_read_a_read_only_catalog_as_a_writable_one(night: Path) -> None:
    """The dry run (masters to build appear as provisional rows of a temporary table), status, provenance,
    impact and the masters list give on a read-only catalog what they give on the writable one, and the
    catalog's files are not written."""
    with Catalog(night / "c.db") as writable:
        expected_plan = dry_run(writable, options(night, redo=True)).as_dict()
        expected_status = catalog_status(writable)
        expected_masters = list_masters(writable)
    before = files_of(night / "c.db", night / "masters", night / "calibrated")
    with Catalog(read_only(night)) as catalog:
        assert catalog.read_only == "opened with mode=ro"
        plan = dry_run(catalog, options(night, redo=True))
        assert plan.as_dict() == expected_plan
        assert [x.outcome for x in plan.lights] == ["calibrate", "calibrate"]
        assert catalog_status(catalog) == expected_status | {"catalog": catalog.name}
        assert list_masters(catalog) == expected_masters
        output = str(night / "calibrated" / "Light_001_cal.fits")
        assert provenance(catalog, output).as_dict()["tree"]["path"] == output
        assert len(impact(catalog, "master:1").current_calibrations()) == 1
        assert catalog_status(catalog) == expected_status | {"catalog": catalog.name}  # a second plan
    assert files_of(night / "c.db", night / "masters", night / "calibrated") == before


def test_the_dry_run_of_masters_to_build_writes_no_row(night: Path) -> None:
    """With new frames, masters are planned as provisional rows (with ids after every master): on a
    read-only catalog too, and nothing of them stays."""
    shutil.rmtree(night / "masters")
    with Catalog(night / "c.db") as writable:
        expected = dry_run(writable, options(night))
    with Catalog(read_only(night)) as catalog:
        planned = dry_run(catalog, options(night))
        assert planned.as_dict() == expected.as_dict()
        built = [m for m in planned.masters if m.outcome == "build"]
        assert len(built) == 7
        assert min(m.master_id or 0 for m in built) == 8  # after the 7 masters the catalog holds
        assert len(list_masters(catalog, include_superseded=True)) == 7


def test_a_scratch_session_writes_a_temporary_copy_that_goes_with_it(catalog: Catalog) -> None:
    """Rows written in a scratch session go to the temporary copy of their table, read back there; no
    later session (of the same pool) sees them or the copy."""
    from sqlalchemy import func, select, update

    from ccdcal.catalog.models import Master

    def row(number: int) -> Master:
        return Master(
            id=number, kind="bias", path=f"/m/{number}.fits", sha256="0" * 64, identity=str(number),
            version=1, n_inputs=3, method="sigma_clipped_median", status="current", includes_bias=False,
        )  # fmt: skip

    with catalog.session() as session:
        session.add(row(1))
    for _ in range(2):
        with catalog.scratch(Master) as scratch:
            assert scratch.scalar(select(func.count()).select_from(Master)) == 1  # the catalog's, copied
            scratch.add(row(2))
            scratch.execute(update(Master).where(Master.id == 1).values(status="superseded"))
            scratch.flush()
            assert scratch.scalars(select(Master.status).order_by(Master.id)).all() == [
                "superseded",
                "current",
            ]
    with catalog.session() as session:
        assert session.scalars(select(Master.status).order_by(Master.id)).all() == ["current"]
    with catalog.reading() as session:
        assert session.scalars(select(Master.id)).all() == [1]


def test_writing_commands_refuse_a_read_only_catalog_before_writing(night: Path) -> None:
    before = files_of(night)
    with Catalog(read_only(night)) as catalog:
        name = catalog.name
        message = f"the catalog {name} is read-only (opened with mode=ro) {WRITES}"
        for command in (
            lambda: process(catalog, options(night / "other")),
            lambda: build_masters(catalog, MasterOptions(masters_dir=night / "other")),
            lambda: ingest(catalog, [night / "raw"]),
            lambda: mark_bad(catalog, "master:1", "hot column"),
        ):
            with pytest.raises(CatalogReadOnlyError) as refused:
                command()
            assert str(refused.value) == message
    assert files_of(night) == before
    assert not (night / "other").exists()


def test_a_read_only_catalog_at_an_older_revision_is_refused_with_what_to_do(night: Path) -> None:
    """Revision 0008 adds what the reading commands read (the frame QA tables of ``status -v``,
    ``masters --list -v`` and ``report``): a read-only catalog at 0007 cannot be read as it is and is
    refused with what to do."""
    with sqlite3.connect(night / "c.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0007'")
    conn.close()
    checkpointed(night / "c.db")
    with pytest.raises(CatalogReadOnlyError) as refused:
        Catalog(read_only(night))
    assert str(refused.value) == (
        f"the catalog {night / 'c.db'} is read-only (opened with mode=ro) and at schema revision 0007, older "
        f"than ccdcal {__import__('ccdcal').__version__} reads without upgrading (0008): upgrade a writable "
        "copy with `ccdcal db upgrade`"
    )


def test_a_write_refused_by_the_database_is_one_line_too(catalog: Catalog) -> None:
    """A catalog that becomes read-only after it was opened (or that ccdcal did not see read-only): the
    database's refusal is a CatalogReadOnlyError, the transaction rolled back."""
    from sqlalchemy import text

    from ccdcal.catalog.models import Run

    statement = "PRAGMA query_only = ON" if catalog.dialect == "sqlite" else "SET TRANSACTION READ ONLY"

    def write() -> None:
        with catalog.session() as session:
            session.execute(text(statement))
            session.add(Run(command="x", arguments={}, status="ok", ccdcal_version="0"))
            session.flush()

    with pytest.raises(CatalogReadOnlyError) as refused:
        write()
    assert str(refused.value).startswith(f"the catalog {catalog.name} cannot be written (")
    assert str(refused.value).endswith("): run the command on a writable copy, or one that only reads")
    catalog.engine.dispose()  # SQLite's pragma stays with its connection
    assert catalog.runs() == []


@pytest.mark.postgres
def test_a_user_who_may_only_read_a_postgresql_catalog(pg_url: str, tmp_path: Path) -> None:
    """Status and the dry run work for a user with SELECT only (their provisional masters in temporary
    tables); process is refused with one line."""
    raw = simulate_night(tmp_path / "raw", seed=9, shape=(32, 40), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    with Catalog(pg_url) as catalog:
        ingest(catalog, [raw.root])
        expected = dry_run(catalog, options(tmp_path)).as_dict()
    role = f"ccdcal_reader_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    database = make_url(pg_url).database
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
            conn.exec_driver_sql(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{role}"')
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{role}"')
            conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
        reader = make_url(pg_url).set(username=role, password=None).render_as_string(hide_password=False)
        with Catalog(reader) as catalog:
            assert catalog.read_only == f"the user {role} may not write its tables"
            assert dry_run(catalog, options(tmp_path)).as_dict() == expected
            assert catalog_status(catalog)["frames"]
            with pytest.raises(CatalogReadOnlyError, match=r"is read-only \(the user .* may not write"):
                process(catalog, options(tmp_path))
        assert not (tmp_path / "masters").exists()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


# -- the command line, on a catalog whose file and folder cannot be written -----------------------------

#: Runs each command given as JSON (a list of argument lists) with the CLI, in this child process, and
#: prints their exit statuses and output as JSON.
CLI_SCRIPT = r"""
import json, sys
from typer.testing import CliRunner
from ccdcal.cli import app

runner = CliRunner()
results = []
for args in json.loads(sys.argv[1]):
    result = runner.invoke(app, args)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    shown = repr(result.exception) if crashed else None
    results.append([result.exit_code, result.stdout, result.stderr, shown])
print(json.dumps(results))
"""


def without_write_permission(commands: list[list[str]], cwd: Path) -> list[list[Any]]:
    """Run CLI commands in a child process that may not write where the file modes forbid it: as root
    (who writes anywhere) without the capabilities that let it."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot take away the right to write anywhere")
        drop = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]
    child = subprocess.run(
        [*prefix, sys.executable, "-c", CLI_SCRIPT, json.dumps(commands)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    return list(json.loads(child.stdout))


def test_an_archive_on_read_only_media_through_the_command_line(night: Path) -> None:
    """File and folder without write permission (and no write-ahead log beside the file, as a clean
    copy leaves it): the reading commands exit 0 — the dry run prints what it prints on the writable
    catalog — and the writing ones print one line and exit 2; no traceback, nothing written."""
    db = ["--db", str(night / "c.db")]
    folders = ["--masters-dir", str(night / "masters"), "--output-dir", str(night / "calibrated")]
    report = night / "out" / "report.html"
    report.parent.mkdir()
    output = str(night / "calibrated" / "Light_001_cal.fits")
    readers = [
        [*db, "process", "--dry-run", *folders],
        [*db, "status"],
        [*db, "provenance", output],
        [*db, "impact", "master:1"],
        [*db, "masters", "--list"],
        [*db, "db", "current"],
        [*db, "report", "-o", str(report)],
    ]
    writers = [
        [*db, "process", "--jobs", "1", *folders],
        [*db, "ingest", str(night / "raw")],
        [*db, "audit"],
        [*db, "masters", "--masters-dir", str(night / "masters")],
        [*db, "mark-bad", "master:1", "--reason", "hot column"],
    ]
    from typer.testing import CliRunner

    from ccdcal.cli import app

    expected_plan = CliRunner().invoke(app, readers[0]).stdout
    before = files_of(night / "c.db", night / "masters", night / "calibrated", night / "raw")
    for path in (night / "c.db", night / "masters", night / "calibrated", night):
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        results = without_write_permission([*readers, *writers], night / "out")
    finally:
        for path in (night, night / "c.db", night / "masters", night / "calibrated"):
            path.chmod(0o755 if path.is_dir() else 0o644)
    for args, (status, _stdout, stderr, crashed) in zip(readers, results, strict=False):
        assert (status, stderr, crashed) == (0, "", None), args
    assert results[0][1] == expected_plan
    assert "revision 0008 (head)" in results[5][1]
    assert report.is_file()
    why = f"{night / 'c.db'} cannot be written"
    for args, (status, stdout, stderr, crashed) in zip(writers, results[len(readers) :], strict=True):
        assert (status, stdout, crashed) == (2, "", None), args
        assert stderr == f"Error: the catalog {night / 'c.db'} is read-only ({why}) {WRITES}\n", args
    assert files_of(night / "c.db", night / "masters", night / "calibrated", night / "raw") == before
    assert not Path(f"{night / 'c.db'}-wal").exists()
