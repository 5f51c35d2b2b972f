"""The command line: exact exit codes and messages (library errors become messages in one place)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccdcal import __version__
from ccdcal.catalog.db import SCHEMA_HEAD
from ccdcal.cli import app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    import numpy as np
    from astropy.io import fits

    root = tmp_path / "raw"
    for kind, folder in (("BIAS", "BIAS"), ("DARK", "DARK"), ("LIGHT", "LIGHT")):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            header = fits.Header({"IMAGETYP": kind, "EXPTIME": 0.0 if kind == "BIAS" else 30.0})
            data = np.full((4, 6), 1000 + i, dtype=np.uint16)
            fits.PrimaryHDU(data, header).writeto(root / folder / f"{kind.lower()}_{i}.fits")
    return root


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"ccdcal {__version__}\n")


def test_python_dash_m_works(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ccdcal", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert (done.returncode, done.stdout) == (0, f"ccdcal {__version__}\n")


def test_ingest_prints_a_summary(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    db = tmp_path / "c.db"
    result = runner.invoke(app, ["--db", str(db), "ingest", str(raw)])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Catalog {db} (run 1): 6 new, 0 changed, 0 unchanged, 0 missing, 0 rejected\n"
        "Frames under these paths: bias 2, dark 2, light 2\n"
    )
    again = runner.invoke(app, ["--db", str(db), "ingest", str(raw)])
    assert again.stdout.startswith(f"Catalog {db} (run 2): 0 new, 0 changed, 6 unchanged,")


def test_ingest_exits_1_and_lists_rejected_files(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    (raw / "LIGHT" / "broken.fits").write_bytes(b"")
    result = runner.invoke(app, ["--db", str(tmp_path / "c.db"), "ingest", str(raw)])
    assert result.exit_code == 1
    assert result.stderr == f"Rejected (1):\n  {raw / 'LIGHT' / 'broken.fits'}: empty file (0 bytes)\n"
    assert "7 new" in result.stdout


def test_ingest_json(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    result = runner.invoke(app, ["--db", str(tmp_path / "c.db"), "ingest", "--json", str(raw)])
    data = json.loads(result.stdout)
    assert data["new"] == 6
    assert data["by_type"] == {"bias": 2, "dark": 2, "light": 2}
    assert data["rejected"] == []


def test_db_from_environment(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    db = tmp_path / "env.db"
    result = runner.invoke(app, ["ingest", str(raw)], env={"CCDCAL_DB": str(db)})
    assert result.exit_code == 0
    assert db.exists()


def test_missing_path_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--db", str(tmp_path / "c.db"), "ingest", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'nope'}: no such file or folder; check the path\n"


def test_not_a_catalog_is_exit_2_without_traceback(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    bogus = tmp_path / "photo.db"
    bogus.write_bytes(b"\x89PNG not a database" * 100)
    result = runner.invoke(app, ["--db", str(bogus), "ingest", str(raw)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {bogus} is not a ccdcal catalog (not an SQLite database); choose another --db\n"
    )


def test_newer_catalog_is_exit_2(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    db = tmp_path / "c.db"
    runner.invoke(app, ["--db", str(db), "ingest", str(raw)])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
    result = runner.invoke(app, ["--db", str(db), "status"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {db} is at schema revision ffff, newer than ccdcal {__version__} knows "
        f"(up to {SCHEMA_HEAD}); upgrade ccdcal to use this catalog\n"
    )


def test_bad_imagetyp_option_is_exit_2(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    result = runner.invoke(app, ["--db", str(tmp_path / "c.db"), "ingest", "--imagetyp", "sky", str(raw)])
    assert result.exit_code == 2
    assert result.stderr == "Error: --imagetyp 'sky': use one of bias, dark, flat, light\n"


def test_status_json_lists_groups(runner: CliRunner, tmp_path: Path, raw: Path) -> None:
    db = str(tmp_path / "c.db")
    runner.invoke(app, ["--db", db, "ingest", str(raw)])
    (raw / "BIAS" / "bias_1.fits").unlink()
    runner.invoke(app, ["--db", db, "ingest", str(raw)])
    result = runner.invoke(app, ["--db", db, "status", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["frames"] == {"ok": {"bias": 1, "dark": 2, "light": 2}, "missing": {"bias": 1}}
    assert [g["n"] for g in data["groups"]["dark"]] == [2]
    assert data["groups"]["dark"][0]["exptime"] == 30.0
    assert data["missing"] == [str(raw / "BIAS" / "bias_1.fits")]
    text = runner.invoke(app, ["--db", db, "status"])
    assert text.exit_code == 0
    assert "dark   ZWO" not in text.stdout
    assert "Groups of usable frames" in text.stdout
    assert f"Missing (1):\n  {raw / 'BIAS' / 'bias_1.fits'}\n" in text.stdout


def test_db_current_and_upgrade(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    missing = runner.invoke(app, ["--db", str(db), "db", "current"])
    assert missing.exit_code == 2
    assert missing.stderr == (
        f"Error: no catalog at {db}; check --db (or CCDCAL_DB) and the current folder, or run `ccdcal "
        "ingest` first to create one\n"
    )
    up = runner.invoke(app, ["--db", str(db), "db", "upgrade"])
    assert (up.exit_code, up.stdout) == (0, f"{db} upgraded from empty to {SCHEMA_HEAD}\n")
    current = runner.invoke(app, ["--db", str(db), "db", "current"])
    assert (current.exit_code, current.stdout) == (0, f"{db}: revision {SCHEMA_HEAD} (head)\n")
    again = runner.invoke(app, ["--db", str(db), "db", "upgrade"])
    assert again.stdout == f"{db} is at revision {SCHEMA_HEAD} (up to date)\n"


def test_unknown_command_is_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr


@pytest.fixture
def simulated(tmp_path: Path) -> Path:
    from ccdcal.simulate import simulate_night

    return simulate_night(
        tmp_path / "night", seed=3, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2
    ).root


def test_masters_builds_then_has_nothing_to_do(runner: CliRunner, tmp_path: Path, simulated: Path) -> None:
    db, folder = str(tmp_path / "c.db"), tmp_path / "m"
    assert runner.invoke(app, ["--db", db, "ingest", str(simulated)]).exit_code == 0
    first = runner.invoke(app, ["--db", db, "masters", "--masters-dir", str(folder)])
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[0] == "Masters (run 2): 7 built, 0 already current, 0 skipped"
    assert f"  built {folder / 'master_bias_b2x2_g120_sNA_C-10.fits'} (3 frames)" in first.stdout
    again = runner.invoke(app, ["--db", db, "masters", "--masters-dir", str(folder)])
    assert (again.exit_code, again.stdout) == (0, "Masters (run 3): 0 built, 7 already current, 0 skipped\n")
    listed = runner.invoke(app, ["--db", db, "masters", "--list", "--json"])
    assert sorted(row["kind"] for row in json.loads(listed.stdout)) == ["bias"] + ["dark"] * 4 + ["flat"] * 2


def test_masters_exit_1_when_a_group_is_too_small(runner: CliRunner, tmp_path: Path, simulated: Path) -> None:
    db = str(tmp_path / "c.db")
    runner.invoke(app, ["--db", db, "ingest", str(simulated)])
    result = runner.invoke(
        app,
        ["--db", db, "masters", "--kind", "bias", "--min-frames", "4", "--masters-dir", str(tmp_path / "m")],
    )
    assert result.exit_code == 1
    assert result.stdout == "Masters (run 2): 0 built, 0 already current, 1 skipped\n"
    assert result.stderr == (
        "Skipped (1):\n  3 bias frames in group ZWO ASI294MM Pro b2x2 g120 C-10: fewer than --min-frames 4\n"
    )


def test_masters_bad_options_are_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    assert runner.invoke(app, ["--db", db, "db", "upgrade"]).exit_code == 0
    bad_kind = runner.invoke(app, ["--db", db, "masters", "--kind", "lights"])
    assert (bad_kind.exit_code, bad_kind.stderr) == (
        2,
        "Error: --kind 'lights': use one of bias, dark, flat\n",
    )
    bad_size = runner.invoke(app, ["--db", db, "masters", "--mem-limit", "lots"])
    assert bad_size.exit_code == 2
    assert "'lots' is not a size such as 512M or 2G" in bad_size.stderr


def test_masters_records_the_clipping_options(runner: CliRunner, tmp_path: Path, simulated: Path) -> None:
    from sqlalchemy import select

    from ccdcal.catalog.db import Catalog
    from ccdcal.catalog.models import Master

    db = str(tmp_path / "c.db")
    runner.invoke(app, ["--db", db, "ingest", str(simulated)])
    result = runner.invoke(
        app,
        [
            "--db",
            db,
            "masters",
            "--kind",
            "bias",
            "--sigma",
            "2.5",
            "--iterations",
            "3",
            "--dispersion",
            "std",
            "--masters-dir",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    with Catalog(db) as catalog, catalog.session() as session:
        parameters = session.scalars(select(Master.parameters)).one()
    assert (parameters["sigma_lower"], parameters["maxiters"], parameters["stdfunc"]) == (2.5, 3, "std")
    bad = runner.invoke(app, ["--db", db, "masters", "--dispersion", "iqr"])
    assert (bad.exit_code, bad.stderr) == (2, "Error: stdfunc must be 'mad_std' or 'std', not 'iqr'\n")


def test_print_lines_writes_plain_text_as_rich_would() -> None:
    import io

    from rich.console import Console

    from ccdcal.cli.base import print_lines

    lines = ["Lights to calibrate (2):", "  [bold]a.fits[/bold] -> a_cal.fits (ΔT +0.12 °C)", "", "  b.fits"]
    ours, rich = io.StringIO(), io.StringIO()
    print_lines(Console(file=ours), lines)
    console = Console(file=rich, soft_wrap=True, highlight=False, emoji=False)
    for line in lines:
        console.print(line, markup=False)
    assert ours.getvalue() == rich.getvalue() == "\n".join(lines) + "\n"
    empty = io.StringIO()
    print_lines(Console(file=empty), [])
    assert empty.getvalue() == ""
