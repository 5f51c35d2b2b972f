"""``ccdcal report`` and ``ccdcal preview`` on the command line: exact output, messages, exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from ccdcal.cli import app
from tests.report.conftest import Night


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def report(runner: CliRunner, night: Night, *args: str) -> object:
    return runner.invoke(app, ["--db", str(night.db), "report", *args])


def test_report_writes_the_page_and_says_what_it_holds(
    runner: CliRunner, night: Night, tmp_path: Path
) -> None:
    out = tmp_path / "night.html"
    result = report(runner, night, "-o", str(out))
    assert result.exit_code == 0, result.output
    size = out.stat().st_size
    assert result.stdout == (
        f"Report {out} (the catalog now): 7 masters, 3 calibrated lights, 2 problems, 15 images, "
        f"{size / 1024:.0f} KiB\n"
    )
    assert result.stderr == ""
    one = report(runner, night, "--run", "1", "-o", str(tmp_path / "run1.html"), "--json")
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout) == {
        "path": str(tmp_path / "run1.html"),
        "scope": "run 1",
        "size": (tmp_path / "run1.html").stat().st_size,
        "masters": 0,
        "lights": 0,
        "problems": 1,
        "pending": 0,
        "runs": 1,
        "images": 0,
        "unavailable": [],
    }
    since = runner.invoke(
        app,
        ["--db", str(night.db), "-q", "report", "--since", "2000-01-01", "-o", str(tmp_path / "since.html")],
    )
    assert (since.exit_code, since.stdout, since.stderr) == (0, "", "")
    assert "ccdcal report — since 2000-01-01 00:00:00 UTC" in (tmp_path / "since.html").read_text()


def test_report_default_file_is_report_html_in_the_current_folder(
    runner: CliRunner, night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["--db", str(night.db), "-q", "report"])
    assert (result.exit_code, result.stdout) == (0, "")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "99"], "--run 99: no such run (runs are 1 to 2); see the runs table"),
        (["--run", "1", "--since", "2026-01-01"], "--run and --since cannot be used together: choose one"),
        (
            ["--since", "last week"],
            "--since 'last week' is not a date: give an ISO date such as 2026-03-14 or 2026-03-14T18:00 "
            "(UTC unless an offset such as +01:00 is given)",
        ),
    ],
)
def test_report_usage_errors(
    runner: CliRunner, night: Night, tmp_path: Path, args: list[str], message: str
) -> None:
    result = report(runner, night, *args, "-o", str(tmp_path / "r.html"))
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n")
    assert not (tmp_path / "r.html").exists()


def test_report_into_a_missing_folder(runner: CliRunner, night: Night, tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "r.html"
    result = report(runner, night, "-o", str(target))
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: cannot write {target}: folder {tmp_path / 'nowhere'} does not exist\n",
    )


def test_preview_command(
    runner: CliRunner, night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    light = night.root / "LIGHT" / "Light_001.fits"
    before = sorted(p.name for p in light.parent.iterdir())
    result = runner.invoke(app, ["preview", str(light), "--max-size", "40"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"Preview {tmp_path / 'Light_001.png'}: 40x30 px of {light} HDU 0 (80x60), zscale "
    )
    assert sorted(p.name for p in light.parent.iterdir()) == before  # nothing written beside the raw frame
    assert (tmp_path / "Light_001.png").read_bytes().startswith(b"\x89PNG")
    master = night.masters / "master_flat_b2x2_g120_sNA_C-10_R.fits"
    as_json = runner.invoke(app, ["preview", str(master), "-o", str(tmp_path / "flat.png"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    shown = json.loads(as_json.stdout)
    assert (shown["width"], shown["height"], shown["shape"], shown["hdu"]) == (80, 60, [60, 80], 0)
    low, high = shown["zscale"]
    assert 0.5 < low < 1.0 < high < 1.5  # a median-1 flat


def test_preview_errors(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "gone.fits"
    result = runner.invoke(app, ["preview", str(missing)])
    assert (result.exit_code, result.stderr) == (2, f"Error: {missing}: no such file\n")
    table = tmp_path / "table.fits"
    column = fits.Column("a", "J", array=[1])
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([column])]).writeto(table)
    result = runner.invoke(app, ["preview", str(table), "-o", str(tmp_path / "t.png")])
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {table}: no HDU holds an image of two or more axes\n",
    )
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(image)
    result = runner.invoke(app, ["preview", str(image), "-o", str(image)])
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: -o {image} is the frame itself; choose another file name for the PNG\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.fits", "table.fits"]


def test_report_of_an_empty_catalog(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    assert runner.invoke(app, ["--db", str(tmp_path / "new.db"), "db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["--db", str(tmp_path / "new.db"), "report", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"Report {out} (the catalog now): 0 masters, 0 calibrated lights, 0 problems, 0 images, "
    )
    page = out.read_text(encoding="utf-8")
    for empty in ("No master in this scope.", "No calibrated light in this scope.", "No run in this scope."):
        assert empty in page
