"""No traceback, ever: every command whose destination cannot be written from the start — a read-only file
system, an immutable folder, a file where a folder is expected — answers one line naming the path and the
fix, exit status 2, before any work, and leaves no file behind.

Root writes through permissions, so as root a read-only folder is a read-only bind mount (EROFS) and an
immutable one has ``chattr +i`` (EPERM); for anybody else a folder of mode 0555 (EACCES) stands for both
(immutable folders need root). A case the machine cannot make is skipped, with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.cli import app
from ccdcal.files.fitsio import TEMP_PREFIX


@dataclass(frozen=True)
class Night:
    """A small ingested night: its raw folder and catalog."""

    raw: Path
    db: Path

    @property
    def light(self) -> Path:
        return self.raw / "LIGHT" / "Light_001.fits"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    from ccdcal.simulate import simulate_night

    root = tmp_path_factory.mktemp("destinations")
    raw = simulate_night(root / "raw", seed=2, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=1).root
    result = CliRunner().invoke(app, ["--db", str(root / "c.db"), "ingest", str(raw)])
    assert result.exit_code == 0, result.output
    return Night(raw, root / "c.db")


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@pytest.fixture(params=["read-only", "immutable", "file"])
def unwritable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A destination nothing can be written in, the paths given to each command under it: locked by
    :func:`lock` once the test has put a copy of the catalog in it."""
    folder = tmp_path / "dest"
    case = request.param
    if case == "file":
        folder.write_text("a file where a folder is expected\n")
        yield folder
        return
    folder.mkdir()
    undo: list[str] = []
    if os.geteuid() != 0:
        if case == "immutable":
            pytest.skip("an immutable folder (chattr +i) needs root")
        lock, undo = ["chmod", "0555", str(folder)], ["chmod", "0755", str(folder)]
    elif case == "read-only":
        lock = ["sh", "-c", f"mount --bind '{folder}' '{folder}' && mount -o remount,ro,bind '{folder}'"]
        undo = ["umount", str(folder)]
    else:
        lock, undo = ["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)]
    request.node.stash[_LOCK] = (lock, undo)
    yield folder
    if undo:
        _run(*undo)


_LOCK = pytest.StashKey[tuple[list[str], list[str]]]()


def lock(request: pytest.FixtureRequest, folder: Path, night: Night) -> None:
    """Put a copy of the night's catalog in ``folder``, then make the folder unwritable (skip when the
    machine cannot)."""
    locking = request.node.stash.get(_LOCK, None)
    if locking is None:  # a file where the folder should be
        return
    shutil.copy(night.db, folder / "c.db")
    if not _run(*locking[0]):
        _run(*locking[1])
        pytest.skip(f"cannot make {folder} unwritable here ({' '.join(locking[0][:2])} failed)")


@dataclass(frozen=True)
class Case:
    """A command driven into an unwritable destination ``dest``; ``folder`` is a writable scratch folder."""

    name: str
    args: Callable[[Night, Path, Path], list[str]]


def _config(folder: Path, night: Night, dest: Path) -> Path:
    (folder / "masters").mkdir(parents=True, exist_ok=True)
    config = folder / "config.ini"
    config.write_text(
        f"[MASTERS]\nraw_root = {night.raw}\nmaster_output = {folder / 'masters'}\n"
        f"[CALIBRATION]\noutput_dir = {dest / 'calibrated'}\n"
    )
    return config


CASES = (
    Case("ingest", lambda n, d, f: ["--db", str(d / "new.db"), "ingest", str(n.raw)]),
    Case("db-upgrade", lambda n, d, f: ["--db", str(d / "new.db"), "db", "upgrade"]),
    Case("masters", lambda n, d, f: ["--db", str(f / "c.db"), "masters", "--masters-dir", str(d / "m")]),
    Case(
        "process",
        lambda n, d, f: [
            *("--db", str(f / "c.db"), "process", "--jobs", "1"),
            *("--masters-dir", str(f / "masters"), "--output-dir", str(d / "calibrated")),
        ],
    ),
    Case("run", lambda n, d, f: ["--db", str(f / "c.db"), "run", str(_config(f / "calib", n, d))]),
    Case("run-write-config", lambda n, d, f: ["run", "--write-config", str(d / "config.ini")]),
    Case("report", lambda n, d, f: ["--db", str(f / "c.db"), "report", "-o", str(d / "r.html")]),
    Case("preview", lambda n, d, f: ["preview", str(n.light), "-o", str(d / "p.png")]),
    Case("simulate", lambda n, d, f: ["simulate", str(d / "night")]),
    Case("audit", lambda n, d, f: ["--db", str(d / "c.db"), "audit"]),
    Case("mark-bad", lambda n, d, f: ["--db", str(d / "c.db"), "mark-bad", "frame:1", "--reason", "x"]),
    Case("mark-good", lambda n, d, f: ["--db", str(d / "c.db"), "mark-good", "frame:1"]),
)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.is_dir() else []


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_an_unwritable_destination_is_one_line_before_any_work(
    request: pytest.FixtureRequest, night: Night, tmp_path: Path, unwritable: Path, case: Case
) -> None:
    scratch = tmp_path / "scratch"
    (scratch / "masters").mkdir(parents=True)
    shutil.copy(night.db, scratch / "c.db")
    args = case.args(night, unwritable, scratch)
    lock(request, unwritable, night)
    before = _files(unwritable), _files(scratch)
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert str(unwritable) in lines[0]
    assert any(fix in lines[0] for fix in ("; choose", "; make", "; check --db", "writable copy")), lines[0]
    assert (_files(unwritable), _files(scratch)) == before
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))
    if case.name in ("masters", "process", "run"):  # nothing done: not even a run recorded
        with Catalog(scratch / "c.db", create=False) as catalog:
            assert [run.command for run in catalog.runs()] == ["ingest"]


@pytest.mark.parametrize("command", ["report", "preview"])
def test_a_write_that_fails_after_the_check_is_one_line_and_leaves_nothing(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The folder was writable when checked, the write itself fails (the file system turned read-only
    meanwhile, which refuses even the temporary file's removal): one line naming the file, exit 2."""
    import errno

    from ccdcal.report import previews

    target = tmp_path / ("r.html" if command == "report" else "p.png")
    real_unlink = Path.unlink

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    def unlink(path: Path, missing_ok: bool = False) -> None:  # the cleanup's (the check's passes)
        real_unlink(path, missing_ok=missing_ok)
        if missing_ok:
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    shutil.copy(night.db, tmp_path / "c.db")
    args = (
        ["report", "-o", str(target)]
        if command == "report"
        else ["preview", str(night.light), "-o", str(target)]
    )
    monkeypatch.setattr(previews.os, "replace", refused)
    monkeypatch.setattr(Path, "unlink", unlink)
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "c.db"), *args])
    monkeypatch.undo()
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"Error: cannot write {target}: Read-only file system; make {tmp_path} writable or choose another "
        "folder\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db"]
