"""Reliability test helpers: ``ccdcal`` in subprocesses, and what a run left in the catalog and folders.

The subprocesses are ``python -m ccdcal`` of this checkout (:data:`CCDCAL`, :func:`environment`), each in a
session of its own, so that a test can kill it with its worker processes (a machine dying), or interrupt it
as Ctrl-C in a terminal would.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.files.fitsio import TEMP_PREFIX, sha256_file
from ccdcal.files.ownership import MARKER

#: The root of this checkout: the folder of the ``ccdcal`` package the tests import.
ROOT = Path(__file__).resolve().parents[2]
#: The command: ``python -m ccdcal``, run with :func:`environment` (not the venv's console script, which
#: imports the package the venv was installed from, perhaps another checkout).
CCDCAL = [sys.executable, "-m", "ccdcal"]


def copy_catalog(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite catalog (WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def ingested_night(base: Path, seed: int, lights: int, shape: tuple[int, int] = (48, 64)) -> Path:
    """A simulated night in ``base/raw`` (3 bias, 3 darks and 3 flats a kind, ``lights`` lights),
    ingested into ``base/template.db``; returns ``base``."""
    from ccdcal.ingestion.core import ingest
    from ccdcal.simulate import simulate_night

    raw = simulate_night(base / "raw", seed=seed, shape=shape, n_bias=3, n_dark=3, n_flat=3, n_light=lights)
    with Catalog(base / "template.db") as catalog:
        ingest(catalog, [raw.root], jobs=1)
    return base


def trial(night: Path, name: str) -> Path:
    """A folder ``night/name`` with a copy of the night's ingested catalog as ``c.db``."""
    folder = night / name
    folder.mkdir()
    copy_catalog(night / "template.db", folder / "c.db")
    return folder


def environment(**env: str) -> dict[str, str]:
    """The environment of a ``ccdcal`` subprocess: this one's with ``env``, and this checkout's root first
    on ``PYTHONPATH``, so that the subprocess runs the code under test."""
    merged = {**os.environ, **env}
    paths = [str(ROOT), *(p for p in merged.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**merged, "PYTHONPATH": os.pathsep.join(paths)}


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    """Start ``ccdcal ARGS`` in ``cwd``, in a new session (its own process group)."""
    return subprocess.Popen(
        [*CCDCAL, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=environment(**env),
    )


def runs_started(db: Path, command: str) -> int:
    """How many ``runs`` rows of ``command`` the SQLite catalog holds (0 while it cannot be read)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT count(*) FROM runs WHERE command = ?", (command,)).fetchone()[0])
    except sqlite3.Error:  # not migrated yet
        return 0
    finally:
        conn.close()


def wait_for_run(process: subprocess.Popen[str], db: Path, command: str, before: int = 0) -> float:
    """Wait until ``process`` has recorded its run (its work begins); return that moment (monotonic)."""
    deadline = time.monotonic() + 120
    while runs_started(db, command) <= before:
        if process.poll() is not None:
            raise AssertionError(f"ccdcal ended before its run began: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("ccdcal did not start its run in 120 s")
        time.sleep(0.01)
    return time.monotonic()


def last_status(db: Path, command: str) -> str | None:
    """The status of the newest ``runs`` row of ``command`` (``None`` while there is none)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT status FROM runs WHERE command = ? ORDER BY id DESC LIMIT 1", (command,)
        ).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def work_seconds(process: subprocess.Popen[str], db: Path, command: str, before: int = 0) -> float:
    """Let ``process`` run to its end; return how long its run worked (from its row to its status)."""
    begun = wait_for_run(process, db, command, before)
    while last_status(db, command) == "running":
        time.sleep(0.005)
    seconds = time.monotonic() - begun
    _out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return seconds


def kill_group(process: subprocess.Popen[str], sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to the process and its workers; return its exit status once it ends."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    process.communicate(timeout=120)
    return process.returncode


def temporaries(*folders: Path) -> list[Path]:
    """Temporary files left in the folders."""
    return [
        p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)
    ]


def assert_complete_files(*folders: Path) -> int:
    """Every file under a final name in the folders is a whole FITS file (checksums verified)."""
    count = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(TEMP_PREFIX) or path.name == MARKER:
                continue
            assert path.stat().st_size % 2880 == 0, f"partial file {path}"
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with fits.open(path, checksum=True, memmap=False) as hdul:
                    for hdu in hdul:
                        assert hdu.data is not None
            count += 1
    return count


_SHA = re.compile(r"\b[0-9a-f]{64}\b")


def content(path: Path) -> tuple[Any, ...]:
    """A FITS file's headers and pixels, without what differs from one run to the next: the
    CHECKSUM/DATASUM cards (astropy dates their comment) and the sha256 of masters named in HISTORY (each
    master's file differs by that date)."""
    parts: list[Any] = []
    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            cards = [
                (card.keyword, _SHA.sub("<sha256>", str(card.value)), card.comment)
                for card in hdu.header.cards
                if card.keyword not in ("CHECKSUM", "DATASUM")
            ]
            data = np.ascontiguousarray(hdu.data)
            parts.append(
                (tuple(cards), data.dtype.str, data.shape, hashlib.sha256(data.tobytes()).hexdigest())
            )
    return tuple(parts)


@dataclass
class State:
    """What a process run left: current masters and calibrations (paths relative to the run's folder)."""

    masters: dict[str, tuple[Any, ...]]
    calibrations: dict[str, tuple[str, dict[str, str]]]
    outputs: dict[str, tuple[Any, ...]]
    current_per_light: dict[str, int]


def state(db: Path | str, folder: Path) -> State:
    """The current masters and calibrations of a catalog, with their files' content; checks that every
    current row's file has the sha256 the row records."""
    base = folder.resolve()
    with Catalog(db) as catalog, catalog.session() as session:
        masters = {}
        names = {}
        for master in session.scalars(select(Master).where(Master.status == "current")):
            path = Path(master.path)
            assert sha256_file(path) == master.sha256, f"{path} differs from its row"
            masters[str(path.relative_to(base))] = content(path)
            names[master.id] = str(path.relative_to(base))
        calibrations = {}
        outputs = {}
        rows = session.execute(
            select(Calibration, Frame.path)
            .join(Frame, Frame.id == Calibration.frame_id)
            .where(Calibration.status == "current")
        )
        for calibration, raw in rows:
            assert calibration.path is not None
            path = Path(calibration.path)
            assert sha256_file(path) == calibration.sha256, f"{path} differs from its row"
            links = session.scalars(
                select(CalibrationMaster).where(CalibrationMaster.calibration_id == calibration.id)
            )
            relative = str(path.relative_to(base))
            calibrations[raw] = (relative, {link.role: names[link.master_id] for link in links})
            outputs[relative] = content(path)
        per_light = dict(
            session.execute(
                select(Frame.path, func.count(Calibration.id))
                .join(Calibration, Calibration.frame_id == Frame.id)
                .where(Calibration.status == "current")
                .group_by(Frame.path)
            ).all()
        )
    return State(masters, calibrations, outputs, per_light)
