"""Where Ctrl-C and SIGTERM stop a command (ccdcal.runtime.interrupts): never inside database code, never
inside a shielded step, never lost; waits for the catalog's write lock broken off within moments."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.errors import CatalogError
from ccdcal.runtime.interrupts import Terminated, handling_signals, in_database_code, shielded


@pytest.fixture
def handlers() -> Iterator[None]:
    """ccdcal's handlers of SIGINT and SIGTERM, as the command line installs them; the test runner's
    after."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with handling_signals():
        yield
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def signal_in(seconds: float, signum: int) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


def module_function(module: str, source: str, name: str) -> Callable[..., object]:
    """A function defined in a module named ``module`` (as if it were that package's code)."""
    namespace: dict[str, object] = {"__name__": module, "time": time}
    exec(source, namespace)
    function = namespace[name]
    assert callable(function)
    return function


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)]
)
def test_a_signal_stops_the_command_with_its_exception(
    handlers: None, signum: int, raised: type[BaseException]
) -> None:
    signal_in(0.05, signum)
    started = time.monotonic()
    with pytest.raises(raised) as caught:
        time.sleep(5)
    assert time.monotonic() - started < 1
    assert isinstance(
        caught.value, KeyboardInterrupt
    )  # every `except KeyboardInterrupt` cleans up after both


def test_an_interrupt_in_database_code_is_raised_once_out_of_it(handlers: None) -> None:
    """Raised inside SQLAlchemy or a driver it could leave a connection inside its transaction, holding
    SQLite's write lock; it is delivered again until it lands in ccdcal's code."""
    steps: list[str] = []
    pool_work = module_function(
        "sqlalchemy.pool.fake",
        "def work(steps):\n    end = time.monotonic() + 0.3\n    while time.monotonic() < end:\n"
        "        time.sleep(0.001)\n    steps.append('done')\n",
        "work",
    )
    here = module_function(
        "sqlalchemy.pool.fake", "import sys\ndef here():\n    return sys._getframe()\n", "here"
    )
    assert in_database_code(here())  # type: ignore[arg-type]
    assert not in_database_code(sys._getframe())

    def ccdcal_step() -> None:
        pool_work(steps)
        steps.append("back in ccdcal")
        time.sleep(5)

    signal_in(0.05, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        ccdcal_step()
    assert steps == ["done", "back in ccdcal"]


def test_an_interrupt_in_a_shielded_step_waits_for_its_end_and_sigterm_wins(handlers: None) -> None:
    steps = []

    def commit() -> None:
        with shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.02)
            steps.append("committed")

    with pytest.raises(Terminated):
        commit()
    assert steps == ["committed"]


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection holding the SQLite catalog's write lock (as another program's transaction)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_waiting_for_the_write_lock_stops_on_sigterm_within_moments(handlers: None, tmp_path: Path) -> None:
    """SQLite's busy timeout waits in C, where no signal is handled: ccdcal waits in short attempts."""
    with Catalog(tmp_path / "c.db") as catalog:
        other = hold_write_lock(tmp_path / "c.db")
        try:
            signal_in(0.3, signal.SIGTERM)
            started = time.monotonic()
            with pytest.raises(Terminated), catalog.session() as session:
                session.execute(text("DELETE FROM claims"))
            assert time.monotonic() - started < 0.3 + 0.5
        finally:
            other.rollback()
            other.close()
        with catalog.session() as session:  # nothing left locked: the catalog writes at once
            session.execute(text("DELETE FROM claims"))


