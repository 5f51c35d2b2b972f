"""Random interrupts: a ``ccdcal`` command stopped by a signal at a random moment of its life, then checked.

One try (:func:`attempt`) takes a :class:`Case` — the command (``ingest``, ``masters``, ``process`` or
``run``), the catalog's backend, the signal (SIGINT or SIGTERM), where it goes (the main process only, or
its whole process group as a terminal's Ctrl-C sends it), the worker processes and the moment (a fraction
of the command's uninterrupted duration, from its start-up to its final catalog writes) — and:

1. prepares a trial folder: an empty catalog for ``ingest`` and ``run``, a copy of the ingested night's
   catalog for ``masters`` and ``process`` (a file for SQLite, a database made from a template for
   PostgreSQL);
2. starts the command in a session of its own, waits for the moment, sends the signal and measures the time
   from the signal to the exit (a command not ended :data:`HANG_AFTER` seconds after the signal is a hang:
   its threads' stacks are dumped to its stderr, then it is killed);
3. checks what it left: exit status 130 (SIGINT) or 143 (SIGTERM) with exactly the one-line message of
   :data:`MESSAGE` and nothing else on stderr — or 0 when the command finished first — within
   :data:`EXIT_BOUND` seconds, with its worker processes gone; no ``runs`` row of its pid left
   ``running``; no ``claims`` row; only whole files under final names;
4. runs the same command again to completion and compares the catalog and the files with those of an
   uninterrupted run (:class:`Snapshot`); no temporary file may be left then.

:class:`Bench` holds the night (raw frames, the ingested template catalogs) and the uninterrupted
references; :func:`summary` tabulates many tries.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

import ccdcal
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, HeaderCard
from ccdcal.files.fitsio import TEMP_PREFIX
from tests.robustness.cli_runs import (
    CCDCAL,
    State,
    assert_complete_files,
    copy_catalog,
    environment,
    ingested_night,
    state,
)

COMMANDS = ("ingest", "masters", "process", "run")
BACKENDS = ("sqlite", "postgresql")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The exit status of a command stopped by each signal (128 + its number, as a shell reports it).
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
#: The whole of stderr of a command stopped by each signal.
MESSAGE = {
    signal.SIGINT: "Interrupted: what was finished is kept; run the same command again to resume.\n",
    signal.SIGTERM: "Terminated: what was finished is kept; run the same command again to resume.\n",
}
#: Longest time allowed from the signal to the exit (ccdcal's and its workers'), in seconds: the issue asks
#: for a second or two; this leaves room for a loaded machine of two cores.
EXIT_BOUND = 3.0
#: A command not ended this long after the signal hangs: its stacks are dumped, then it is killed.
HANG_AFTER = 20.0
#: The latest moment of a signal, as a fraction of the command's uninterrupted duration: a few tries land
#: after the end (the command finished first), so that the final writes are hit too.
LATEST = 1.1
#: How long an uninterrupted command may take (the reference, the run after the interrupted one).
RUN_TIMEOUT = 300.0
#: The lights of the simulated night; its frames' shape.
LIGHTS = 8
SHAPE = (48, 64)
#: What Python prints when a Ctrl-C lands while it imports its ``site`` module, before any of ccdcal's code.
PYTHON_START_UP_FAILED = "Fatal Python error: init_import_site"
#: A frame of a Python traceback: its file and function.
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)', re.MULTILINE)
#: The package's folder: a frame in a file under it is ccdcal's code.
_PACKAGE = Path(ccdcal.__file__).parent
#: How a try ended (:attr:`Outcome.kind`); "start-up" and "at exit" pass when the rest holds.
KINDS = {
    "interrupted": "the signal's exit status (130 or 143)",
    "finished": "exit 0: the command ended before the signal, or before handling it",
    "start-up": "ended by the signal's default action before its run began (no handler of ccdcal's yet), or "
    "in Python's own start-up",
    "at exit": "ended by the signal's default action after its runs ended (in the interpreter's shutdown)",
    "killed": "ended by the signal's default action while its run was running",
    "hang": f"still running {HANG_AFTER:.0f} s after the signal (killed)",
    "wrong exit": "any other exit status",
}
#: Makes a ccdcal subprocess dump its threads' stacks to its stderr on SIGUSR1 (for a hang's report).
_SITECUSTOMIZE = "import faulthandler, signal\nfaulthandler.register(signal.SIGUSR1, all_threads=True)\n"


@dataclass(frozen=True)
class Case:
    """One try: what runs, on which catalog, which signal goes where, and when."""

    seed: int
    number: int
    command: str
    backend: str
    signum: int
    group: bool
    jobs: int
    at: float  # the moment of the signal, as a fraction of the command's uninterrupted duration

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def target(self) -> str:
        return "group" if self.group else "main"

    @property
    def name(self) -> str:
        """A short id (the test id of a try)."""
        return (
            f"{self.backend}-{self.command}-{self.signal_name}-{self.target}-j{self.jobs}-{self.number:03d}"
        )

    def __str__(self) -> str:
        to = "its process group" if self.group else "ccdcal only"
        return (
            f"try {self.number} of seed {self.seed}: {self.command} --jobs {self.jobs} on {self.backend}, "
            f"{self.signal_name} to {to} at {self.at:.3f} of its duration"
        )


def cases(
    seed: int,
    count: int,
    backends: Sequence[str] = BACKENDS,
    commands: Sequence[str] = COMMANDS,
    signals: Sequence[int] = SIGNALS,
    moments: tuple[float, float] = (0.0, LATEST),
) -> list[Case]:
    """``count`` tries drawn from ``seed``: every combination of command, backend, signal and target in
    turn (each round in a shuffled order), with random workers (1 or 2) and moment (uniform in
    ``moments``)."""
    rng = random.Random(seed)
    combinations = list(product(commands, backends, signals, (True, False)))
    drawn: list[Case] = []
    while len(drawn) < count:
        round_ = combinations[:]
        rng.shuffle(round_)
        for command, backend, signum, group in round_[: count - len(drawn)]:
            jobs = rng.choice((1, 2)) if command != "masters" else 1  # masters has no workers
            at = rng.uniform(*moments)
            drawn.append(Case(seed, len(drawn), command, backend, int(signum), group, jobs, at))
    return drawn


# -- what a catalog holds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What a command left: the frames catalogued (with their header cards counted) and the current
    masters and calibrations with their files (:func:`tests.robustness.cli_runs.state`)."""

    frames: dict[str, tuple[Any, ...]]
    state: State

    def differences(self, other: Snapshot) -> list[str]:
        """How this snapshot differs from ``other`` (the reference), in a few words each."""
        found = []
        for name, mine, theirs in (
            ("frames", self.frames, other.frames),
            ("masters", self.state.masters, other.state.masters),
            ("calibrations", self.state.calibrations, other.state.calibrations),
            ("outputs", self.state.outputs, other.state.outputs),
            ("current per light", self.state.current_per_light, other.state.current_per_light),
        ):
            if mine == theirs:
                continue
            missing = sorted(set(theirs) - set(mine))
            extra = sorted(set(mine) - set(theirs))
            changed = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
            found.append(
                f"{name}: {len(missing)} missing {missing[:2]}, {len(extra)} extra {extra[:2]}, "
                f"{len(changed)} differ {changed[:2]}"
            )
        return found


