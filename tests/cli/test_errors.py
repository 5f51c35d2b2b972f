"""Never a traceback: every value, path, URL and id a user can give that ccdcal cannot use, and what the
surroundings can do to a command, end in one line on stderr naming it (``Error: ...``) and exit status 2
(docs/design.md, Commands and exit codes). Each case is driven through the command line."""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner, Result

from ccdcal.cli import app
from ccdcal.runtime.cores import MAX_WORKERS
from tests.conftest import unreadable

HUGE = "99999999999999999999"


@dataclass(frozen=True)
class Night:
    """A small processed night: its raw folder, catalog, masters and calibrated folders."""

    root: Path
    raw: Path
    db: Path
    masters: Path
    calibrated: Path

    @property
    def light(self) -> Path:
        return self.raw / "LIGHT" / "Light_001.fits"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    from ccdcal.simulate import simulate_night

    root = tmp_path_factory.mktemp("errors")
    raw = simulate_night(root / "raw", seed=5, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2).root
    folders = ["--masters-dir", str(root / "masters"), "--output-dir", str(root / "calibrated")]
    db = ["--db", str(root / "c.db")]
    runner = CliRunner()
    assert runner.invoke(app, [*db, "ingest", str(raw)]).exit_code == 0
    assert runner.invoke(app, [*db, "process", "--jobs", "1", *folders]).exit_code == 0
    empty = fits.PrimaryHDU()
    empty.header["NAXIS"], empty.header["NAXIS1"], empty.header["NAXIS2"] = 2, 0, 5
    (root / "empty_image.fits").write_bytes(empty.header.tostring().encode())
    fits.PrimaryHDU(np.zeros((0, 0), np.float32)).writeto(root / "zero_image.fits")
    return Night(root, raw, root / "c.db", root / "masters", root / "calibrated")


@dataclass(frozen=True)
class Case:
    """A command that cannot do what it is told: its arguments (made from the night and a fresh folder),
    the exit status and a part of the one line on stderr."""

    name: str
    args: Callable[[Night, Path], list[str]]
    message: str
    exit_code: int = 2


def _db(night: Night, tmp: Path) -> list[str]:
    return ["--db", str(tmp / "c.db")]


