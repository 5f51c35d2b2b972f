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
    "reproduce": ["reproduce", "calibration:1"],
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


# -- global options anywhere; -v and -q -------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A processed night: ``raw/``, ``c.db``, ``masters/``, ``calibrated/``."""
    from ccdcal.simulate import simulate_night

    root = tmp_path_factory.mktemp("night")
    simulate_night(root / "raw", seed=4, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=1)
    db = ["--db", str(root / "c.db")]
    folders = ["--masters-dir", str(root / "masters"), "--output-dir", str(root / "calibrated")]
    assert CliRunner().invoke(app, [*db, "ingest", str(root / "raw")]).exit_code == 0
    result = CliRunner().invoke(app, [*db, "process", "--jobs", "1", *folders])
    assert result.exit_code == 0, result.output
    return root


def test_global_options_are_taken_after_the_command_too(
    night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    db = tmp_path / "c.db"
    shutil.copy(night / "c.db", db)
    monkeypatch.setenv("CCDCAL_DB", str(tmp_path / "elsewhere.db"))
    runner = CliRunner()
    before = runner.invoke(app, ["--db", str(db), "status"])
    assert before.exit_code == 0, before.output
    for args in (
        ["status", "--db", str(db)],
        ["status", f"--db={db}"],
        ["--db", "x.db", "status", "--db", str(db)],
    ):
        after = runner.invoke(app, args)
        assert (after.exit_code, after.stdout, after.stderr) == (0, before.stdout, "")
    assert runner.invoke(app, ["status", "--db", str(db), "-q"]).output == ""
    assert (
        runner.invoke(app, ["db", "current", "--db", str(db)]).stdout
        == before.stdout.splitlines()[0].replace("Catalog ", "") + ": revision 0008 (head)\n"
    )
    # the value of a command's option stays its own, however it looks
    marked = runner.invoke(app, ["mark-bad", "frame:1", "--reason", "-v", "--db", str(db), "-q"])
    assert (marked.exit_code, marked.output) == (0, "")
    with Catalog(db) as catalog, catalog.reading() as session:
        from ccdcal.catalog.models import Frame

        assert session.get(Frame, 1).bad_reason == "-v"
    # a --db without its value is said where it was given
    missing = runner.invoke(app, ["status", "--db"])
    assert missing.exit_code == 2
    assert "No such option: --db" in missing.stderr


def test_v_shows_ccdcals_detail_and_not_other_libraries(night: Path) -> None:
    """-v: ccdcal's debug lines only (numcodecs alone logs some 25 at import); -vv: every library's."""
    import logging
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ccdcal", "--db", str(night / "c.db"), "process", "--dry-run", "-v"],
        capture_output=True,
        text=True,
        cwd=night,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    logged = [line for line in done.stderr.splitlines() if line.startswith(("DEBUG ", "INFO "))]
    assert all(line.split()[1].startswith("ccdcal") for line in logged), logged
    runner = CliRunner()
    for flags, ours, theirs in ((["-v"], True, False), (["-vv"], True, True), ([], False, False)):
        assert runner.invoke(app, [*flags, "--db", str(night / "c.db"), "db", "current"]).exit_code == 0
        assert logging.getLogger("ccdcal.catalog.db").isEnabledFor(logging.DEBUG) is ours
        assert logging.getLogger("numcodecs").isEnabledFor(logging.DEBUG) is theirs
    assert runner.invoke(app, ["-q", "--db", str(night / "c.db"), "db", "current"]).exit_code == 0
    assert not logging.getLogger("ccdcal.catalog.db").isEnabledFor(logging.WARNING)
    assert runner.invoke(app, ["--db", str(night / "c.db"), "db", "current"]).exit_code == 0


#: Every command, on the processed night (``{n}``) and a fresh folder (``{t}``): -q prints nothing.
QUIET = {
    "ingest": ["ingest", "{n}/raw"],
    "status": ["status"],
    "masters": ["masters", "--masters-dir", "{n}/masters"],
    "masters-list": ["masters", "--list"],
    "process": ["process", "--masters-dir", "{n}/masters", "--output-dir", "{n}/calibrated"],
    "process-dry-run": [
        "process",
        "--dry-run",
        "--masters-dir",
        "{n}/masters",
        "--output-dir",
        "{n}/calibrated",
    ],
    "provenance": ["provenance", "calibration:1"],
    "provenance-from-header": ["provenance", "--from-header", "{n}/calibrated/Light_001_cal.fits"],
    "audit": ["audit"],
    "reproduce": ["reproduce", "calibration:1", "--deep"],
    "impact": ["impact", "frame:1"],
    "mark-bad": ["mark-bad", "master:1", "--reason", "test"],
    "mark-good": ["mark-good", "master:1"],
    "report": ["report", "-o", "{t}/r.html"],
    "preview": ["preview", "{n}/raw/LIGHT/Light_001.fits", "-o", "{t}/p.png"],
    "simulate": ["simulate", "{t}/sim"],
    "run-write-config": ["run", "--write-config", "{t}/config.ini"],
    "db-upgrade": ["db", "upgrade"],
    "db-current": ["db", "current"],
}


@pytest.mark.parametrize("args", QUIET.values(), ids=QUIET.keys())
def test_q_prints_nothing_when_all_is_well(night: Path, tmp_path: Path, args: list[str]) -> None:
    import shutil

    shutil.copy(night / "c.db", tmp_path / "c.db")
    given = [a.replace("{n}", str(night)).replace("{t}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["-q", "--db", str(tmp_path / "c.db"), *given])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_q_prints_errors_and_what_was_left_undone(night: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copy(night / "c.db", tmp_path / "c.db")
    raw = tmp_path / "raw"
    shutil.copytree(night / "raw" / "LIGHT", raw)
    (raw / "broken.fits").write_bytes(b"")
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "c.db"), "ingest", str(raw), "-q"])
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        f"Rejected (1):\n  {raw / 'broken.fits'}: empty file (0 bytes)\n",
    )
    wrong = CliRunner().invoke(app, ["-q", "--db", str(tmp_path / "none.db"), "status"])
    assert (wrong.exit_code, wrong.stdout, wrong.stderr) == (2, "", no_catalog_at(tmp_path / "none.db"))
