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
_keep = False
_shield_depth = 0
_held: int | None = None
_deferred: int | None = None
_received: int | None = None


def settle() -> None:
    """The command has stopped and cleaned up: drop an interrupt waiting to be delivered again, and, in
    the ``ccdcal`` process (:func:`handling_signals` with ``keep``), ignore SIGINT and SIGTERM from now on,
    so that none lands while the process exits."""
    global _deferred, _held
    _deferred = _held = None
    if _keep and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        forget_escaped_interrupt()


def forget_escaped_interrupt() -> None:
    """Keep the exit status the command chose (130, 143) after a Ctrl-C it caught.

    CPython marks a :class:`KeyboardInterrupt` that escapes code compiled from a string — the methods
    :mod:`dataclasses` and :mod:`typing` make with ``exec`` and ``eval``, run while modules import — and,
    under ``python -m``, ends the process by SIGINT at exit when the mark is set, even when the
    interrupt was caught further out (status −2 instead of 130). Each evaluation of a string clears the
    mark first; evaluating a constant is the only way Python offers to clear it.
    """
    eval("None")  # a constant: clears the mark (see above)


def received() -> int | None:
    """The last of SIGINT and SIGTERM ccdcal's handler received in this process (``None``: neither)."""
    return _received


def _deliver_later(signum: int) -> None:
    """Send ``signum`` to this process again after :data:`REDELIVER_AFTER` seconds, unless it has been
    raised meanwhile (:func:`raise_deferred`, or the handler outside database code)."""
    global _deferred
    _deferred = signum
    pid = os.getpid()

    def again() -> None:
        if _deferred == signum:
            os.kill(pid, signum)

    timer = threading.Timer(REDELIVER_AFTER, again)
    timer.daemon = True
    timer.start()


def in_database_code(frame: FrameType | None) -> bool:
    """Whether ``frame`` (the innermost frame the main thread runs) or any frame below it is in a database
    package: the main thread is inside a database call, even where that call runs ccdcal's code (an event
    listener, the JSON serializer), and an exception raised there would unwind through the driver and
    the pool (which take it for a lost connection)."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.partition(".")[0] in DATABASE_PACKAGES:
            return True
        frame = frame.f_back
    return False


def _handler(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM while a command runs (:func:`handling_signals`)."""
    global _held, _deferred, _received
    _received = signum if _received != signal.SIGTERM else _received
    if _shield_depth:
        if _held != signal.SIGTERM:  # SIGTERM, the stronger, is the one reported
            _held = signum
        return
    if in_database_code(frame):
        _deliver_later(signum)  # also for a wait that may stop sooner (raise_deferred)
        return
    _deferred = None
    raise _exception(signum)


def raise_deferred() -> None:
    """Raise, now, an interrupt delivered while the main thread was inside a database call — for a point
    of that call where stopping is safe (between two attempts at the write lock, where no transaction
    has begun). Does nothing in another thread, or when none is waiting."""
    global _deferred
    if threading.current_thread() is not threading.main_thread() or _deferred is None or _shield_depth:
        return
    signum, _deferred = _deferred, None
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
    global _installed, _keep
    if threading.current_thread() is not threading.main_thread() or _installed:
        yield
        return
    _keep = keep
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, _handler)
    _installed = True
    keep_interrupts()
    _reset_in_children()
    try:
        yield
    finally:
        _installed = False
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if keep else handler)


def ignore_interrupts() -> None:
    """Ignore SIGINT in this (worker) process: its coordinator handles Ctrl-C.

    SIGTERM gets its default action back (a forked worker inherits ccdcal's handler): the pool
    terminates its workers with it when it breaks, and a worker that raised instead, inside the pool's
    queues, could leave them locked and the coordinator waiting for ever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def ignoring_signals() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while the block starts a process that executes a new program (the
    ``forkserver`` of a process pool): it inherits the ignored signals from its first instruction, and
    so do the workers it forks, until their initializer (:func:`ignore_interrupts`) gives SIGTERM back its
    default action. Without it, a Ctrl-C landing while they import prints their tracebacks."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_at_fork = False


def _reset_in_children() -> None:
    """Make every process forked from this one a worker as :func:`ignore_interrupts` makes it, from its
    first instruction: a signal landing between the fork and the pool's initializer would otherwise run
    ccdcal's handler in the child. Registered once per process."""
    global _at_fork
    if not _at_fork:
        os.register_at_fork(after_in_child=ignore_interrupts)
        _at_fork = True


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