CASES = (
    # --db: a URL of another database, a driver that is not installed, nothing, a folder.
    Case("db-unknown-dialect", lambda n, t: ["--db", "foo://bar", "status"], "not foo"),
    Case("db-mysql", lambda n, t: ["--db", "mysql://user@host/db", "status"], "not mysql"),
    Case(
        "db-driver-missing",
        lambda n, t: ["--db", "postgresql+pg8000://user@host/db", "status"],
        "its database driver is not installed (No module named 'pg8000')",
    ),
    Case(
        "db-no-such-driver",
        lambda n, t: ["--db", "postgresql+nosuch://user@host/db", "status"],
        "SQLAlchemy has no database driver 'postgresql+nosuch'",
    ),
    Case("db-empty", lambda n, t: ["--db", "", "status"], "--db is empty"),
    Case("db-folder", lambda n, t: ["--db", str(t), "status"], "is a folder"),
    # ids beyond any row id (a 64-bit integer), ids that name nothing.
    *(
        Case(
            f"{command}-{kind}-id-overflow",
            lambda n, t, command=command, kind=kind: [
                *_db(n, t),
                command,
                f"{kind}:{HUGE}",
                *(["--reason", "x"] if command == "mark-bad" else []),
            ],
            f"{kind}:{HUGE}: no {kind} with id {HUGE} in the catalog",
        )
        for command, kind in (
            ("provenance", "master"),
            ("impact", "frame"),
            ("mark-bad", "frame"),
            ("mark-good", "master"),
            ("provenance", "calibration"),
            ("reproduce", "master"),
        )
    ),
    Case(
        "report-run-overflow",
        lambda n, t: [*_db(n, t), "report", "--run", HUGE, "-o", str(t / "r.html")],
        f"--run {HUGE} is out of range: use a whole number x >= 1",
    ),
    Case(
        "report-since-before-year-1",
        lambda n, t: [*_db(n, t), "report", "--since", "0001-01-01T00:00+01:00", "-o", str(t / "r.html")],
        "outside the years 1 to 9999",
    ),
    Case(
        "report-since-after-year-9999",
        lambda n, t: [*_db(n, t), "report", "--since", "9999-12-31T23:30-01:00", "-o", str(t / "r.html")],
        "outside the years 1 to 9999",
    ),
    # Numbers of workers no machine can start.
    Case(
        "process-jobs-overflow",
        lambda n, t: [*_db(n, t), "process", "--redo", "--jobs", HUGE, "--masters-dir", str(t / "m")],
        f"--jobs {HUGE} is out of range: use a whole number 1 <= x <= {MAX_WORKERS}",
    ),
    Case(
        "ingest-jobs-overflow",
        lambda n, t: [*_db(n, t), "ingest", "--jobs", HUGE, str(n.raw)],
        f"--jobs {HUGE} is out of range: use a whole number 1 <= x <= {MAX_WORKERS}",
    ),
    Case(
        "audit-jobs-overflow",
        lambda n, t: [*_db(n, t), "audit", "--jobs", str(MAX_WORKERS + 1)],
        f"--jobs {MAX_WORKERS + 1} is out of range: use a whole number 1 <= x <= {MAX_WORKERS}",
    ),
    Case(
        "scheduler-local-overflow",
        lambda n, t: [*_db(n, t), "ingest", "--scheduler", f"local:{HUGE}", str(n.raw)],
        f"N in --scheduler local:{HUGE} must be at most {MAX_WORKERS}",
    ),
    Case(
        "scheduler-local-zero",
        lambda n, t: [*_db(n, t), "process", "--scheduler", "local:0", "--masters-dir", str(t / "m")],
        "N in --scheduler local:0 must be at least 1, not 0",
    ),
    Case(
        "config-jobs-overflow",
        lambda n, t: [*_db(n, t), "run", str(_config(t, f"[GENERAL]\njobs = {HUGE}\n"))],
        f"jobs = {HUGE} is out of range: use a whole number 1 <= x <= {MAX_WORKERS}",
    ),
    # Sizes and tolerances that are not finite numbers.
    *(
        Case(
            f"mem-limit-{value}",
            lambda n, t, value=value: [*_db(n, t), "masters", "--mem-limit", value, "--masters-dir", str(t)],
            f"--mem-limit {value!r} must be a positive size",
        )
        for value in ("inf", "nan", "1e400", "-2G")
    ),
    Case(
        "masters-temp-tolerance-nan",
        lambda n, t: [*_db(n, t), "masters", "--temp-tolerance", "nan", "--masters-dir", str(t)],
        "--temp-tolerance nan is out of range: use 0 <= x <= 100 °C",
    ),
    Case(
        "process-temp-tolerance-inf",
        lambda n, t: [*_db(n, t), "process", "--temp-tolerance", "inf", "--masters-dir", str(t)],
        "--temp-tolerance inf is out of range: use 0 <= x <= 100 °C",
    ),
    Case(
        "process-exptime-tolerance-inf",
        lambda n, t: [*_db(n, t), "process", "--dry-run", "--exptime-tolerance", "inf"],
        "--exptime-tolerance inf is out of range: use 0 <= x <= 0.5",
    ),
    # -o naming a folder; images with no pixels; a folder given as a frame.
    Case(
        "preview-output-is-a-folder",
        lambda n, t: ["preview", str(n.light), "-o", str(t)],
        "-o {tmp} is a folder; give the file to write the PNG to, e.g. -o {tmp}/Light_001.png",
    ),
    Case(
        "report-output-is-a-folder",
        lambda n, t: [*_db(n, t), "report", "-o", str(t)],
        "-o {tmp} is a folder; give the file to write the report to, e.g. -o {tmp}/report.html",
    ),
    Case(
        "preview-zero-size-image",
        lambda n, t: ["preview", str(n.root / "zero_image.fits"), "-o", str(t / "z.png")],
        "zero_image.fits: HDU 0 holds an empty image (0x0 pixels): nothing to show",
    ),
    Case(
        "preview-zero-width-image",
        lambda n, t: ["preview", str(n.root / "empty_image.fits"), "-o", str(t / "z.png")],
        "empty_image.fits: HDU 0 holds an empty image (0x5 pixels): nothing to show",
    ),
    Case(
        "preview-of-a-folder",
        lambda n, t: ["preview", str(n.raw), "-o", str(t / "z.png")],
        "a folder, not a FITS file",
    ),
    Case(
        "provenance-from-header-of-a-folder",
        lambda n, t: ["provenance", "--from-header", str(n.raw)],
        "raw: a folder, not a FITS file",
    ),
    Case(
        "masters-dir-is-a-file",
        lambda n, t: [*_db(n, t), "masters", "--sigma", "2", "--masters-dir", str(n.light)],
        "Light_001.fits is a file, not a folder; choose another folder",
    ),
    Case(
        "output-dir-under-a-file",
        lambda n, t: [*_db(n, t), "process", "--output-dir", str(n.light / "out"), "--masters-dir", str(t)],
        "Light_001.fits is a file, not a folder; choose another folder",
    ),
    Case(
        "audit-search-missing",
        lambda n, t: [*_db(n, t), "audit", "--search", str(t / "nowhere")],
        "nowhere: no such folder to look for missing files in",
    ),
)


def _config(folder: Path, text: str) -> Path:
    path = folder / "config.ini"
    path.write_text(text)
    return path


def _invoke(args: list[str], tmp: Path) -> Result:
    return CliRunner().invoke(app, args)


