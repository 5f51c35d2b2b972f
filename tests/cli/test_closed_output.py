"""An output closed before the command wrote it all (``ccdcal status | head -2``) ends the command quietly
with exit status 141, as SIGPIPE ends a Unix tool; any other broken pipe is an error like any other."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccdcal.cli import app
from ccdcal.cli.base import EXIT_CLOSED_OUTPUT


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog of a few frames."""
    from ccdcal.simulate import simulate_night

    root = tmp_path_factory.mktemp("closed")
    simulate_night(root / "raw", seed=3, shape=(32, 40), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    db = root / "ccdcal.db"
    assert CliRunner().invoke(app, ["--db", str(db), "ingest", str(root / "raw")]).exit_code == 0
    return db


@pytest.fixture
def closed_pipe() -> Iterator[int]:
    """The writing end of a pipe whose reader has gone."""
    read, write = os.pipe()
    os.close(read)
    yield write
    os.close(write)


def ccdcal(*args: str, stdout: int, stderr: int, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ccdcal", *args], stdout=stdout, stderr=stderr, cwd=cwd, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ["status"],  # plain lines
        ["status", "--json"],  # through Rich
        ["masters", "--list"],
        ["ingest", "raw"],  # after the catalog was written
        ["--help"],  # the group's help
        ["status", "--help"],  # a command's
        ["--version"],
    ],
)
def test_a_closed_stdout_ends_the_command_quietly_with_141(
    catalog: Path, closed_pipe: int, args: list[str]
) -> None:
    done = ccdcal("--db", str(catalog), *args, stdout=closed_pipe, stderr=subprocess.PIPE, cwd=catalog.parent)
    assert (done.returncode, done.stderr) == (EXIT_CLOSED_OUTPUT, b"")
    assert EXIT_CLOSED_OUTPUT == 141


def test_an_error_keeps_its_exit_status_when_both_outputs_are_closed(catalog: Path, closed_pipe: int) -> None:
    done = ccdcal(
        "--db",
        str(catalog.parent / "none.db"),
        "status",
        stdout=closed_pipe,
        stderr=closed_pipe,
        cwd=catalog.parent,
    )
    assert done.returncode == 2


def test_the_error_is_still_said_when_only_stdout_is_closed(catalog: Path, closed_pipe: int) -> None:
    none = catalog.parent / "none.db"
    done = ccdcal("--db", str(none), "status", stdout=closed_pipe, stderr=subprocess.PIPE, cwd=catalog.parent)
    assert (done.returncode, done.stderr.decode()) == (
        2,
        f"Error: no catalog at {none}; check --db (or CCDCAL_DB) and the current folder, or run `ccdcal "
        "ingest` first to create one\n",
    )


def test_a_broken_pipe_that_is_not_the_output_is_an_error(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("ccdcal.status.catalog_status", broken)
    result = CliRunner().invoke(app, ["--db", str(catalog), "status"])
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        "Error: Broken pipe; check the file and its disk, then run the same command again\n",
    )


def test_a_pipe_read_to_the_end_is_exit_0(catalog: Path) -> None:
    done = ccdcal(
        "--db", str(catalog), "status", stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=catalog.parent
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode().startswith(f"Catalog {catalog}\n")
