"""Crash safety: ``ccdcal process`` and ``ccdcal ingest`` killed (SIGKILL) at random points, then run again.

Each kill point starts from the same ingested night, runs the venv's ``ccdcal`` in a subprocess, kills it
(and its workers) a random time after its run began, checks that no file under a final name is partial,
then runs the command again: the masters, calibrations and catalog rows must equal those of an uninterrupted
run, no temporary file may survive, and every current row's file must have the sha256 the row records. The
delays are drawn from a seeded generator over the length of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, HeaderCard
from ccdcal.files.ownership import MARKER
from ccdcal.ingestion.core import KEYWORD_INDEX, ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from tests.robustness.cli_runs import (
    State,
    assert_complete_files,
    ingested_night,
    kill_group,
    start,
    state,
    temporaries,
    trial,
    wait_for_run,
    work_seconds,
)

SEED = 20261128
PROCESS_KILLS = 10
REDO_KILLS = 2
INGEST_KILLS = 10
FILES = 260
LIGHTS = 12
ARGS = ["--db", "c.db", "process", "--masters-dir", "masters", "--output-dir", "calibrated"]


@dataclass
class Reference:
    """An uninterrupted run: how long its work took, and what it left."""

    seconds: float
    state: State


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated night of 12 lights (48x64 pixels), ingested into ``template.db`` beside it."""
    return ingested_night(tmp_path_factory.mktemp("crash"), seed=11, lights=LIGHTS)


def options(folder: Path, **changes: Any) -> ProcessOptions:
    values: dict[str, Any] = {
        "masters_dir": folder / "masters",
        "output_dir": folder / "calibrated",
        "jobs": 1,
    }
    return ProcessOptions(**(values | changes))


@pytest.fixture(scope="module")
def reference(night: Path) -> Reference:
    """``ccdcal process`` uninterrupted, in a subprocess."""
    folder = trial(night, "reference")
    seconds = work_seconds(start([*ARGS, "--jobs", "1"], folder), folder / "c.db", "process")
    return Reference(seconds, state(folder / "c.db", folder))


def assert_recovered(folder: Path, expected: State) -> None:
    """The rerun's result: the reference's masters, calibrations and rows, nothing else in the folders."""
    masters, calibrated = folder / "masters", folder / "calibrated"
    assert temporaries(masters, calibrated) == []
    got = state(folder / "c.db", folder)
    assert got.masters == expected.masters
    assert got.calibrations == expected.calibrations
    assert got.outputs == expected.outputs
    assert got.current_per_light == expected.current_per_light
    assert set(got.current_per_light.values()) == {1}
    assert len(got.current_per_light) == LIGHTS
    assert {f"masters/{p.name}" for p in masters.iterdir() if p.name != MARKER} == set(got.masters)
    assert {f"calibrated/{p.name}" for p in calibrated.iterdir() if p.name != MARKER} == set(got.outputs)


def test_process_killed_at_random_points_then_rerun(night: Path, reference: Reference) -> None:
    """Kill points spread over the run's length; one that comes after the run ended (the machine is
    shared: runs vary in length) is tried again earlier, until 10 runs were killed while working."""
    rng = random.Random(SEED)
    fractions = [(point + rng.random()) / PROCESS_KILLS for point in range(PROCESS_KILLS)]
    window = reference.seconds

    def launch(attempt: int) -> tuple[Path, subprocess.Popen[str]]:
        folder = trial(night, f"kill-{attempt}")
        jobs = "2" if attempt % 3 == 2 else "1"  # some with worker processes, killed with it
        return folder, start([*ARGS, "--jobs", jobs], folder)

    points: list[tuple[float, int, str, int]] = []
    following = launch(0)
    for attempt in range(PROCESS_KILLS + 10):
        folder, running = following
        delay = fractions[sum(1 for p in points if p[2] == "running")] * window
        begun = wait_for_run(running, folder / "c.db", "process")
        time.sleep(max(0.0, begun + delay - time.monotonic()))
        status = kill_group(running)
        complete = assert_complete_files(folder / "masters", folder / "calibrated")
        with Catalog(folder / "c.db") as catalog:
            killed = next(run for run in catalog.runs() if run.command == "process")
        points.append((round(delay, 3), status, killed.status, complete))
        done = sum(1 for p in points if p[2] == "running") == PROCESS_KILLS
        if not done:  # starts while this one is checked
            following = launch(attempt + 1)
        if killed.status != "running":
            window *= 0.8
        with Catalog(folder / "c.db") as catalog:
            assert process(catalog, options(folder)).exit_code == 0
            after = {run.id: run.status for run in catalog.runs()}
        # A run killed while working is recorded as such by the rerun.
        assert after[killed.id] == ("died" if killed.status == "running" else killed.status)
        assert_recovered(folder, reference.state)
        if done:
            break
    print(f"process kill points (delay s, exit status, run status, whole files left): {points}")
    assert sum(1 for p in points if p[2] == "running") == PROCESS_KILLS