def assert_one_line(result: Result, exit_code: int, message: str) -> str:
    """No traceback: the command ended with ``exit_code`` and exactly one line ``Error: ...`` on stderr,
    holding ``message``."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert message in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_value_ccdcal_cannot_use_is_one_line_and_exit_2(night: Night, tmp_path: Path, case: Case) -> None:
    shutil.copy(night.db, tmp_path / "c.db")
    result = _invoke(case.args(night, tmp_path), tmp_path)
    assert_one_line(result, case.exit_code, case.message.replace("{tmp}", str(tmp_path)))


def test_a_file_inside_an_unreadable_folder_is_one_line(night: Night, tmp_path: Path) -> None:
    """Given by name, a file whose folder cannot be searched: ingest, preview and provenance say so."""
    raw = tmp_path / "raw"
    shutil.copytree(night.raw / "LIGHT", raw)
    shutil.copy(night.db, tmp_path / "c.db")
    db = ["--db", str(tmp_path / "c.db")]
    light = raw / "Light_001.fits"
    with unreadable(raw):
        ingested = _invoke([*db, "ingest", str(light)], tmp_path)
        shown = _invoke(["preview", str(light), "-o", str(tmp_path / "l.png")], tmp_path)
        traced = _invoke(["provenance", "--from-header", str(light)], tmp_path)
    assert_one_line(ingested, 2, f"{light}: cannot be looked at (Permission denied)")
    assert_one_line(shown, 2, f"{light}: cannot look at it: Permission denied")
    assert_one_line(traced, 2, f"{light}: cannot be looked at (Permission denied)")


def test_an_output_that_cannot_be_written_is_one_line(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preview -o on a full disk: found before any work (the folder is tried first); the PNG is not
    written, nothing is left beside it."""
    import builtins

    real_open = builtins.open

    def full(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode and str(file).startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", full)
    result = _invoke(["preview", str(night.light), "-o", str(tmp_path / "l.png")], tmp_path)
    monkeypatch.undo()
    assert_one_line(
        result,
        2,
        f"cannot write in {tmp_path}: No space left on device; free some space on the disk of {tmp_path}",
    )
    assert list(tmp_path.iterdir()) == []


def test_an_operating_system_error_anywhere_is_one_line(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError no part of ccdcal turned into a message of its own (here: the status of a catalog whose
    disk fails) is still one line, naming the file, the error and what to do."""

    def failing(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, "Input/output error", "/mnt/raw/Light_001.fits")

    shutil.copy(night.db, tmp_path / "c.db")
    monkeypatch.setattr("ccdcal.status.catalog_status", failing)
    result = _invoke(["--db", str(tmp_path / "c.db"), "status"], tmp_path)
    assert_one_line(result, 2, "/mnt/raw/Light_001.fits: Input/output error; check the disk")


def test_a_damaged_catalog_is_one_line(night: Night, tmp_path: Path) -> None:
    """A catalog whose table was dropped by hand: the database's own error, in one line naming the catalog."""
    import sqlite3

    shutil.copy(night.db, tmp_path / "c.db")
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("DROP TABLE claims")
    conn.close()
    result = _invoke(["--db", str(tmp_path / "c.db"), "process", "--dry-run"], tmp_path)
    assert_one_line(result, 2, f"cannot use the catalog {tmp_path / 'c.db'}: no such table: claims")


def test_a_worker_process_that_dies_is_one_line_and_the_next_run_resumes(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker process killed (as by the kernel's out-of-memory killer) breaks its pool: one line saying
    so, exit 2; the same command run again calibrates what is left."""
    import os

    from ccdcal.lights import worker

    calibrate = worker._calibrate

    def killed(task: object) -> object:  # runs in the forked worker, which inherits the patch
        if str(getattr(task, "path", "")).endswith("Light_002.fits"):
            os._exit(9)
        return calibrate(task)

    shutil.copy(night.db, tmp_path / "c.db")
    args = ["--db", str(tmp_path / "c.db"), "process", "--redo", "--jobs", "2"]
    args += ["--masters-dir", str(night.masters), "--output-dir", str(tmp_path / "cal")]
    monkeypatch.setattr(worker, "_calibrate", killed)
    result = _invoke(args, tmp_path)
    monkeypatch.undo()
    assert_one_line(result, 2, "a worker process died (")
    again = _invoke(args[:3] + args[4:], tmp_path)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in (tmp_path / "cal").glob("*.fits")) == [
        "Light_001_cal.fits",
        "Light_002_cal.fits",
    ]


def test_a_bug_is_one_line_naming_it_and_v_shows_the_traceback(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception nobody foresaw is a bug: one line naming its type and place, exit 2; its traceback is
    logged at debug level, which ``-v`` shows."""

    def broken(*args: object, **kwargs: object) -> object:
        return {}["pending"]

    shutil.copy(night.db, tmp_path / "c.db")
    monkeypatch.setattr("ccdcal.status.catalog_status", broken)
    result = _invoke(["--db", str(tmp_path / "c.db"), "status"], tmp_path)
    line = assert_one_line(result, 2, "internal error at test_errors.py:")
    assert "KeyError: 'pending' — a bug in ccdcal" in line
    assert line.endswith("run the command again with -v to see the traceback, and report it")
    with caplog.at_level(logging.DEBUG, logger="ccdcal"):
        again = _invoke(["--db", str(tmp_path / "c.db"), "-v", "status"], tmp_path)
    assert again.exit_code == 2
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
