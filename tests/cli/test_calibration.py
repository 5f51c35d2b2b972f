"""``ccdcal process`` on the command line: exact output, messages and exit statuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import select, update
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master, MasterCalibrator
from ccdcal.cli import app
from ccdcal.files.ownership import MARKER

MASTERS = [
    "master_bias_b2x2_g120_sNA_C-10.fits",
    "master_dark_b2x2_g120_2s_C-10.fits",
    "master_dark_b2x2_g120_5s_C-10.fits",
    "master_dark_b2x2_g120_60s_C-10.fits",
    "master_dark_b2x2_g120_300s_C-10.fits",
    "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
    "master_flat_b2x2_g120_sNA_C-10_R.fits",
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(db_url: str) -> str:
    """The catalog of a test: SQLite in tmp_path, then a PostgreSQL database of its own."""
    return db_url


@pytest.fixture
def night(tmp_path: Path, db: str) -> Path:
    """Light_001 in R (60 s) and Light_002 in Ha (300 s), 48 x 64 pixels; ingested into the catalog."""
    from ccdcal.simulate import simulate_night

    root = simulate_night(
        tmp_path / "night", seed=3, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2
    ).root
    assert CliRunner().invoke(app, ["--db", db, "ingest", str(root)]).exit_code == 0
    return root


def process(runner: CliRunner, tmp_path: Path, db: str, *args: str) -> object:
    folders = ["--masters-dir", str(tmp_path / "m"), "--output-dir", str(tmp_path / "cal"), "--jobs", "1"]
    return runner.invoke(app, ["--db", db, "process", *folders, *args])


def temp(value: float | None) -> str:
    assert value is not None
    return f"{round(value, 2):g}"


def test_process_calibrates_then_has_nothing_to_do(
    runner: CliRunner, tmp_path: Path, db: str, night: Path
) -> None:
    first = process(runner, tmp_path, db)
    assert first.exit_code == 0, first.output
    assert first.stderr == ""
    lines = first.stdout.splitlines()
    assert lines[0] == (
        "Process (run 2): masters 7 built, 0 current, 0 skipped; lights 2 calibrated, 0 already calibrated, "
        "0 not calibrated, 0 failed"
    )
    assert lines[1] == "Calibrated: 2 with bias, dark, flat"
    assert lines[2].split() == ["outcome", "lights", "filter", "exptime", "bias", "dark", "flat"]
    assert lines[3].split() == [
        "calibrated",
        "1",
        "R",
        "60",
        "master_bias_b2x2_g120_sNA_C-10.fits",
        "master_dark_b2x2_g120_60s_C-10.fits",
        "master_flat_b2x2_g120_sNA_C-10_R.fits",
    ]
    assert sorted(p.name for p in (tmp_path / "cal").iterdir()) == [
        MARKER,
        "Light_001_cal.fits",
        "Light_002_cal.fits",
    ]
    again = process(runner, tmp_path, db)
    assert (again.exit_code, again.stdout, again.stderr) == (
        0,
        "Process (run 3): nothing to do: 2 lights already calibrated, 7 masters current\n",
        "",
    )
    quiet = runner.invoke(
        app,
        [
            "--db",
            db,
            "-q",
            "process",
            "--masters-dir",
            str(tmp_path / "m"),
            "--output-dir",
            str(tmp_path / "cal"),
        ],
    )
    assert (quiet.exit_code, quiet.stdout) == (0, "")


def test_dry_run_prints_the_plan_and_writes_nothing(
    runner: CliRunner, tmp_path: Path, db: str, night: Path
) -> None:
    result = process(runner, tmp_path, db, "--dry-run")
    assert result.exit_code == 0, result.output
    cal = tmp_path / "cal"
    assert result.stdout == "\n".join(
        [
            "Dry run: nothing written.",
            "Masters to build (7):",
            *(f"  {name} ({3} frames)" for name in MASTERS),
            "Lights to calibrate (2):",
            f"  {night / 'LIGHT' / 'Light_001.fits'} -> {cal / 'Light_001_cal.fits'} (not calibrated yet)",
            "    bias master_bias_b2x2_g120_sNA_C-10.fits, dark master_dark_b2x2_g120_60s_C-10.fits, "
            "flat master_flat_b2x2_g120_sNA_C-10_R.fits",
            f"  {night / 'LIGHT' / 'Light_002.fits'} -> {cal / 'Light_002_cal.fits'} (not calibrated yet)",
            "    bias master_bias_b2x2_g120_sNA_C-10.fits, dark master_dark_b2x2_g120_300s_C-10.fits, "
            "flat master_flat_b2x2_g120_sNA_C-10_Ha.fits",
            "Already calibrated: 0 lights",
            "",
        ]
    )
    assert not (tmp_path / "m").exists()
    assert not cal.exists()
    with Catalog(db) as catalog:
        assert [r.command for r in catalog.runs()] == ["ingest"]
    assert process(runner, tmp_path, db).stdout.startswith("Process (run 2): masters 7 built")


def test_a_light_without_a_flat_is_listed_and_exit_1(
    runner: CliRunner, tmp_path: Path, db: str, night: Path
) -> None:
    with Catalog(db) as catalog, catalog.session() as session:
        session.execute(update(Frame).where(Frame.path.like("%Flat_Ha_%")).values(is_bad=True))
    result = process(runner, tmp_path, db)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "Process (run 2): masters 6 built, 0 current, 0 skipped; lights 1 calibrated, 0 already calibrated, "
        "1 not calibrated, 0 failed"
    )
    with Catalog(db) as catalog, catalog.session() as session:
        light = session.scalars(select(Frame).where(Frame.path.like("%Light_002%"))).one()
        flat = session.scalars(select(Master).where(Master.kind == "flat")).one()
    assert result.stderr == (
        "Not calibrated (1):\n"
        f"  {light.path}: no flat in filter Ha, {temp(light.ccd_temp)} °C ±2 "
        f"(nearest: filter R at {temp(flat.ccd_temp_mean)} °C)\n"
    )
    allowed = process(runner, tmp_path, db, "--allow-missing", "flat")
    assert allowed.exit_code == 0, allowed.output
    assert "lights 1 calibrated, 1 already calibrated, 0 not calibrated, 0 failed" in allowed.stdout
    status = runner.invoke(app, ["--db", db, "status"])
    assert status.stdout.endswith("Pending: nothing (2 lights calibrated)\n")


def test_a_failed_light_is_listed_and_exit_1(runner: CliRunner, tmp_path: Path, db: str, night: Path) -> None:
    broken = night / "LIGHT" / "Light_001.fits"
    stat = broken.stat()
    content = broken.read_bytes()
    content = content.replace(b"NAXIS1  =                   64", b"NAXIS1  =                   32", 1)
    content = content.replace(b"NAXIS2  =                   48", b"NAXIS2  =                   96", 1)
    broken.write_bytes(content)
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # rewritten, size and mtime kept
    result = process(runner, tmp_path, db)
    assert result.exit_code == 1
    assert "lights 1 calibrated, 0 already calibrated, 0 not calibrated, 1 failed" in result.stdout
    assert result.stderr == (  # the cause, found by the sha256 of the bytes read, not the shape it left
        "Failed (1):\n"
        f"  {broken}: raw file changed since it was catalogued (its sha256 differs); run `ccdcal ingest` on "
        "it again\n"
    )


def test_process_json(runner: CliRunner, tmp_path: Path, db: str, night: Path) -> None:
    result = process(runner, tmp_path, db, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["counts"] == {
        "calibrated": 2,
        "calibrate": 0,
        "current": 0,
        "cannot": 0,
        "failed": 0,
        "busy": 0,
    }
    assert data["run"] == 2
    assert [light["steps"]["dark"]["status"] for light in data["lights"]] == ["applied", "applied"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow-missing", "darks"], "Error: --allow-missing 'darks': use one of bias, dark, flat\n"),
        (
            ["--no-bias", "--dark-scale"],
            "Error: --dark-scale cannot be used with --no-bias: a dark that contains the bias cannot be "
            "scaled (the bias would be scaled with it)\n",
        ),
        (
            ["--no-bias", "--flat-dark-scale"],
            "Error: --flat-dark-scale cannot be used with --no-bias: the flats' dark then contains the bias, "
            "and a dark that contains the bias cannot be scaled (the bias would be scaled with it)\n",
        ),
        (["--flat-min", "-1"], "Error: --flat-min -1 is out of range: use 0 < x < 1\n"),
        (["--no-flat", "--flat", "x.fits"], "Error: --flat and --no-flat cannot be used together\n"),
    ],
)
def test_usage_errors_are_exit_2(
    runner: CliRunner, tmp_path: Path, db: str, night: Path, args: list[str], message: str
) -> None:
    result = process(runner, tmp_path, db, *args)
    assert (result.exit_code, result.stderr) == (2, message)


def test_a_folder_whose_path_is_not_utf8_is_exit_2(
    runner: CliRunner, tmp_path: Path, db: str, night: Path
) -> None:
    """docs/design.md, Ingest: the catalog could not record the files written there."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out\xe9"))
    result = process(runner, tmp_path, db, "--output-dir", str(folder))
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: --output-dir {tmp_path}/out\\xe9: the folder name out\\xe9 is not valid UTF-8 (byte \\xe9, "
        "perhaps latin-1): the catalog stores paths as text; rename the folder (for example with convmv -f "
        "latin1 -t utf8 --notest), or choose another folder\n",
    )
    masters = runner.invoke(app, ["--db", db, "masters", "--masters-dir", str(folder)])
    assert (masters.exit_code, masters.stderr.startswith(f"Error: --masters-dir {tmp_path}/out\\xe9: ")) == (
        2,
        True,
    )
    assert not folder.exists()
    named = runner.invoke(app, ["--db", db, "provenance", str(folder / "Light_001_cal.fits")])
    assert named.exit_code == 2
    assert named.stderr.startswith(f"Error: {tmp_path}/out\\xe9/Light_001_cal.fits: not in the catalog, ")