def test_a_stopping_commands_cleanup_waits_for_a_lock_only_briefly(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.db") as catalog:
        other = hold_write_lock(tmp_path / "c.db")
        try:
            started = time.monotonic()
            with pytest.raises(CatalogError, match="stayed locked"), catalog.session(patience=0.3) as session:
                session.execute(text("DELETE FROM claims"))
            assert 0.3 <= time.monotonic() - started < 1.3
        finally:
            other.rollback()
            other.close()


@pytest.mark.postgres
def test_a_stopping_commands_cleanup_waits_for_a_lock_only_briefly_on_postgresql(pg_url: str) -> None:
    from sqlalchemy.exc import DatabaseError

    with Catalog(pg_url) as catalog, catalog.session() as holder:
        lock_writers(holder)  # another run planning: holds the writers' advisory lock
        with Catalog(pg_url) as second:
            started = time.monotonic()
            with pytest.raises(DatabaseError, match="lock timeout"), second.session(patience=0.3) as session:
                lock_writers(session)
            assert time.monotonic() - started < 1.3


def test_ccdcal_code_called_by_database_code_is_database_code(handlers: None) -> None:
    """An event listener or the JSON serializer runs inside SQLAlchemy's call: an exception raised there
    unwinds through the pool, which takes it for a lost connection. The interrupt waits until the call
    returns."""
    steps: list[str] = []

    def listener() -> None:  # ccdcal's code, called from the driver's frames below
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            time.sleep(0.001)
        steps.append("listener done")

    driver = module_function("sqlalchemy.engine.fake", "def call(listener):\n    listener()\n", "call")

    def ccdcal_step() -> None:
        driver(listener)
        steps.append("back in ccdcal")
        time.sleep(5)

    signal_in(0.05, signal.SIGTERM)
    with pytest.raises(Terminated):
        ccdcal_step()
    assert steps == ["listener done", "back in ccdcal"]


def test_forked_workers_leave_signals_to_their_coordinator(handlers: None) -> None:
    """A process forked while ccdcal's handlers are installed ignores SIGINT and takes SIGTERM's default
    action from its first instruction (a pool's worker raising inside the pool's queues could lock them)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its handlers, then leave without running the test runner's exit
        os.write(write, f"{signal.getsignal(signal.SIGINT)}|{signal.getsignal(signal.SIGTERM)}".encode())
        os._exit(0)
    os.close(write)
    seen = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert seen == f"{signal.SIG_IGN}|{signal.SIG_DFL}"


ESCAPED = """
import sys
try:
    exec("raise KeyboardInterrupt")  # as a Ctrl-C landing in a dataclass's generated method
except KeyboardInterrupt:
    pass
{forget}
sys.exit(130)
"""


@pytest.mark.parametrize(("forget", "status"), [(False, -signal.SIGINT), (True, 130)])
def test_a_caught_interrupt_keeps_the_exit_status_the_command_chose(
    tmp_path: Path, forget: bool, status: int
) -> None:
    """Under ``python -m``, CPython ends by SIGINT (status -2) after a Ctrl-C escaped code compiled from a
    string, even though it was caught; forget_escaped_interrupt keeps the status chosen (130)."""
    call = "from ccdcal.runtime.interrupts import forget_escaped_interrupt; forget_escaped_interrupt()"
    (tmp_path / "escaped.py").write_text(ESCAPED.format(forget=call if forget else ""))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    done = subprocess.run([sys.executable, "-m", "escaped"], env=env, cwd=tmp_path, check=False)
    assert done.returncode == status


MAIN_INTERRUPTED = """
import sys
import ccdcal.cli

def interrupted_import(*args, **kwargs):
    raise KeyboardInterrupt

{how}
sys.argv = ["ccdcal", "--help"]  # (--version alone is answered before the command line loads)
from ccdcal.__main__ import main
main()
"""


#: How the import of the command line is interrupted: a Ctrl-C raised in it, or one raised in a weakref
#: callback while it imports (Python prints it as "Exception ignored" and drops it).
RAISED = """
del sys.modules["ccdcal.cli"]
import builtins
real = builtins.__import__
def imp(name, *args, **kwargs):
    if name == "ccdcal.cli":
        interrupted_import()
    return real(name, *args, **kwargs)
builtins.__import__ = imp
"""
DROPPED = """
import builtins, weakref
class Target:
    pass
target = Target()
ref = weakref.ref(target, lambda r: interrupted_import())
real = builtins.__import__
def imp(name, *args, **kwargs):
    global target
    if name == "ccdcal.cli":
        target = None
    return real(name, *args, **kwargs)
builtins.__import__ = imp
"""


@pytest.mark.parametrize("how", [RAISED, DROPPED], ids=["raised", "dropped"])
def test_a_ctrl_c_while_the_command_line_loads_is_one_line_and_130(tmp_path: Path, how: str) -> None:
    (tmp_path / "start.py").write_text(MAIN_INTERRUPTED.format(how=how))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    done = subprocess.run(
        [sys.executable, "-m", "start"], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        130,
        "",
        "Interrupted: what was finished is kept; run the same command again to resume.\n",
    )