def test_process_killed_while_replacing_outputs_then_rerun(night: Path) -> None:
    """Killed while it supersedes calibrations (``--flat-min`` changed): files replaced but not yet
    registered are found by the rerun and written again."""
    expected_folder = trial(night, "redo-reference")
    with Catalog(expected_folder / "c.db") as catalog:
        process(catalog, options(expected_folder))
        started = time.monotonic()
        process(catalog, options(expected_folder, flat_min=0.3))
        seconds = time.monotonic() - started
    expected = state(expected_folder / "c.db", expected_folder)
    rng = random.Random(SEED + 1)
    for point in range(REDO_KILLS):
        folder = trial(night, f"redo-kill-{point}")
        with Catalog(folder / "c.db") as catalog:
            process(catalog, options(folder))
        running = start([*ARGS, "--jobs", "1", "--flat-min", "0.3"], folder)
        begun = wait_for_run(running, folder / "c.db", "process", before=1)
        time.sleep(max(0.0, begun + rng.uniform(0.0, seconds) - time.monotonic()))
        kill_group(running)
        assert_complete_files(folder / "masters", folder / "calibrated")
        with Catalog(folder / "c.db") as catalog:
            assert process(catalog, options(folder, flat_min=0.3)).exit_code == 0
        assert_recovered(folder, expected)


# -- ingest ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """260 small frames in typed folders: two write batches, read by worker processes."""
    root = tmp_path_factory.mktemp("ingest") / "raw"
    rng = np.random.default_rng(SEED)
    for index in range(FILES):
        kind = ("BIAS", "DARK", "FLAT", "LIGHT")[index % 4]
        header = fits.Header()
        header["IMAGETYP"] = kind
        header["EXPTIME"] = float(index % 7)
        header["DATE-OBS"] = f"2026-03-14T{index // 60:02d}:{index % 60:02d}:00"
        header["CCD-TEMP"] = -10.0 + index % 3 / 10
        data = rng.integers(0, 4000, size=(8, 8)).astype(np.uint16)
        path = root / kind / f"f{index:04d}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        fits.PrimaryHDU(data, header).writeto(path)
    return root


def catalogued(db: Path) -> dict[str, Any]:
    """Frames and their header cards, by path (ids differ from run to run)."""
    with Catalog(db) as catalog, catalog.session() as session:
        frames = {
            f.path: (f.sha256, f.size, f.mtime, f.status, f.imagetyp, f.exptime, f.ccd_temp, f.date_obs)
            for f in session.scalars(select(Frame))
        }
        cards: dict[str, Any] = {}
        rows = session.execute(
            select(Frame.path, HeaderCard.hdu, HeaderCard.position, HeaderCard.keyword, HeaderCard.value)
            .join(HeaderCard, HeaderCard.frame_id == Frame.id)
            .order_by(Frame.path, HeaderCard.hdu, HeaderCard.position)
        )
        for path, *card in rows:
            cards.setdefault(path, hashlib.sha256())
            cards[path].update(repr(card).encode())
        index = (
            session.connection()
            .exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?", (KEYWORD_INDEX,)
            )
            .scalar()
        )
        without_cards = session.scalar(
            select(func.count()).select_from(Frame).where(~Frame.id.in_(select(HeaderCard.frame_id)))
        )
    return {
        "frames": frames,
        "cards": {path: digest.hexdigest() for path, digest in cards.items()},
        "index": index,
        "without_cards": without_cards,
    }


def frames_written(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM frames").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_ingest_killed_at_random_points_then_rerun(tree: Path, tmp_path: Path) -> None:
    """Half the kill points at random times, half just after the first batch of frames is committed."""
    folder = tmp_path / "reference"
    folder.mkdir()
    seconds = work_seconds(start(["--db", "c.db", "ingest", str(tree)], folder), folder / "c.db", "ingest")
    expected = catalogued(folder / "c.db")
    assert len(expected["frames"]) == FILES
    assert expected["index"] == 1
    assert expected["without_cards"] == 0
    rng = random.Random(SEED + 2)

    def launch(point: int) -> tuple[Path, subprocess.Popen[str]]:
        folder = tmp_path / f"kill-{point}"
        folder.mkdir()
        return folder, start(["--db", "c.db", "ingest", str(tree)], folder)

    points = []
    following = launch(0)
    for point in range(INGEST_KILLS):
        folder, running = following
        db = folder / "c.db"
        begun = wait_for_run(running, db, "ingest")
        if point % 2:
            delay = (point + rng.random()) / INGEST_KILLS * seconds
            time.sleep(max(0.0, begun + delay - time.monotonic()))
        else:  # once the first batch is in
            while frames_written(db) == 0 and running.poll() is None:
                time.sleep(0.002)
            delay = time.monotonic() - begun
        status = kill_group(running)
        if point + 1 < INGEST_KILLS:
            following = launch(point + 1)
        after_kill = catalogued(db)
        assert after_kill["without_cards"] == 0  # a frame and its cards are written together
        points.append((round(delay, 3), status, len(after_kill["frames"])))
        with Catalog(db) as catalog:
            assert ingest(catalog, [tree]).exit_code == 0
            assert next(r.status for r in catalog.runs() if r.command == "ingest") == "ok"
        assert catalogued(db) == expected
    print(f"ingest kill points (delay s, exit status, frames catalogued when killed): {points}")
    assert sum(1 for p in points if 0 < p[2] < FILES) >= 1


def test_a_killed_ingest_after_dropping_the_keyword_index_gets_it_back(tree: Path, tmp_path: Path) -> None:
    """A large first load drops the keyword index and builds it at the end: killed in between, it is
    gone; the next ingest rebuilds it even with nothing to read."""
    with Catalog(tmp_path / "c.db") as catalog:
        ingest(catalog, [tree], jobs=1)
        with catalog.session() as session:
            session.connection().exec_driver_sql(f"DROP INDEX {KEYWORD_INDEX}")
        assert ingest(catalog, [tree], jobs=1).unchanged == FILES
    assert catalogued(tmp_path / "c.db")["index"] == 1
