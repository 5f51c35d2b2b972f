"""Process pools that a Ctrl-C or SIGTERM stops cleanly, with Python 3.11's :mod:`concurrent.futures`.

Two steps of a :class:`~concurrent.futures.ProcessPoolExecutor` must not be cut by an interrupt or raced
by the pool's own thread:

* **Submitting** may start a worker process (the pool starts them as work arrives). An interrupt raised
  while :meth:`~multiprocessing.Process.start` waits for the new process's id leaves a process the pool
  does not know: forked from a fork server, it then fails to open the pool's semaphores, which the
  stopping command has removed, and prints a traceback after the command's last line; forked directly,
  it may wait on the pool's queue for ever. :func:`submit` holds the interrupt back until the process is
  registered (a few milliseconds).
* **Cancelling** what has not started. When a worker dies (SIGTERM sent to the whole process group kills
  the workers too), the pool's thread marks every unfinished future broken; Python 3.11 raises
  :class:`~concurrent.futures.InvalidStateError` in that thread for a future cancelled meanwhile from
  another, prints its traceback and leaves the other futures unsettled (fixed in Python 3.12).
  :func:`cancel_pending` has the pool's own thread cancel them.

:class:`ForkedThreads` is the other pool of worker processes: one process, forked at once, whose threads run
the calls. What the process loads (compiled kernels, data read once) its threads share, and it is forked
before the caller loads what it does not need itself, so that its start-up runs beside the caller's.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import ParamSpec, TypeVar, cast

from ccdcal.runtime.interrupts import ignore_interrupts, shielded

P = ParamSpec("P")
T = TypeVar("T")


def submit(pool: Executor, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """``pool.submit(fn, *args, **kwargs)``, with a Ctrl-C or SIGTERM raised only once the worker process
    it may start is registered with the pool."""
    with shielded():
        return pool.submit(fn, *args, **kwargs)


def cancel_pending(pool: Executor, futures: Iterable[Future[T]]) -> None:
    """Cancel the futures of ``pool`` that have not started; those running go on.

    For a process pool with any of them unfinished, the pool is shut down without waiting, its own
    thread cancelling what has not started (the pool then takes no new work; a later
    ``shutdown(wait=True)`` no longer waits, and the interpreter waits for its processes at exit).
    Otherwise each future is cancelled here. A future the pool cancels is done (:meth:`Future.done`), but
    :func:`concurrent.futures.wait` never reports it so: wait for the others by ``done()``.
    """
    futures = list(futures)
    if isinstance(pool, ProcessPoolExecutor | ForkedThreads):
        if any(not future.done() for future in futures):
            pool.shutdown(wait=False, cancel_futures=True)
        return
    for future in futures:
        future.cancel()


#: What the caller sends: ``("call", key, call)`` (a :func:`functools.partial`), ``("stop",)`` or
#: ``("cancel",)``.
_Call = tuple[str, int, Callable[[], object]]
_Order = _Call | tuple[str]
#: What the worker process answers: ``(key, "ok" | "error" | "cancelled", result or exception)``.
_Reply = tuple[int, str, object]


def can_fork() -> bool:
    """Whether worker processes can be forked here (not on Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


class ForkedThreads(Executor):
    """An executor whose calls run in ``threads`` threads of one worker process, forked when it is made.

    The process runs ``initializer`` in its first thread at once (loading what the calls need while the
    caller goes on), ignores SIGINT and keeps SIGTERM's default action (:func:`ignore_interrupts`): the
    caller alone stops the work. Each call is sent to it when submitted, and its result (or exception) comes
    back as it ends. A future is running from its submission: what has not started is cancelled by
    :meth:`shutdown` with ``cancel_futures`` (as :func:`cancel_pending` does), and those futures fail with
    :class:`~concurrent.futures.CancelledError`. When the process dies, every unfinished future fails with
    :class:`~concurrent.futures.process.BrokenProcessPool`, as a process pool's do.
    """

    def __init__(self, threads: int, initializer: Callable[[], object] | None = None) -> None:
        context = multiprocessing.get_context("fork")
        self.threads = threads
        self._connection, child = context.Pipe()
        self._futures: dict[int, Future[object]] = {}
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self._closed = False
        self._broken: str | None = None
        with shielded():  # an interrupt never leaves a process this executor does not know
            self._process = context.Process(
                target=_serve, args=(child, threads, initializer), name="ccdcal-worker", daemon=True
            )
            self._process.start()
        child.close()
        self._reader = threading.Thread(target=self._read, name="ccdcal-results", daemon=True)
        self._reader.start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Send ``fn(*args, **kwargs)`` to the worker process (``fn`` and the arguments are pickled)."""
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._broken is not None:
                raise BrokenProcessPool(self._broken)
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            key = next(self._keys)
            self._futures[key] = cast("Future[object]", future)
            try:
                self._connection.send(("call", key, functools.partial(fn, *args, **kwargs)))
            except OSError as exc:  # the process is gone: the reader fails the other futures
                del self._futures[key]
                raise BrokenProcessPool(f"the worker process is gone ({exc})") from exc
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no new calls; with ``cancel_futures``, cancel those the process has not started. With
        ``wait``, wait for the process to end, once the calls it runs have ended and their results have
        come back."""
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(OSError):  # gone already
                    self._connection.send(("cancel" if cancel_futures else "stop",))
        if wait:
            self._process.join()
            self._reader.join()

    def _read(self) -> None:
        """Settle each future as its result comes back; all that remain when the process ends fail."""
        while True:
            try:
                key, outcome, value = self._connection.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                future = self._futures.pop(key, None)
            if future is None:
                continue
            if outcome == "ok":
                future.set_result(value)
            else:
                future.set_exception(CancelledError() if outcome == "cancelled" else value)
        why = "the worker process was terminated abruptly while calls were running or pending"
        with self._lock:
            self._broken = why
            pending, self._futures = self._futures, {}
        self._connection.close()
        for future in pending.values():
            future.set_exception(BrokenProcessPool(why))


def _serve(
    connection: Connection[_Reply, _Order], threads: int, initializer: Callable[[], object] | None
) -> None:
    """The worker process of :class:`ForkedThreads`: run each call received in a thread and send back its
    outcome; when told to stop (or when the caller is gone), end once the calls started have been answered,
    without the interpreter's clean-up (an initializer still loading is not waited for)."""
    ignore_interrupts()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ccdcal-worker")
    answered = threading.Condition()  # its lock also orders the replies on the connection
    unanswered: dict[int, Future[object]] = {}

    def reply(key: int, future: Future[object]) -> None:
        if future.cancelled():
            message: _Reply = (key, "cancelled", None)
        elif future.exception() is not None:
            message = (key, "error", future.exception())
        else:
            message = (key, "ok", future.result())
        with answered:
            try:
                connection.send(message)
            except OSError:  # the caller is gone: nobody to answer
                pass
            except Exception as exc:  # a result that cannot be pickled: why, instead
                connection.send((key, "error", RuntimeError(f"{type(exc).__name__}: {exc}")))
            unanswered.pop(key, None)
            answered.notify_all()

    status = 0
    try:
        if initializer is not None:
            pool.submit(initializer)
        cancel = False
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break
            if message[0] != "call":
                cancel = message[0] == "cancel"
                break
            _, key, call = cast(_Call, message)
            future = pool.submit(call)
            with answered:
                unanswered[key] = future
            future.add_done_callback(functools.partial(reply, key))
        pool.shutdown(wait=False, cancel_futures=cancel)
        with answered:
            answered.wait_for(lambda: not unanswered)
    except BaseException:
        status = 1
    finally:
        connection.close()
        os._exit(status)