def snapshot(db: str, folder: Path) -> Snapshot:
    """The :class:`Snapshot` of the catalog ``db`` whose files are under ``folder``."""
    with Catalog(db) as catalog, catalog.session() as session:
        cards = dict(
            session.execute(select(HeaderCard.frame_id, func.count()).group_by(HeaderCard.frame_id)).all()
        )
        frames = {
            f.path: (f.sha256, f.status, f.imagetyp, f.exptime, f.filter, f.is_bad, cards.get(f.id))
            for f in session.scalars(select(Frame))
        }
    return Snapshot(frames, state(db, folder))


@dataclass(frozen=True)
class Left:
    """What an interrupted command left in its catalog: its ``runs`` rows (command and status), the
    ``claims`` rows, and how far the work had gone (frames, current masters, current calibrations)."""

    runs: list[tuple[str, str]]
    claims: int
    frames: int
    masters: int
    calibrations: int

    @property
    def running(self) -> list[str]:
        return [command for command, status in self.runs if status == "running"]

    @property
    def short(self) -> str:
        """How far the work had gone, in short: frames/masters/calibrations."""
        return f"{self.frames}f/{self.masters}m/{self.calibrations}c"

    def __str__(self) -> str:
        return (
            f"{self.frames} frames, {self.masters} masters, {self.calibrations} calibrations, "
            f"{self.claims} claims; runs of its pid {self.runs}"
        )


