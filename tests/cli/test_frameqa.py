"""The frame-QA options of ``ccdcal masters`` and ``ccdcal process`` (``ccdcal/cli/frameqa.py``): each reaches
the ``QaOptions`` of the master build, and a threshold outside its range is one line, exit status 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.cli import app
from ccdcal.lights import pipeline  # noqa: F401  (imported before any stand-in: see given_options)
from ccdcal.lights.options import ProcessOptions, qa_arguments, qa_from_arguments
from ccdcal.masters.frameqa import QaOptions
from ccdcal.masters.groups import MasterOptions

#: Every frame-QA option with a value other than its default, and the options they make.
GIVEN = [
    "--no-frame-qa",
    *("--qa-outlier-sigma", "6"),
    *("--qa-temp-tolerance", "0.5"),
    *("--qa-flat-min-snr", "12"),
    *("--qa-flat-min-fraction", "0.25"),
    *("--qa-flat-max-saturated", "0.05"),
    *("--qa-flat-max-level", "0.75"),
    *("--qa-tail-fraction", "0.01"),
]
MADE = QaOptions(
    enabled=False,
    outlier_sigma=6.0,
    temp_tolerance=0.5,
    flat_min_snr=12.0,
    flat_min_fraction=0.25,
    flat_max_saturated=0.05,
    flat_max_level=0.75,
    tail_fraction=0.01,
)

#: The library function each command hands its options to (``process --dry-run``: no worker is forked).
TARGETS = {"masters": "ccdcal.masters.build.build_masters", "process": "ccdcal.lights.pipeline.dry_run"}


def given_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, *args: str) -> Any:
    """The options object ``ccdcal COMMAND ARGS`` passes to the library (the library function replaced for
    the call only)."""
    given: list[Any] = []

    def stop(_catalog: Any, options: Any, *_args: Any, **_kwargs: Any) -> None:
        given.append(options)
        raise typer.Exit(0)

    db = tmp_path / "c.db"
    if not db.exists():  # the commands refuse a catalog that does not exist
        Catalog(db, create=True).close()
    words = [command, "--masters-dir", str(tmp_path / "m"), *(["--dry-run"] if command == "process" else [])]
    with monkeypatch.context() as patch:
        patch.setattr(TARGETS[command], stop)
        result = CliRunner().invoke(app, ["--db", str(db), *words, *args], env={"CCDCAL_DB": ""})
    assert (result.exit_code, len(given)) == (0, 1), result.output
    return given[0]


def test_masters_passes_the_qa_options_to_the_master_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = given_options(monkeypatch, tmp_path, "masters", *GIVEN)
    assert isinstance(options, MasterOptions)
    assert options.qa == MADE
    assert given_options(monkeypatch, tmp_path, "masters").qa == QaOptions()


def test_process_carries_the_qa_options_to_its_master_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = given_options(monkeypatch, tmp_path, "process", *GIVEN)
    assert isinstance(options, ProcessOptions)
    assert options.qa == options.master_options().qa == MADE
    assert given_options(monkeypatch, tmp_path, "process").master_options().qa == QaOptions()


@pytest.mark.parametrize("command", ["masters", "process"])
def test_no_frame_qa_alone_keeps_the_thresholds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    options = given_options(monkeypatch, tmp_path, command, "--no-frame-qa")
    assert options.qa == QaOptions(enabled=False)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("masters", ["--qa-outlier-sigma", "1"]),
        ("process", ["--qa-temp-tolerance", "100"]),
        ("masters", ["--qa-flat-min-snr", "0"]),
        ("process", ["--qa-flat-min-fraction", "0"]),
        ("masters", ["--qa-flat-max-saturated", "1"]),
        ("process", ["--qa-flat-max-level", "1"]),
        ("masters", ["--qa-tail-fraction", "1"]),
    ],
)
def test_the_bounds_of_each_range_are_taken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, args: list[str]
) -> None:
    qa = given_options(monkeypatch, tmp_path, command, *args).qa
    assert qa.as_dict()[args[0].removeprefix("--qa-").replace("-", "_")] == float(args[1])


# Each frame-QA threshold outside its range, on the command that is given it: the one line it prints.
REFUSED = [
    (
        "masters",
        "--qa-outlier-sigma",
        "0.5",
        "--qa-outlier-sigma 0.5 is out of range: use 1 <= x <= 1000000 sigma",
    ),
    (
        "process",
        "--qa-outlier-sigma",
        "nan",
        "--qa-outlier-sigma nan is out of range: use 1 <= x <= 1000000 sigma",
    ),
    ("masters", "--qa-temp-tolerance", "0", "--qa-temp-tolerance 0 is out of range: use 0 < x <= 100 °C"),
    ("process", "--qa-temp-tolerance", "-1", "--qa-temp-tolerance -1 is out of range: use 0 < x <= 100 °C"),
    ("masters", "--qa-flat-min-snr", "-1", "--qa-flat-min-snr -1 is out of range: use 0 <= x <= 1000000"),
    ("process", "--qa-flat-min-snr", "inf", "--qa-flat-min-snr inf is out of range: use 0 <= x <= 1000000"),
    ("masters", "--qa-flat-min-fraction", "1", "--qa-flat-min-fraction 1 is out of range: use 0 <= x < 1"),
    (
        "process",
        "--qa-flat-min-fraction",
        "-0.1",
        "--qa-flat-min-fraction -0.1 is out of range: use 0 <= x < 1",
    ),
    (
        "masters",
        "--qa-flat-max-saturated",
        "1.5",
        "--qa-flat-max-saturated 1.5 is out of range: use 0 <= x <= 1",
    ),
    (
        "process",
        "--qa-flat-max-saturated",
        "-1",
        "--qa-flat-max-saturated -1 is out of range: use 0 <= x <= 1",
    ),
    ("masters", "--qa-flat-max-level", "0", "--qa-flat-max-level 0 is out of range: use 0 < x <= 1"),
    ("process", "--qa-flat-max-level", "2", "--qa-flat-max-level 2 is out of range: use 0 < x <= 1"),
    ("masters", "--qa-tail-fraction", "0", "--qa-tail-fraction 0 is out of range: use 0 < x <= 1"),
    ("process", "--qa-tail-fraction", "1e30", "--qa-tail-fraction 1e+30 is out of range: use 0 < x <= 1"),
]


@pytest.mark.parametrize(
    ("command", "option", "value", "message"), REFUSED, ids=[" ".join(c[:3]) for c in REFUSED]
)
def test_a_threshold_outside_its_range_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, option: str, value: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "c.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "db", "upgrade"]).exit_code == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["--db", db, command, "--no-frame-qa", option, value])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder, no file
    with Catalog(db) as catalog:
        assert [r.command for r in catalog.runs()] == ["db upgrade"]  # no run of the refused command


def test_a_process_run_records_the_qa_options_by_their_names() -> None:
    recorded = ProcessOptions(qa=MADE).arguments()
    assert {key: value for key, value in recorded.items() if "qa" in key} == {
        "no_frame_qa": True,
        "qa_outlier_sigma": 6.0,
        "qa_temp_tolerance": 0.5,
        "qa_flat_min_snr": 12.0,
        "qa_flat_min_fraction": 0.25,
        "qa_flat_max_saturated": 0.05,
        "qa_flat_max_level": 0.75,
        "qa_tail_fraction": 0.01,
    }
    assert qa_arguments(MADE) == {key: value for key, value in recorded.items() if "qa" in key}
    assert ProcessOptions.from_arguments(recorded).qa == qa_from_arguments(recorded) == MADE
    # a run recorded before frame QA: its defaults
    assert ProcessOptions.from_arguments({"flat_min": 0.02}).qa == QaOptions()