def test_a_pinned_file_must_be_a_master(runner: CliRunner, tmp_path: Path, db: str, night: Path) -> None:
    raw = night / "BIAS" / "Bias_001.fits"
    result = process(runner, tmp_path, db, "--bias", str(raw))
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: --bias {raw}: no master of the catalog has this path; give a master file built by ccdcal "
        "(see `ccdcal masters --list --all`)\n",
    )
    assert process(runner, tmp_path, db, "--jobs", "0").exit_code == 2


def test_status_shows_the_pending_work(runner: CliRunner, tmp_path: Path, db: str, night: Path) -> None:
    result = runner.invoke(app, ["--db", db, "status"])
    assert result.exit_code == 0, result.output
    tail = result.stdout.split("Pending", 1)[1]
    light = night / "LIGHT"
    assert tail == "\n".join(
        [
            " (what `ccdcal process` would do now, with default options):",
            "  masters to build (7):",
            *(f"    {name}" for name in MASTERS),
            "  lights to calibrate (2):",
            f"    {light / 'Light_001.fits'}: not calibrated yet",
            f"    {light / 'Light_002.fits'}: not calibrated yet",
            "",
        ]
    )
    data = json.loads(runner.invoke(app, ["--db", db, "status", "--json"]).stdout)
    assert data["pending"]["masters_to_build"] == MASTERS