_LEFT_QUERIES = {
    "runs": "SELECT command, status FROM runs WHERE pid = :pid ORDER BY id",
    "claims": "SELECT count(*) FROM claims",
    "frames": "SELECT count(*) FROM frames",
    "masters": "SELECT count(*) FROM masters WHERE status = 'current'",
    "calibrations": "SELECT count(*) FROM calibrations WHERE status = 'current'",
}


def left_by(db: str, pid: int) -> Left:
    """What the command of process ``pid`` left in the catalog ``db`` (read with plain SQL: opening it
    with :class:`Catalog` could change it; a catalog or table not made yet counts as empty)."""
    found: dict[str, Any] = {"runs": [], "claims": 0, "frames": 0, "masters": 0, "calibrations": 0}
    if "://" not in db:
        path = Path(db)
        if not path.exists():
            return Left(**found)
        conn = sqlite3.connect(path, timeout=10)
        try:
            for key, query in _LEFT_QUERIES.items():
                with contextlib.suppress(sqlite3.OperationalError):  # no such table
                    rows = conn.execute(
                        query.replace(":pid", "?"), (pid,) if ":pid" in query else ()
                    ).fetchall()
                    found[key] = [tuple(r) for r in rows] if key == "runs" else int(rows[0][0])
        finally:
            conn.close()
        return Left(**found)
    engine = create_engine(db, poolclass=NullPool)
    try:
        for key, query in _LEFT_QUERIES.items():
            with engine.connect() as conn:
                try:
                    rows = conn.execute(text(query), {"pid": pid}).all()
                except DBAPIError:  # undefined table
                    continue
                found[key] = [tuple(r) for r in rows] if key == "runs" else int(rows[0][0])
    finally:
        engine.dispose()
    return Left(**found)


def temporaries_under(*folders: Path) -> list[Path]:
    """Every temporary file (``.ccdcal-tmp-*``, publication journals included) under the folders."""
    return sorted(p for folder in folders if folder.is_dir() for p in folder.rglob(f"{TEMP_PREFIX}*"))


# -- processes --------------------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of the process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: whether the group can be signalled at all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def end_group(pgid: int) -> None:
    """Kill what is left of the process group ``pgid`` (one of ours: a ccdcal and its workers)."""
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def wait_exit(process: subprocess.Popen[bytes], deadline: float) -> float | None:
    """Wait until ``process`` exits; return that moment (monotonic), ``None`` at the deadline."""
    while process.poll() is None:
        now = time.monotonic()
        if now >= deadline:
            return None
        time.sleep(min(0.002, deadline - now))
    return time.monotonic()


def wait_group(pgid: int, deadline: float) -> float | None:
    """Wait until no process of the group ``pgid`` is left; return that moment, ``None`` at the deadline."""
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
    return time.monotonic()


# -- the bench: the night, its catalogs and the references ------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run of one command: its wall time (start to exit) and what it left."""

    seconds: float
    snapshot: Snapshot


class PgServer:
    """Fresh PostgreSQL databases of one server, each dropped when done."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.engine: Engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def create(self, template: str | None = None) -> str:
        """A new database (a copy of ``template``'s when given); returns its URL."""
        name = f"ccdcal_intr_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.exec_driver_sql(
                f'CREATE DATABASE "{name}"'
                + (f' TEMPLATE "{make_url(template).database}"' if template else "")
            )
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def close(self) -> None:
        self.engine.dispose()


