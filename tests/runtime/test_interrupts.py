"""Where Ctrl-C and SIGTERM stop a command (ccdcal.runtime.interrupts): never inside database code, never
inside a shielded step, never lost; waits for the catalog's write lock broken off within moments."""

from __future__ import annotations

import os
import signal
import sqlite3
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
