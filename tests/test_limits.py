"""The range of every numeric option (:mod:`ccdcal.limits`): refused where the value is parsed — the
option objects of the Python API, every command's options, ``config.ini`` — with one line naming the
option and its range, exit status 2, and nothing written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ccdcal import limits
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.queries import MatchRules
from ccdcal.cli import app
from ccdcal.errors import UsageError
from ccdcal.kernels.combine import ClipParams
from ccdcal.kernels.cosmic import CosmicParams
from ccdcal.kernels.options import StepOptions
from ccdcal.lights.options import ProcessOptions
from ccdcal.masters.frameqa import QaOptions
from ccdcal.masters.groups import MasterOptions


def test_a_range_reads_as_written() -> None:
    assert limits.FLAT_MIN.text == "0 < x < 1"
    assert limits.TEMP_TOLERANCE.text == "0 <= x <= 100 °C"
    assert limits.JOBS.text == "a whole number 1 <= x <= 1024"
    assert limits.MEM_LIMIT.text == "16M <= x <= 64T"
    assert limits.FLAT_LOW.text == "0 < x < 1"
    assert limits.SATURATION.text == "0 < x <= 1e+20 ADU"


@pytest.mark.parametrize(
    ("flat_low", "flat_min", "message"),
    [
        (0.01, 0.01, "--flat-low 0.01 is out of range: use 0.01 < x < 1 (above --flat-min)"),
        (0.3, 0.5, "--flat-low 0.3 is out of range: use 0.5 < x < 1 (above --flat-min)"),
        (1.0, 0.01, "--flat-low 1 is out of range: use 0 < x < 1"),
        (math.nan, 0.01, "--flat-low nan is out of range: use 0 < x < 1"),
    ],
)
def test_flat_low_is_above_flat_min(flat_low: float, flat_min: float, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        limits.check_flat_low(flat_low, flat_min)
    assert str(raised.value) == message
    limits.check_flat_low(0.5, 0.01)
    limits.check_flat_low(0.02, 0.01)


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, 1e30, math.nan, math.inf, -math.inf, "0.1", True, None])
def test_flat_min_outside_its_range(value: Any) -> None:
    assert not limits.FLAT_MIN.contains(value)
    with pytest.raises(UsageError, match=r"^--flat-min .* is out of range: use 0 < x < 1$"):
        limits.FLAT_MIN.check(value)


@pytest.mark.parametrize("value", [1e-9, 0.01, 0.5, 0.999999])
def test_flat_min_within_its_range(value: float) -> None:
    limits.FLAT_MIN.check(value)


def test_whole_numbers_only_where_asked() -> None:
    assert limits.JOBS.contains(4)
    assert limits.JOBS.contains(4.0)
    assert not limits.JOBS.contains(2.5)
    assert not limits.JOBS.contains(0)
    assert not limits.JOBS.contains(1025)
    assert limits.ITERATIONS.contains(100)
    assert not limits.ITERATIONS.contains(101)


# Each option object, given one value out of range: the message the Python API raises.
API = {
    "flat-min": (lambda: ProcessOptions(flat_min=1e30), "--flat-min 1e+30 is out of range: use 0 < x < 1"),
    "flat-low": (lambda: ProcessOptions(flat_low=1.5), "--flat-low 1.5 is out of range: use 0 < x < 1"),
    "flat-low-min": (
        lambda: ProcessOptions(flat_min=0.6),
        "--flat-low 0.5 is out of range: use 0.6 < x < 1 (above --flat-min)",
    ),
    "saturation": (
        lambda: StepOptions(saturation=0.0),
        "--saturation 0 is out of range: use 0 < x <= 1e+20 ADU",
    ),
    "jobs": (
        lambda: ProcessOptions(jobs=100_000),
        "--jobs 100000 is out of range: use a whole number 1 <= x <= 1024",
    ),
    "min-frames": (
        lambda: MasterOptions(min_frames=0),
        "--min-frames 0 is out of range: use a whole number 1 <= x <= 65535",
    ),
    "mem-limit": (
        lambda: ProcessOptions(mem_limit=1000),
        "--mem-limit 1000 is out of range: use 16M <= x <= 64T",
    ),
    "temp-tolerance": (
        lambda: MatchRules(temp_tolerance=math.nan),
        "--temp-tolerance nan is out of range: use 0 <= x <= 100 °C",
    ),
    "exptime-tolerance": (
        lambda: MatchRules(exptime_tolerance=-1e-6),
        "--exptime-tolerance -1e-06 is out of range: use 0 <= x <= 0.5",
    ),
    "sigma": (lambda: ClipParams(sigma_lower=1e9), "--sigma 1000000000 is out of range: use 0.5 <= x <= 100"),
    "iterations": (
        lambda: ClipParams(maxiters=10**6),
        "--iterations 1000000 is out of range: use a whole number 1 <= x <= 100",
    ),
    "gain": (lambda: StepOptions(gain=math.inf), "--gain inf is out of range: use 0.001 <= x <= 1000 e-/ADU"),
    "readnoise": (
        lambda: StepOptions(readnoise=-3.0),
        "--readnoise -3 is out of range: use 0 <= x <= 1000 e-",
    ),
    "cr-sigclip": (
        lambda: CosmicParams(sigclip=1e30),
        "--cr-sigclip 1e+30 is out of range: use 0 < x <= 100",
    ),
    "cr-objlim": (lambda: CosmicParams(objlim=0.0), "--cr-objlim 0 is out of range: use 0 < x <= 100"),
    "qa-outlier-sigma": (
        lambda: QaOptions(outlier_sigma=0.5),
        "--qa-outlier-sigma 0.5 is out of range: use 1 <= x <= 1000000 sigma",
    ),
    "qa-temp-tolerance": (
        lambda: QaOptions(temp_tolerance=0.0),
        "--qa-temp-tolerance 0 is out of range: use 0 < x <= 100 °C",
    ),
    "qa-flat-min-snr": (
        lambda: QaOptions(flat_min_snr=math.nan),
        "--qa-flat-min-snr nan is out of range: use 0 <= x <= 1000000",
    ),
    "qa-flat-min-fraction": (
        lambda: QaOptions(flat_min_fraction=1.0),
        "--qa-flat-min-fraction 1 is out of range: use 0 <= x < 1",
    ),
    "qa-flat-max-saturated": (
        lambda: QaOptions(flat_max_saturated=-0.5),
        "--qa-flat-max-saturated -0.5 is out of range: use 0 <= x <= 1",
    ),
    "qa-flat-max-level": (
        lambda: QaOptions(flat_max_level=0.0),
        "--qa-flat-max-level 0 is out of range: use 0 < x <= 1",
    ),
    "qa-tail-fraction": (
        lambda: QaOptions(tail_fraction=math.inf),
        "--qa-tail-fraction inf is out of range: use 0 < x <= 1",
    ),
}


@pytest.mark.parametrize("case", list(API))
def test_the_python_api_refuses_values_out_of_range(case: str) -> None:
    make, message = API[case]
    with pytest.raises(UsageError) as raised:
        make()
    assert str(raised.value) == message


# Each command and numeric option, with a value out of range: the one line it prints.
COMMANDS = [
    (["process", "--flat-min", "1e30"], "--flat-min 1e+30 is out of range: use 0 < x < 1"),
    (["process", "--flat-min", "1"], "--flat-min 1 is out of range: use 0 < x < 1"),
    (["process", "--flat-low", "0"], "--flat-low 0 is out of range: use 0 < x < 1"),
    (["process", "--flat-low", "1"], "--flat-low 1 is out of range: use 0 < x < 1"),
    (
        ["process", "--flat-low", "0.2", "--flat-min", "0.3"],
        "--flat-low 0.2 is out of range: use 0.3 < x < 1 (above --flat-min)",
    ),
    (["process", "--saturation", "-5"], "--saturation -5 is out of range: use 0 < x <= 1e+20 ADU"),
    (["process", "--saturation", "nan"], "--saturation nan is out of range: use 0 < x <= 1e+20 ADU"),
    (["masters", "--saturation", "0"], "--saturation 0 is out of range: use 0 < x <= 1e+20 ADU"),
    (["masters", "--saturation", "inf"], "--saturation inf is out of range: use 0 < x <= 1e+20 ADU"),
    (["process", "--temp-tolerance", "nan"], "--temp-tolerance nan is out of range: use 0 <= x <= 100 °C"),
    (["process", "--exptime-tolerance", "0.9"], "--exptime-tolerance 0.9 is out of range: use 0 <= x <= 0.5"),
    (["process", "--jobs", "0"], "--jobs 0 is out of range: use a whole number 1 <= x <= 1024"),
    (["process", "--gain", "-2"], "--gain -2 is out of range: use 0.001 <= x <= 1000 e-/ADU"),
    (["process", "--readnoise", "inf"], "--readnoise inf is out of range: use 0 <= x <= 1000 e-"),
    (["process", "--cosmic-rays", "--cr-sigclip", "0"], "--cr-sigclip 0 is out of range: use 0 < x <= 100"),
    (
        ["process", "--cosmic-rays", "--cr-objlim", "1e9"],
        "--cr-objlim 1000000000 is out of range: use 0 < x <= 100",
    ),
    (["process", "--min-frames", "0"], "--min-frames 0 is out of range: use a whole number 1 <= x <= 65535"),
    (["process", "--mem-limit", "1K"], "--mem-limit 1024 is out of range: use 16M <= x <= 64T"),
    (["masters", "--sigma", "0"], "--sigma 0 is out of range: use 0.5 <= x <= 100"),
    (["masters", "--iterations", "0"], "--iterations 0 is out of range: use a whole number 1 <= x <= 100"),
    (["masters", "--temp-tolerance", "1e30"], "--temp-tolerance 1e+30 is out of range: use 0 <= x <= 100 °C"),
    (
        ["masters", "--min-frames", "70000"],
        "--min-frames 70000 is out of range: use a whole number 1 <= x <= 65535",
    ),
    (["masters", "--mem-limit", "1e30G"], None),
    (
        ["masters", "--qa-outlier-sigma", "0"],
        "--qa-outlier-sigma 0 is out of range: use 1 <= x <= 1000000 sigma",
    ),
    (["process", "--qa-temp-tolerance", "0"], "--qa-temp-tolerance 0 is out of range: use 0 < x <= 100 °C"),
    (["masters", "--qa-flat-min-snr", "-1"], "--qa-flat-min-snr -1 is out of range: use 0 <= x <= 1000000"),
    (["process", "--qa-flat-min-fraction", "1"], "--qa-flat-min-fraction 1 is out of range: use 0 <= x < 1"),
    (
        ["masters", "--qa-flat-max-saturated", "2"],
        "--qa-flat-max-saturated 2 is out of range: use 0 <= x <= 1",
    ),
    (["process", "--qa-flat-max-level", "nan"], "--qa-flat-max-level nan is out of range: use 0 < x <= 1"),
    (["masters", "--qa-tail-fraction", "0"], "--qa-tail-fraction 0 is out of range: use 0 < x <= 1"),
    (["ingest", "--jobs", "0", "."], "--jobs 0 is out of range: use a whole number 1 <= x <= 1024"),
    (["audit", "--jobs", "5000"], "--jobs 5000 is out of range: use a whole number 1 <= x <= 1024"),
    (["report", "--run", "0"], "--run 0 is out of range: use a whole number x >= 1"),
]


@pytest.mark.parametrize(("args", "message"), COMMANDS, ids=[" ".join(a[:3]) for a, _ in COMMANDS])
def test_every_numeric_option_is_checked_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "c.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "db", "upgrade"]).exit_code == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["--db", db, *args])
    assert result.exit_code == 2, result.output
    line = result.stderr.splitlines()
    assert len(line) == 1, result.stderr
    assert line[0].startswith(
        f"Error: {next(a for a in args[1:] if a.startswith('--') and a != '--cosmic-rays')} "
    )
    if message is not None:
        assert line[0] == f"Error: {message}"
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder, no file
    with Catalog(db) as catalog:
        assert [r.command for r in catalog.runs()] == ["db upgrade"]  # no run of the refused command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-size", "-1"], "--max-size -1 is out of range: use a whole number 0 <= x <= 65536 pixels"),
        (
            ["--max-size", "1000000"],
            "--max-size 1000000 is out of range: use a whole number 0 <= x <= 65536 pixels",
        ),
        (["--hdu", "-1"], "--hdu -1 is out of range: use a whole number 0 <= x <= 9999"),
    ],
)
def test_preview_sizes_are_checked(tmp_path: Path, args: list[str], message: str) -> None:
    from ccdcal.simulate import simulate_night

    night = simulate_night(tmp_path / "raw", seed=1, shape=(32, 40), n_bias=1, n_dark=1, n_flat=1, n_light=1)
    result = CliRunner().invoke(
        app, ["preview", str(night.files["light"][0]), "-o", str(tmp_path / "p.png"), *args]
    )
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")
    assert not (tmp_path / "p.png").exists()


def test_help_shows_the_ranges() -> None:
    text = CliRunner().invoke(app, ["process", "--help"], env={"COLUMNS": "250"}).stdout
    for option in (
        "--flat-min",
        "--flat-low",
        "--saturation",
        "--temp-tolerance",
        "--exptime-tolerance",
        "--jobs",
        "--gain",
        "--readnoise",
        "--qa-outlier-sigma",
        "--qa-temp-tolerance",
        "--qa-flat-min-snr",
        "--qa-flat-min-fraction",
        "--qa-flat-max-saturated",
        "--qa-flat-max-level",
        "--qa-tail-fraction",
    ):
        assert limits.RANGES[option].text in " ".join(text.split()), option