class Bench:
    """The night every try starts from: the raw frames, the catalog they were ingested into (SQLite, and
    on demand PostgreSQL), and each command's uninterrupted reference.

    Make it with :meth:`open` and close it (it owns PostgreSQL databases) with :meth:`close`.
    """

    def __init__(self, root: Path, seed: int, *, in_process: bool = False) -> None:
        self.root = root
        #: Whether the run after an interrupted one runs in this process (see :meth:`run_to_end`).
        self.in_process = in_process
        self.raw = root / "raw"
        self.template = root / "template.db"
        self.seed = seed
        self.references: dict[str, Reference] = {}
        self.pg: PgServer | None = None
        self.pg_template: str | None = None
        self.trials = root / "trials"
        self.trials.mkdir(exist_ok=True)
        probe = root / "probe"  # sitecustomize.py: stacks on SIGUSR1
        probe.mkdir(exist_ok=True)
        (probe / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        self.env = environment(PYTHONPATH=str(probe))

    @classmethod
    def open(
        cls,
        root: Path,
        seed: int = 17,
        commands: Iterable[str] = COMMANDS,
        *,
        lights: int = LIGHTS,
        in_process: bool = False,
    ) -> Bench:
        """The night of ``seed`` in ``root`` (``lights`` lights), ingested, with the uninterrupted references
        of ``commands`` (run as subprocesses on SQLite: their wall time gives the moments of the signals)."""
        ingested_night(root, seed=seed, lights=lights, shape=SHAPE)
        bench = cls(root, seed, in_process=in_process)
        for command in commands:
            bench.references[command] = bench.reference(command)
        return bench

    def use_postgresql(self, admin_url: str) -> None:
        """Run the PostgreSQL tries on this server (``admin_url`` may create databases): the night's
        catalog is ingested into a template database, copied for each try."""
        from ccdcal.ingestion.core import ingest

        self.pg = PgServer(admin_url)
        self.pg_template = self.pg.create()
        with Catalog(self.pg_template) as catalog:
            ingest(catalog, [self.raw], jobs=1)

    def close(self) -> None:
        if self.pg is not None:
            if self.pg_template is not None:
                self.pg.drop(self.pg_template)
            self.pg.close()

    def reference(self, command: str) -> Reference:
        """Run ``command`` uninterrupted (SQLite, 2 workers); its wall time and what it left."""
        folder = self.trials / f"reference-{command}"
        folder.mkdir()
        db = self.catalog_for(command, "sqlite", folder)
        args = self.arguments(command, db, folder, jobs=2)
        begun = time.monotonic()
        done = subprocess.run(
            [*CCDCAL, *args], cwd=folder, capture_output=True, text=True, env=self.env, timeout=RUN_TIMEOUT
        )
        seconds = time.monotonic() - begun
        assert (done.returncode, done.stderr) == (0, ""), f"{command} failed uninterrupted: {done.stderr}"
        return Reference(seconds, snapshot(db, folder))

    def catalog_for(self, command: str, backend: str, folder: Path) -> str:
        """The catalog a try of ``command`` starts from (``--db``): empty for ``ingest`` and ``run``, the
        ingested night for the others."""
        ingested = command not in ("ingest", "run")
        if backend == "sqlite":
            if ingested:
                copy_catalog(self.template, folder / "c.db")
            return str(folder / "c.db")
        assert self.pg is not None, "use_postgresql first"
        return self.pg.create(self.pg_template if ingested else None)

    def arguments(self, command: str, db: str, folder: Path, jobs: int) -> list[str]:
        """The command line (after ``ccdcal``) of ``command`` in ``folder``, with absolute paths (the same
        in a subprocess and in this process); writes ``run``'s config."""
        masters, calibrated = str(folder / "masters"), str(folder / "calibrated")
        if command == "ingest":
            return ["--db", db, "ingest", "--jobs", str(jobs), str(self.raw)]
        if command == "masters":
            return ["--db", db, "masters", "--masters-dir", masters]
        if command == "process":
            return [
                "--db",
                db,
                "process",
                "--masters-dir",
                masters,
                "--output-dir",
                calibrated,
                "--jobs",
                str(jobs),
            ]
        assert command == "run", command
        config = folder / "config.ini"
        config.write_text(
            f"[GENERAL]\njobs = {jobs}\n\n[MASTERS]\nraw_root = {self.raw}\nmaster_output = {masters}\n\n"
            f"[CALIBRATION]\noutput_dir = {calibrated}\n"
        )
        return ["--db", db, "run", str(config)]

    def run_to_end(self, args: list[str], folder: Path) -> tuple[int | None, str]:
        """Run ``ccdcal ARGS`` uninterrupted; return its exit status and stderr. In this process (its
        command-line app, quicker: no start-up) when :attr:`in_process`, else in a subprocess."""
        if self.in_process:
            from typer.testing import CliRunner

            from ccdcal.cli import app

            result = CliRunner().invoke(app, args)
            return result.exit_code, result.stderr
        again = subprocess.Popen(
            [*CCDCAL, *args],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=self.env,
        )
        try:
            _out, err = again.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            end_group(again.pid)
            _out, err = again.communicate()
            return None, f"{err}\n(still running after {RUN_TIMEOUT:.0f} s: killed)"
        finally:
            end_group(again.pid)
        return again.returncode, err

    def discard(self, backend: str, db: str) -> None:
        if backend == "postgresql" and self.pg is not None:
            self.pg.drop(db)


# -- one try -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one try went."""

    case: Case
    delay: float  # seconds from the start to the signal (the moment aimed at)
    kind: str = ""  # one of KINDS
    status: int | None = None
    seconds: float | None = None  # from the signal to the exit of ccdcal and its workers
    stderr: str = ""
    left: Left | None = None
    temporaries: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        """The try and what failed, for an assertion message (the seed reproduces it)."""
        took = f"{self.seconds:.3f} s after the signal" if self.seconds is not None else "no signal sent"
        lines = [
            f"{self.case}",
            f"  signal {self.delay:.3f} s after the start; {self.kind}: exit {self.status}, {took}",
            f"  left: {self.left or '?'}; {self.temporaries} temporary files",
            *(f"  FAILED: {failure}" for failure in self.failures),
        ]
        if self.stderr and self.stderr not in MESSAGE.values():  # a hang's stacks, else the end of stderr
            shown = self.stderr.strip().splitlines()
            stacks = [i for i, line in enumerate(shown) if line.startswith(("Thread 0x", "Current thread"))]
            shown = shown[stacks[0] : stacks[0] + 60] if stacks else shown[-30:]
            lines += ["  stderr:", *(f"    {line}" for line in shown)]
        return "\n".join(lines)


def attempt(case: Case, bench: Bench) -> Outcome:
    """Run one try (see the module's description) and return how it went; the trial folder is removed
    when the try passed."""
    folder = bench.trials / case.name
    folder.mkdir()
    db = bench.catalog_for(case.command, case.backend, folder)
    try:
        outcome = _attempt(case, bench, folder, db)
    finally:
        bench.discard(case.backend, db)
    if outcome.ok:
        shutil.rmtree(folder, ignore_errors=True)
    return outcome


def _attempt(case: Case, bench: Bench, folder: Path, db: str) -> Outcome:
    args = bench.arguments(case.command, db, folder, case.jobs)
    delay = case.at * bench.references[case.command].seconds
    outcome = Outcome(case, delay)
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        process = subprocess.Popen(
            [*CCDCAL, *args], cwd=folder, stdout=out, stderr=err, start_new_session=True, env=bench.env
        )
    try:
        signalled = _signal_at(process, case, time.monotonic() + delay)
        if signalled is not None:
            _measure_exit(process, outcome, signalled)
    finally:
        end_group(process.pid)
        process.wait()
    outcome.status = process.returncode
    outcome.stderr = (folder / "stderr.txt").read_text(errors="replace")
    _judge_exit(outcome, signalled is not None)
    _check_left(outcome, db, folder, process.pid)
    _run_again(outcome, bench, args, db, folder)
    return outcome


def _signal_at(process: subprocess.Popen[bytes], case: Case, moment: float) -> float | None:
    """Send the case's signal at ``moment`` (monotonic) unless the command ended first; return when it
    was sent."""
    while process.poll() is None:
        now = time.monotonic()
        if now < moment:
            time.sleep(min(0.002, moment - now))
            continue
        sent = time.monotonic()
        try:
            if case.group:
                os.killpg(process.pid, case.signum)
            else:
                os.kill(process.pid, case.signum)
        except ProcessLookupError:
            return None
        return sent
    return None


def _measure_exit(process: subprocess.Popen[bytes], outcome: Outcome, sent: float) -> None:
    """Wait for the exit of ccdcal then of its workers; a hang has its stacks dumped, then is killed."""
    ended = wait_exit(process, sent + HANG_AFTER)
    if ended is None:
        outcome.kind = "hang"
        outcome.failures.append(f"hang: still running {HANG_AFTER:.0f} s after the signal (killed)")
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGUSR1)  # its stacks, to its stderr
        time.sleep(0.5)
        return
    gone = wait_group(process.pid, max(ended, sent + EXIT_BOUND) + 2.0)
    if gone is None:
        outcome.failures.append(
            f"worker processes still alive {time.monotonic() - ended:.1f} s after ccdcal's exit"
        )
        gone = time.monotonic()
    outcome.seconds = gone - sent
    if outcome.seconds > EXIT_BOUND:
        outcome.failures.append(f"exit took {outcome.seconds:.2f} s after the signal (bound {EXIT_BOUND} s)")


