"""A catalog deleted or replaced while a command works on it (its folder removed, a backup restored over
it): found at the next commit by the file's identity; the work stops, the lights not recorded are failed
with the reason (exit status 1), and nothing claims they were recorded."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.cli import app
from ccdcal.errors import CatalogGoneError
from ccdcal.lights import coordinator
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from tests.robustness.cli_runs import copy_catalog, ingested_night, temporaries

LIGHTS = 6


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingested_night(tmp_path_factory.mktemp("gone"), seed=31, lights=LIGHTS, shape=(32, 40))


def project(night: Path, tmp_path: Path) -> Path:
    """``tmp_path/project/c.db``, a copy of the ingested night's catalog; returns the project folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    copy_catalog(night / "template.db", folder / "c.db")
    return folder


def options(tmp_path: Path) -> ProcessOptions:
    return ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "calibrated", jobs=1)


def after_first_batch(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Do ``action`` once the first batch of lights is recorded (each batch one light)."""
    monkeypatch.setattr(coordinator, "_BATCH", 1)
    real = coordinator.register

    def register(*args: Any, **kwargs: Any) -> Any:
        retired = real(*args, **kwargs)
        if not getattr(register, "done", False):
            register.done = True  # type: ignore[attr-defined]
            action()
        return retired

    monkeypatch.setattr(coordinator, "register", register)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_catalog_gone_while_lights_are_calibrated(
    night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    folder = project(night, tmp_path)
    backup = tmp_path / "backup.db"
    copy_catalog(folder / "c.db", backup)

    def vanish() -> None:
        if how == "deleted":
            shutil.rmtree(folder)
        else:  # a backup restored over it: another file under the same name
            (folder / "c.db").unlink()
            shutil.copyfile(backup, folder / "c.db")

    after_first_batch(monkeypatch, vanish)
    with Catalog(folder / "c.db") as catalog:
        summary = process(catalog, options(tmp_path))
        assert catalog.gone is not None
        with pytest.raises(CatalogGoneError), catalog.session():
            pass
    outcomes = [x.outcome for x in summary.lights]
    assert outcomes.count("calibrated") >= 1
    failed = summary.of("failed")
    assert len(failed) == LIGHTS - outcomes.count("calibrated") >= 1
    reason = (
        f"not recorded: the catalog {folder / 'c.db'} was deleted or replaced while this command was "
        "working: what it did from then on is not recorded; restore the catalog, then run the command again"
    )
    assert {x.reason for x in failed} == {reason}
    assert summary.exit_code == 1
    for light in failed:
        assert light.output is not None
        assert not Path(light.output).exists()  # never renamed: nothing claims to be recorded
    assert temporaries(tmp_path / "calibrated", tmp_path / "masters") == []


def test_the_command_line_says_so_and_exits_1(
    night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project(night, tmp_path)
    after_first_batch(monkeypatch, lambda: shutil.rmtree(folder))
    args = ["--db", str(folder / "c.db"), "process", "--jobs", "1"]
    args += ["--masters-dir", str(tmp_path / "masters"), "--output-dir", str(tmp_path / "calibrated")]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Failed (")
    assert all("not recorded: the catalog" in line for line in lines[1:])
    assert "Traceback" not in result.output


def test_a_session_on_a_catalog_gone_is_refused(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as catalog:
        with catalog.session():
            pass
        (tmp_path / "c.db").unlink()
        with (
            pytest.raises(CatalogGoneError, match=r"was deleted or replaced while this command was working"),
            catalog.session(),
        ):
            pass
