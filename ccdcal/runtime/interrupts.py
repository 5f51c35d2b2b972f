"""Ctrl-C and SIGTERM: where they stop a command, and where they wait a moment.

A command stops on Ctrl-C (SIGINT; exit status 130) and on SIGTERM (what ``kill``, ``timeout`` and service
managers send; exit status 143) the same way: an exception is raised in the main thread —
:class:`KeyboardInterrupt`, or :class:`Terminated`, which is one — and every ``finally`` and ``except
KeyboardInterrupt`` on its way out does its part: the results already recorded stay, the run row becomes
``interrupted``, the claims are released, temporaries removed.

Where the exception is raised matters. The handlers the command line installs (:func:`handling_signals`)
follow three rules:

* **Never inside database code.** An interrupt that lands in the frames of SQLAlchemy or of a database
  driver is delivered again a few milliseconds later, until it lands in ccdcal's own code. Raised inside
  the pool or a transaction's bookkeeping, it could leave a connection checked out and inside its
  transaction, unknown to the session that would roll it back; on SQLite that connection keeps the write
  lock, and the cleanup's own transactions (the claims' release, the run row's end) then wait for it
  until the busy timeout, twice.
* **Never inside a shielded step** (:func:`shielded`: a commit, a rollback, an output renamed and recorded):
  raised when the step ends.
* **Never lost**: one raised inside a finalizer, where Python drops it, is delivered again
  (:func:`keep_interrupts`).

Waits for the catalog's write lock are taken in short steps (``ccdcal.catalog.engine``), so a signal is
handled within a tenth of a second even while another process holds the lock. Worker processes ignore
SIGINT (a terminal sends it to the whole process group): their coordinator stops the work.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: Exit statuses of a command stopped by SIGINT and by SIGTERM (128 + the signal's number).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM

#: Top-level packages whose frames an interrupt is never raised in (delivered again a moment later).
DATABASE_PACKAGES = frozenset({"sqlalchemy", "sqlite3", "psycopg", "psycopg_pool", "psycopg_c", "alembic"})
#: Seconds before an interrupt that landed in database code is delivered again.
REDELIVER_AFTER = 0.005


class Terminated(KeyboardInterrupt):
    """The command received SIGTERM: it stops as on Ctrl-C, with exit status 143."""


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


_installed = False
_shield_depth = 0
_held: int | None = None


def _deliver_later(signum: int) -> None:
    """Send ``signum`` to this process again after :data:`REDELIVER_AFTER` seconds."""
    timer = threading.Timer(REDELIVER_AFTER, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def in_database_code(frame: FrameType | None) -> bool:
    """Whether ``frame`` (the innermost frame the main thread runs) is in a database package."""
    if frame is None:
        return False
    module = frame.f_globals.get("__name__", "")
    return isinstance(module, str) and module.partition(".")[0] in DATABASE_PACKAGES


def _handler(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM while a command runs (:func:`handling_signals`)."""
    global _held
    if _shield_depth:
        if _held != signal.SIGTERM:  # SIGTERM, the stronger, is the one reported
            _held = signum
        return
    if in_database_code(frame):
        _deliver_later(signum)
        return
    raise _exception(signum)


@contextmanager
def handling_signals(*, keep: bool = False) -> Iterator[None]:
    """Install ccdcal's handlers of SIGINT and SIGTERM (the rules of this module) for the block.

    Parameters
    ----------
    keep : bool
        Leave them installed after the block, switched to ignoring both signals: the command has ended
        and its exit status is decided, so a signal landing while the process exits changes nothing (for
        the process of the ``ccdcal`` command; a test runner keeps its own handlers with ``False``).
    """
    global _installed
    if threading.current_thread() is not threading.main_thread() or _installed:
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, _handler)
    _installed = True
    keep_interrupts()
    try:
        yield
    finally:
        _installed = False
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if keep else handler)


def ignore_interrupts() -> None:
    """Ignore SIGINT in this (worker) process: its coordinator handles Ctrl-C.

    SIGTERM keeps its default action: the pool terminates its workers with it when it breaks.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def keep_interrupts() -> None:
    """Make a Ctrl-C that lands in a finalizer stop the command all the same.

    Python raises :class:`KeyboardInterrupt` wherever the main thread is; inside a finalizer or a weakref
    callback (SQLAlchemy has many) it prints "Exception ignored" and drops it, and the command goes on.
    With this hook the signal is sent again a moment later, once out of the finalizer, to be handled where
    it stops the command. Installed once per process.
    """
    previous = sys.unraisablehook
    if getattr(previous, "ccdcal", False):
        return

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):  # signalled again once out of here
            signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
            _deliver_later(signum)
            return
        previous(unraisable)

    hook.ccdcal = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _hold(signum: int, frame: FrameType | None) -> None:
    global _held
    if _held != signal.SIGTERM:
        _held = signum


def raise_held() -> None:
    """Raise, now, an interrupt a shielded step holds back — for a step that only waits (for a lock) and
    may stop at this point. Does nothing when none is held."""
    global _held
    held, _held = _held, None
    if held is not None:
        raise _exception(held)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the block runs; raise them when the block ends.

    For the few steps an interrupt must not cut in two — a catalog commit, rollback or session close,
    whose half-done state would keep the database locked; an output renamed and recorded. Only in the
    main thread, and only while SIGINT has ccdcal's handler (:func:`handling_signals`) or Python's
    default one (another handler, a test runner's, is left alone). When the block raised, its error
    propagates and the interrupt is delivered again right after, so it is never lost.
    """
    global _shield_depth, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _shield_depth == 0
    ours = signal.getsignal(signal.SIGINT) is _handler
    if outermost and not ours and signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    if outermost and not ours:
        signal.signal(signal.SIGINT, _hold)
    _shield_depth += 1
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        _shield_depth -= 1
        if outermost:
            if not ours:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            held, _held = _held, None
            if held is not None:
                if failed:
                    _deliver_later(held)
                else:
                    raise _exception(held)