# -- the dark of the master flats -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["masters", "process"])
def test_help_lists_flat_dark_scale(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--flat-dark-scale" in result.stdout
    assert "--no-flat-dark-scale" not in result.stdout


def flat_calibrators(db: str, name: str) -> dict[str, tuple[str, float | None]]:
    """role -> (master file name, scale) of the current master flat whose file name contains ``name``."""
    with Catalog(db) as catalog, catalog.session() as session:
        (flat,) = session.scalars(
            select(Master).where(
                Master.kind == "flat", Master.status == "current", Master.path.contains(name)
            )
        )
        rows = session.scalars(select(MasterCalibrator).where(MasterCalibrator.master_id == flat.id))
        return {r.role: (Path(session.get(Master, r.calibrator_id).path).name, r.scale) for r in rows}


def test_masters_flats_take_a_dark_at_their_exposure_else_bias_only_unless_flat_dark_scale(
    runner: CliRunner, tmp_path: Path, db: str, night: Path
) -> None:
    # The R flats are of 2 s, the Ha flats of 5 s; darks of 2, 5, 60 and 300 s.
    masters_dir = ["--db", db, "masters", "--masters-dir", str(tmp_path / "m")]
    built = runner.invoke(app, masters_dir)
    assert built.exit_code == 0, built.output
    bias = ("master_bias_b2x2_g120_sNA_C-10.fits", None)
    assert flat_calibrators(db, "_R.fits") == {
        "bias": bias,
        "dark": ("master_dark_b2x2_g120_2s_C-10.fits", 1.0),
    }
    assert flat_calibrators(db, "_Ha.fits") == {
        "bias": bias,
        "dark": ("master_dark_b2x2_g120_5s_C-10.fits", 1.0),
    }

    with Catalog(db) as catalog, catalog.session() as session:  # no 2 s dark any more
        session.execute(update(Frame).where(Frame.path.like("%Dark_2s_%")).values(is_bad=True))
    default = runner.invoke(app, masters_dir)
    assert default.exit_code == 0, default.output
    assert default.stdout.splitlines() == [
        "Masters (run 3): 1 built, 5 already current, 0 skipped",
        f"  built {tmp_path / 'm' / 'master_flat_b2x2_g120_sNA_C-10_R_v2.fits'} (3 frames)",
    ]
    assert flat_calibrators(db, "_R_v2.fits") == {"bias": bias}  # the 5 s dark is not scaled to 2 s
    header = fits.getheader(tmp_path / "m" / "master_flat_b2x2_g120_sNA_C-10_R_v2.fits")
    assert "DARKCOR" not in header
    assert "DARKSCAL" not in header

    scaled = runner.invoke(app, [*masters_dir, "--flat-dark-scale"])
    assert scaled.exit_code == 0, scaled.output
    assert scaled.stdout.splitlines() == [
        "Masters (run 4): 1 built, 5 already current, 0 skipped",
        f"  built {tmp_path / 'm' / 'master_flat_b2x2_g120_sNA_C-10_R_v3.fits'} (3 frames)",
    ]
    assert flat_calibrators(db, "_R_v3.fits") == {
        "bias": bias,
        "dark": ("master_dark_b2x2_g120_5s_C-10.fits", pytest.approx(0.4)),
    }
    header = fits.getheader(tmp_path / "m" / "master_flat_b2x2_g120_sNA_C-10_R_v3.fits")
    assert (header["DARKCOR"], header["DARKSCAL"]) == ("master_dark_b2x2_g120_5s_C-10.fits", 0.4)
    # the Ha flats have their 5 s dark: the option changes nothing for them
    assert flat_calibrators(db, "_Ha.fits") == {
        "bias": bias,
        "dark": ("master_dark_b2x2_g120_5s_C-10.fits", 1.0),
    }

    again = runner.invoke(app, masters_dir)  # back to the default: the bias-only flat is current again
    assert again.exit_code == 0, again.output
    assert (
        again.stdout.splitlines()[0]
        == "Masters (run 5): 0 built, 1 made current again, 5 already current, 0 skipped"
    )
    assert flat_calibrators(db, "_R_v2.fits") == {"bias": bias}