def in_python_start_up(status: int | None, stderr: str) -> bool:
    """Whether a command's exit is Python's own, for a Ctrl-C landing in its start-up before any of
    ccdcal's code could handle it: in the ``site`` module and the ``.pth`` files it runs (exit 1), or in
    ``runpy`` importing the package's ``__init__`` for ``python -m`` (SIGINT's default action, -2, with
    Python's traceback). ``ccdcal.__main__`` handles one landing later."""
    if stderr.startswith(PYTHON_START_UP_FAILED):
        return True
    if status not in (1, -signal.SIGINT) or stderr.rstrip().rpartition("\n")[2].strip(": ") != (
        "KeyboardInterrupt"
    ):
        return False
    frames = _FRAME.findall(stderr)
    package_top = (str(_PACKAGE / "__init__.py"), "<module>")  # run by Python before ccdcal.__main__
    return bool(frames) and all(
        not Path(file).is_relative_to(_PACKAGE) or (file, name) == package_top for file, name in frames
    )


def _judge_exit(outcome: Outcome, signalled: bool) -> None:
    """The exit status and stderr: the signal's, or a finished command's."""
    if outcome.kind == "hang":
        return
    case, status, stderr = outcome.case, outcome.status, outcome.stderr
    if status == 0:
        outcome.kind = "finished"
        if stderr:
            outcome.failures.append(f"finished with a message: {stderr[-300:]!r}")
    elif status == EXIT_STATUS[case.signum] and signalled:
        outcome.kind = "interrupted"
        if stderr != MESSAGE[case.signum]:
            outcome.failures.append(f"wrong message: {stderr[-300:]!r}")
    elif signalled and ((status == -case.signum and stderr == "") or in_python_start_up(status, stderr)):
        outcome.kind = "default action"  # start-up or at exit, as what it left shows (_check_left)
    else:
        outcome.kind = "wrong exit"
        expected = EXIT_STATUS[case.signum]
        outcome.failures.append(f"exit status {status} (expected {expected}, or 0 had it finished first)")
        if "Traceback" in stderr:
            outcome.failures.append("a traceback on stderr")


