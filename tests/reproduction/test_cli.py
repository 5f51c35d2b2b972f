"""``ccdcal reproduce FILE|ID [--deep] [--json]`` on the command line: exit statuses 0, 1 and 2 and what
each prints first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccdcal.cli import app
from tests.reproduction.conftest import Reduced, calibration_of, flipped, master_of


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_reproduced_bit_for_bit_exit_0(night: Reduced, runner: CliRunner) -> None:
    output = night.calibrated / "Light_001_cal.fits"
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_001")
    result = runner.invoke(app, ["--db", night.db, "reproduce", str(output)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        f"calibration:{light.id} Light_001_cal.fits: reproduced bit for bit (PRIMARY, MASK, UNCERT)\n"
    )
    deep = runner.invoke(app, ["--db", night.db, "reproduce", f"calibration:{light.id}", "--deep"])
    assert deep.exit_code == 0
    lines = deep.stdout.splitlines()
    assert lines[0] == result.stdout.strip()
    assert len(lines) > 4
    assert all(line.startswith("  master:") and "reproduced bit for bit" in line for line in lines[1:])
    quiet = runner.invoke(app, ["--db", night.db, "reproduce", str(output), "-q"])
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_json_output(night: Reduced, runner: CliRunner) -> None:
    with night.catalog() as catalog:
        bias = master_of(catalog, "bias")
    result = runner.invoke(app, ["--db", night.db, "reproduce", f"master:{bias.id}", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert (data["target"], data["outcome"], data["exit_code"]) == (f"master:{bias.id}", "reproduced", 0)
    assert [hdu["name"] for hdu in data["products"][0]["hdus"]] == ["PRIMARY", "UNCERT"]
    assert all(hdu["same"] for hdu in data["products"][0]["hdus"])


def test_what_differs_exit_1_on_stderr(night: Reduced, runner: CliRunner) -> None:
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_002")
        flat = master_of(catalog, "flat", filter="Ha")
    with flipped(flat.path, at=2000) as (before, after):
        result = runner.invoke(app, ["--db", night.db, "reproduce", f"calibration:{light.id}"])
        quiet = runner.invoke(app, ["--db", night.db, "-q", "reproduce", f"calibration:{light.id}"])
        as_json = runner.invoke(app, ["--db", night.db, "reproduce", f"calibration:{light.id}", "--json"])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines()[:2] == [
        f"calibration:{light.id} Light_002_cal.fits: not reproduced: an input is no longer what was recorded",
        f"  master flat master:{flat.id} {flat.path} has sha256 {after}, recorded {before}: restore it from "
        "a backup, or build the masters again (`ccdcal masters`)",
    ]
    assert (quiet.exit_code, quiet.stderr) == (1, result.stderr)
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["outcome"] == "differs"
    assert data["products"][0]["outcome"] == "input_changed"
    (changed,) = [item for item in data["products"][0]["inputs"] if item["file"] != "ok"]
    assert changed == {
        "role": "flat",
        "ref": f"master:{flat.id}",
        "path": flat.path,
        "recorded": before,
        "sha256": after,
        "file": "changed",
    }


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("master:99999", "Error: master:99999: no master with id 99999 in the catalog\n"),
        ("flat:3", "Error: flat:3: not an id ccdcal knows; use calibration:N, master:N or frame:N\n"),
    ],
)
def test_unknown_targets_exit_2(night: Reduced, runner: CliRunner, target: str, message: str) -> None:
    result = runner.invoke(app, ["--db", night.db, "reproduce", target])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)


def test_a_raw_frame_and_a_missing_catalog_exit_2(night: Reduced, runner: CliRunner, tmp_path: Path) -> None:
    raw = runner.invoke(app, ["--db", night.db, "reproduce", "frame:1"])
    assert raw.exit_code == 2
    assert raw.stderr.startswith("Error: frame:1: a raw frame (")
    assert raw.stderr.endswith(
        "which ccdcal did not make; give a calibrated file or a master, or "
        "calibration:N or master:N (`ccdcal impact` lists what the frame made)\n"
    )
    nothing = runner.invoke(app, ["--db", str(tmp_path / "none.db"), "reproduce", "master:1"])
    assert nothing.exit_code == 2
    assert nothing.stderr.startswith(f"Error: no catalog at {tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()


def test_help_names_the_argument_and_gives_examples(runner: CliRunner) -> None:
    result = runner.invoke(app, ["reproduce", "--help"], terminal_width=100)
    assert result.exit_code == 0
    assert "FILE|ID" in result.stdout
    assert "Examples:" in result.stdout
    assert "ccdcal reproduce master:3 --deep" in result.stdout
