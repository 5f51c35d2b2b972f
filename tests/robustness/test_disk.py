"""Disk problems: an output folder that cannot be written, a write failing mid-file (a full disk). Each gives
a clear message, nothing is left half written, and the catalog stays consistent; the next run completes."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Claim, Master
from ccdcal.cli import app
from ccdcal.files import calibrated, fitsio
from ccdcal.files.fitsio import TEMP_PREFIX
from ccdcal.lights import worker
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from tests.robustness.cli_runs import (
    State,
    assert_complete_files,
    copy_catalog,
    ingested_night,
    state,
    temporaries,
)

NOSPACE = "No space left on device"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingested_night(tmp_path_factory.mktemp("disk"), seed=29, lights=4)


@pytest.fixture(scope="module")
def reference(night: Path) -> State:
    folder = night / "reference"
    folder.mkdir()
    copy_catalog(night / "template.db", folder / "c.db")
    with Catalog(folder / "c.db") as catalog:
        assert process(catalog, options(folder)).exit_code == 0
    return state(folder / "c.db", folder)


def options(folder: Path, **changes: Any) -> ProcessOptions:
    values: dict[str, Any] = {
        "masters_dir": folder / "masters",
        "output_dir": folder / "calibrated",
        "jobs": 1,
    }
    return ProcessOptions(**(values | changes))


def cli_process(folder: Path, *more: str) -> Any:
    args = ["--db", str(folder / "c.db"), "process", "--jobs", "1"]
    args += ["--masters-dir", str(folder / "masters"), "--output-dir", str(folder / "calibrated"), *more]
    return CliRunner().invoke(app, args)


def counts(folder: Path) -> dict[str, int]:
    with Catalog(folder / "c.db") as catalog, catalog.session() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Master, Calibration, Claim)
        }


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes."""

    room = 0

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if size > _FullDisk.room:
            raise OSError(errno.ENOSPC, NOSPACE)
        _FullDisk.room -= size
        return super().write(data)


def full_disk(
    monkeypatch: pytest.MonkeyPatch, caller: Any, writer: str, module: Any, final: str, room: int
) -> None:
    """Make the disk fill up after ``room`` bytes of the temporary file that the writer ``caller.writer``
    (called with the final path, or the folder and the final name) opens in ``module`` for the final name
    ``final``: the write fails mid-file. Temporary names do not hold the final name: the writer's call
    says which it is."""
    writing: list[str] = []
    real_writer = getattr(caller, writer)

    def tracked(*args: Any, **kwargs: Any) -> Any:
        target = args[0] if isinstance(args[0], Path) and args[0].suffix else Path(args[0]) / args[1]
        writing.append(target.name)
        try:
            return real_writer(*args, **kwargs)
        finally:
            writing.pop()

    def fake(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and writing and writing[-1] == final and TEMP_PREFIX in str(file):
            _FullDisk.room = room
            return io.BufferedWriter(_FullDisk(file, "wb"))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(caller, writer, tracked)
    monkeypatch.setattr(module, "open", fake, raising=False)


@pytest.mark.parametrize("which", ["output", "masters"])
def test_a_folder_that_cannot_be_written(
    night: Path, reference: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """With a read-only folder (simulated as root, who may write anywhere): one message naming the folder,
    exit status 2, nothing written, not even a run."""
    copy_catalog(night / "template.db", tmp_path / "c.db")
    folder = tmp_path / ("calibrated" if which == "output" else "masters")
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    else:

        def denied(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if str(file).startswith(str(folder) + os.sep) and "w" in mode:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return builtins.open(file, mode, *args, **kwargs)

        monkeypatch.setattr(fitsio, "open", denied, raising=False)
    try:
        result = cli_process(tmp_path)
    finally:
        folder.chmod(0o755)
        monkeypatch.undo()
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: cannot write in {folder}: Permission denied; make {folder} writable or choose another "
        "folder\n"
    )
    assert counts(tmp_path) == {"masters": 0, "calibrations": 0, "claims": 0}
    with Catalog(tmp_path / "c.db") as catalog:
        assert [r.command for r in catalog.runs()] == ["ingest"]
    assert list(folder.iterdir()) == []
    result = cli_process(tmp_path)
    assert result.exit_code == 0, result.output
    assert state(tmp_path / "c.db", tmp_path) == reference


def test_disk_full_while_writing_a_master(
    night: Path, reference: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stops with the file named and what to do (exit 2); no master row, no file, no claim."""
    copy_catalog(night / "template.db", tmp_path / "c.db")
    full_disk(monkeypatch, fitsio, "write_atomic", fitsio, "master_dark_b2x2_g120_2s_C-10.fits", 6000)
    result = cli_process(tmp_path)
    monkeypatch.undo()
    master = tmp_path / "masters" / "master_dark_b2x2_g120_2s_C-10.fits"
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: cannot write {master}: {NOSPACE}; free some space on the disk of {master.parent}, then run "
        "the command again\n"
    )
    assert not master.exists()
    assert temporaries(tmp_path / "masters") == []
    assert_complete_files(tmp_path / "masters")
    assert counts(tmp_path) == {"masters": 1, "calibrations": 0, "claims": 0}  # the bias, built before
    with Catalog(tmp_path / "c.db") as catalog:
        assert next(r.status for r in catalog.runs() if r.command == "process") == "failed"
    result = cli_process(tmp_path)
    assert result.exit_code == 0, result.output
    assert state(tmp_path / "c.db", tmp_path) == reference


def test_disk_full_while_writing_a_calibrated_light(
    night: Path, reference: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """That light fails with the reason (exit 1), the others are calibrated; the next run writes it."""
    copy_catalog(night / "template.db", tmp_path / "c.db")
    full_disk(monkeypatch, worker, "write_calibrated", calibrated, "Light_002_cal.fits", 5000)
    result = cli_process(tmp_path)
    monkeypatch.undo()
    output = tmp_path / "calibrated" / "Light_002_cal.fits"
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Failed (1):",
        f"  {night / 'raw' / 'LIGHT' / 'Light_002.fits'}: cannot write {output}: {NOSPACE}; free some space "
        f"on the disk of {output.parent}, then run the command again",
    ]
    assert not output.exists()
    assert temporaries(tmp_path / "calibrated") == []
    assert_complete_files(tmp_path / "masters", tmp_path / "calibrated")
    with Catalog(tmp_path / "c.db") as catalog, catalog.session() as session:
        rows = dict(
            session.execute(select(Calibration.status, func.count()).group_by(Calibration.status)).all()
        )
    assert rows == {"current": 3, "failed": 1}
    state(tmp_path / "c.db", tmp_path)  # every current row matches its file
    again = cli_process(tmp_path)
    assert again.exit_code == 0, again.output
    assert "lights 1 calibrated, 3 already calibrated" in again.stdout
    assert state(tmp_path / "c.db", tmp_path) == reference
