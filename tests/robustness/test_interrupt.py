"""Ctrl-C: an interrupted ``ccdcal process`` stops with a one-line message and exit status 130, leaves
nothing half done, and the next run resumes where it stopped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Claim
from ccdcal.files.fitsio import TEMP_PREFIX
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.runtime.interrupts import keep_interrupts, shielded
from tests.robustness.cli_runs import (
    State,
    assert_complete_files,
    ingested_night,
    start,
    state,
    temporaries,
    trial,
    wait_for_run,
)

ARGS = ["--db", "c.db", "process", "--masters-dir", "masters", "--output-dir", "calibrated"]
#: Runs started per case until one is interrupted while under way.
ATTEMPTS = 3
MESSAGE = "Interrupted: what was finished is kept; run the same command again to resume.\n"


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingested_night(tmp_path_factory.mktemp("interrupt"), seed=13, lights=24)


@pytest.fixture(scope="module")
def reference(night: Path) -> State:
    folder = trial(night, "reference")
    options = ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated", jobs=1)
    with Catalog(folder / "c.db") as catalog:
        assert process(catalog, options).exit_code == 0
    return state(folder / "c.db", folder)


def first_file(folder: Path, running: Any) -> bool:
    """Wait until a file appears under its final name in ``folder`` (the work is under way); ``False``
    when the run ended first."""
    deadline = time.monotonic() + 120
    while not (folder.is_dir() and any(not p.name.startswith(TEMP_PREFIX) for p in folder.iterdir())):
        if running.poll() is not None:
            return False
        assert time.monotonic() < deadline
        time.sleep(0.002)
    return True


@pytest.mark.parametrize(
    ("phase", "jobs", "whole_group", "signum"),
    [
        ("masters", "1", False, signal.SIGINT),
        ("calibrated", "1", True, signal.SIGINT),
        ("calibrated", "2", True, signal.SIGINT),
        ("calibrated", "2", False, signal.SIGTERM),
        ("masters", "1", True, signal.SIGTERM),
    ],
    ids=[
        "masters-signal-to-ccdcal",
        "lights-ctrl-c",
        "lights-ctrl-c-with-workers",
        "lights-sigterm-with-workers",
        "masters-sigterm-to-group",
    ],
)
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(
    night: Path, reference: State, phase: str, jobs: str, whole_group: bool, signum: int
) -> None:
    """SIGINT to ccdcal alone, or to its whole process group as a terminal's Ctrl-C does; SIGTERM (``kill``,
    ``timeout``, a service manager), which stops it the same way with exit status 143.

    The night is small: on a busy machine the run may end before the signal lands (the test process
    was not scheduled in time); that attempt is not a failure, and the test tries again.
    """
    for attempt in range(ATTEMPTS):
        folder = trial(night, f"{phase}-{jobs}-{whole_group}-{signum}-{attempt}")
        running = start([*ARGS, "--jobs", jobs], folder)
        wait_for_run(running, folder / "c.db", "process")
        if first_file(folder / phase, running):
            if whole_group:
                os.killpg(running.pid, signum)
            else:
                os.kill(running.pid, signum)
        out, err = running.communicate(timeout=120)
        if running.returncode != 0:
            break
        assert err == "", err  # finished before the signal: try again
    if signum == signal.SIGTERM:
        assert running.returncode == 143, (out, err)
        assert err == MESSAGE.replace("Interrupted", "Terminated")
    else:
        assert running.returncode == 130, (out, err)
        assert err == MESSAGE
    assert out == ""
    assert temporaries(folder / "masters", folder / "calibrated") == []
    assert_complete_files(folder / "masters", folder / "calibrated")
    with Catalog(folder / "c.db") as catalog:
        assert next(r.status for r in catalog.runs() if r.command == "process") == "interrupted"
        with catalog.session() as session:
            assert session.scalar(select(func.count()).select_from(Claim)) == 0
    partial = state(folder / "c.db", folder)  # every current row matches its file
    assert len(partial.calibrations) < len(reference.calibrations)

    if whole_group and jobs == "1":  # the next run, as a user would start it
        again = start([*ARGS, "--jobs", jobs], folder)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
        assert err == ""
        assert out.startswith("Process (run 3): masters ")
    else:  # the same, in this process (quicker)
        options = ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated", jobs=1)
        with Catalog(folder / "c.db") as catalog:
            assert process(catalog, options).exit_code == 0
    assert state(folder / "c.db", folder) == reference


def test_a_ctrl_c_dropped_in_a_finalizer_is_raised_again() -> None:
    """Python drops a KeyboardInterrupt raised in a finalizer ("Exception ignored in ..."); the command
    must stop all the same (ccdcal.runtime.owners.keep_interrupts, installed by the CLI)."""
    keep_interrupts()

    class Finalised:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    def drop_one_then_work() -> None:
        Finalised()  # its KeyboardInterrupt is raised in __del__, where Python would drop it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.001)

    with pytest.raises(KeyboardInterrupt):
        drop_one_then_work()


def test_a_ctrl_c_inside_a_shielded_step_is_raised_when_it_ends() -> None:
    """A catalog commit or rollback is never cut in two (ccdcal.runtime.owners.shielded, used by
    Catalog.session)."""
    steps = []

    def commit() -> None:
        with shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            steps.append("committed")

    with pytest.raises(KeyboardInterrupt):
        commit()
    assert steps == ["committed"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def failing() -> None:
        with shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            raise ValueError("the step's own error")

    caught = []

    def handled() -> None:
        try:
            failing()
        except ValueError as exc:
            caught.append(str(exc))
            time.sleep(1)

    with pytest.raises(KeyboardInterrupt):  # the step's error propagates; the Ctrl-C follows it, not lost
        handled()
    assert caught == ["the step's own error"]
