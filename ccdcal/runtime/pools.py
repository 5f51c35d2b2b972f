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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import ParamSpec, TypeVar

from ccdcal.runtime.interrupts import shielded

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
    if isinstance(pool, ProcessPoolExecutor):
        if any(not future.done() for future in futures):
            pool.shutdown(wait=False, cancel_futures=True)
        return
    for future in futures:
        future.cancel()