def _check_left(outcome: Outcome, db: str, folder: Path, pid: int) -> None:
    """The catalog and the folders after the interrupted command."""
    left = outcome.left = left_by(db, pid)
    if left.running:
        outcome.failures.append(f"runs left running: {', '.join(left.running)}")
    if left.claims:
        outcome.failures.append(f"claims held: {left.claims}")
    if outcome.kind == "default action":
        if not left.runs:
            outcome.kind = "start-up"
        elif not left.running:
            outcome.kind = "at exit"
        else:
            outcome.kind = "killed"
            outcome.failures.append(
                f"killed by {outcome.case.signal_name} (status {outcome.status}, no message) while its run "
                "was running"
            )
    # Stopped, its runs end interrupted — or ok, when the signal landed after a run had ended (between
    # the ingest and the process of `run`, or while the summary was printed).
    if outcome.kind == "interrupted" and any(status not in ("interrupted", "ok") for _, status in left.runs):
        outcome.failures.append(f"a run neither ok nor marked interrupted: {left.runs}")
    outcome.temporaries = len(temporaries_under(folder))
    try:
        assert_complete_files(folder / "masters", folder / "calibrated")
    except Exception as exc:  # AssertionError, or a FITS file astropy cannot read
        outcome.failures.append(f"an incomplete file under a final name: {exc}")


