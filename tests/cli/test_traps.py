"""The traps of the command line as people use it: a catalog that does not exist, paths without a FITS
file (exact messages and exit statuses; nothing is created)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import create_engine, inspect, make_url
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.cli import app

#: Every command that reads or marks a catalog, with the arguments it needs: none creates a catalog.
READING = {
    "status": ["status"],
    "masters": ["masters"],
    "masters-list": ["masters", "--list"],
    "process": ["process"],
    "process-dry-run": ["process", "--dry-run"],
    "provenance": ["provenance", "frame:1"],
    "audit": ["audit"],
    "mark-bad": ["mark-bad", "frame:1", "--reason", "hot column"],
    "mark-good": ["mark-good", "frame:1"],
    "impact": ["impact", "frame:1"],
    "report": ["report"],
    "db-current": ["db", "current"],
}


def no_catalog_at(path: Path) -> str:
    return (
        f"Error: no catalog at {path}; check --db (or CCDCAL_DB) and the current folder, or run `ccdcal "
        "ingest` first to create one\n"
    )


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, without CCDCAL_DB: the catalog is ./ccdcal.db."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("CCDCAL_DB", raising=False)
    return folder


def frames(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        header = fits.Header({"IMAGETYP": "BIAS", "EXPTIME": 0.0})
        fits.PrimaryHDU(np.full((4, 6), 1000 + i, np.uint16), header).writeto(folder / f"bias_{i}.fits")
    return folder


@pytest.mark.parametrize("args", READING.values(), ids=READING.keys())
def test_a_command_run_in_the_wrong_folder_refuses_and_creates_nothing(
    workdir: Path, args: list[str]
) -> None:
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", no_catalog_at(workdir / "ccdcal.db"))
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("args", READING.values(), ids=READING.keys())
def test_a_typo_in_db_refuses_and_creates_nothing(workdir: Path, args: list[str]) -> None:
    frames(workdir / "raw")
    assert CliRunner().invoke(app, ["--db", "ccdcal.db", "ingest", "raw"]).exit_code == 0
    before = sorted(p.name for p in workdir.iterdir())
    result = CliRunner().invoke(app, ["--db", "ccdcal.dbb", *args])
    assert (result.exit_code, result.stderr) == (2, no_catalog_at(workdir / "ccdcal.dbb"))
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.postgres
@pytest.mark.parametrize("args", READING.values(), ids=READING.keys())
def test_a_postgresql_database_without_ccdcals_tables_is_refused(
    workdir: Path, pg_url: str, args: list[str]
) -> None:
    result = CliRunner().invoke(app, ["--db", pg_url, *args])
    name = make_url(pg_url).render_as_string(hide_password=True)
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: no catalog in {name}: the database holds no ccdcal tables; check --db (or CCDCAL_DB), or "
        "run `ccdcal ingest` or `ccdcal db upgrade` first to create one\n",
    )
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == []
    engine.dispose()
    assert list(workdir.iterdir()) == []


def no_fits_under(*paths: Path) -> str:
    return (
        f"no FITS file under {', '.join(map(str, paths))}: nothing to catalogue; check the path (ccdcal "
        "catalogues files named .fits, .fit or .fts, also gzipped (.gz) or tile-compressed (.fz))"
    )


def test_ingest_of_a_folder_without_fits_files_says_so_exits_1_and_creates_no_catalog(workdir: Path) -> None:
    (workdir / "notes").mkdir()
    (workdir / "notes" / "night.txt").write_text("clouds")
    (workdir / "empty").mkdir()
    result = CliRunner().invoke(app, ["ingest", "notes", "empty"])
    expected = no_fits_under(workdir / "notes", workdir / "empty")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"Error: {expected}\n")
    assert sorted(p.name for p in workdir.iterdir()) == ["empty", "notes"]


def test_ingest_of_a_folder_without_fits_files_into_a_catalog_records_no_run(workdir: Path) -> None:
    frames(workdir / "raw")
    (workdir / "empty").mkdir()
    assert CliRunner().invoke(app, ["ingest", "raw"]).exit_code == 0
    result = CliRunner().invoke(app, ["ingest", "empty"])
    assert (result.exit_code, result.stderr) == (1, f"Error: {no_fits_under(workdir / 'empty')}\n")
    with Catalog(workdir / "ccdcal.db") as catalog:
        assert [run.command for run in catalog.runs()] == ["ingest"]


def test_ingest_of_a_folder_whose_frames_are_all_gone_marks_them_missing_and_exits_1(workdir: Path) -> None:
    raw = frames(workdir / "raw")
    assert CliRunner().invoke(app, ["ingest", "raw"]).exit_code == 0
    for path in raw.iterdir():
        path.unlink()
    result = CliRunner().invoke(app, ["ingest", "raw"])
    assert result.exit_code == 1
    assert result.stdout.startswith(
        f"Catalog {workdir / 'ccdcal.db'} (run 2): 0 new, 0 changed, 0 unchanged, 2 missing"
    )
    text = no_fits_under(raw)
    assert result.stderr == text[:1].upper() + text[1:] + "\n"
    with Catalog(workdir / "ccdcal.db") as catalog:
        assert [(run.command, run.status) for run in catalog.runs()] == [
            ("ingest", "partial"),
            ("ingest", "ok"),
        ]