def _run_again(outcome: Outcome, bench: Bench, args: list[str], db: str, folder: Path) -> None:
    """The same command again, to its end (unless it had finished): it must leave what an uninterrupted
    run leaves, and no temporary file."""
    if outcome.kind != "finished":
        status, err = bench.run_to_end(args, folder)
        if status != 0 or err:
            outcome.failures.append(f"the next run: exit {status}, stderr {err.strip()[-300:]!r}")
            return
    left = temporaries_under(folder)
    if left:
        outcome.failures.append(f"temporary files after the next run: {[p.name for p in left]}")
    try:
        differences = snapshot(db, folder).differences(bench.references[outcome.case.command].snapshot)
    except AssertionError as exc:  # a current row whose file differs
        differences = [str(exc)]
    outcome.failures.extend(f"after the next run, {d}" for d in differences)


# -- many tries -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def table(
    outcomes: Sequence[Outcome], labels: Sequence[str], key: Callable[[Case], Sequence[str]]
) -> list[str]:
    """The lines of a table of the tries grouped by ``key`` (columns ``labels``): how many, how they
    ended (:data:`KINDS`), how many failed, and the exit times (signal to exit) median, 95th percentile and
    maximum."""

    def row(label: Sequence[str], group: Sequence[Outcome]) -> list[str]:
        times = [o.seconds for o in group if o.seconds is not None]
        kinds = Counter(o.kind for o in group)
        stats = (
            [f"{statistics.median(times):.3f}", f"{percentile(times, 0.95):.3f}", f"{max(times):.3f}"]
            if times
            else ["-", "-", "-"]
        )
        return [
            *label,
            str(len(group)),
            *(str(kinds[k]) for k in KINDS),
            str(sum(not o.ok for o in group)),
            *stats,
        ]

    header = [*labels, "tries", *KINDS, "failed", "median s", "p95 s", "max s"]
    keyed: dict[tuple[str, ...], list[Outcome]] = {}
    for outcome in outcomes:
        keyed.setdefault(tuple(key(outcome.case)), []).append(outcome)
    total = row(["all", *([""] * (len(labels) - 1))], outcomes)
    rows = [header, *(row(k, keyed[k]) for k in sorted(keyed)), total]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < len(labels) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    rule = "-" * len(lines[0])
    return [lines[0], rule, *lines[1:-1], rule, lines[-1]]


def summary(outcomes: Sequence[Outcome], wall: float | None = None) -> str:
    """The tries in two tables — by command, signal and backend; by signal, target and workers — then the
    failures counted by reason, and every failed try."""
    lines = table(outcomes, ("command", "signal", "backend"), lambda c: (c.command, c.signal_name, c.backend))
    lines += [
        "",
        *table(outcomes, ("signal", "to", "jobs"), lambda c: (c.signal_name, c.target, str(c.jobs))),
    ]
    times = [o.seconds for o in outcomes if o.seconds is not None]
    lines.append(
        f"{len(outcomes)} tries"
        + (f" in {wall:.0f} s" if wall is not None else "")
        + f"; {len(times)} signalled "
        f"(exit times from the signal to the exit of ccdcal and its workers); bound {EXIT_BOUND} s"
    )
    reasons = Counter(re.sub(r"\d+\.\d+", "#", f.split(":")[0]) for o in outcomes for f in o.failures)
    if reasons:
        lines.append("Failures by reason:")
        lines += [f"  {count:4d}  {reason}" for reason, count in reasons.most_common()]
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines.append("Failed tries:")
        lines += [o.report() for o in failed]
    return "\n".join(lines)
