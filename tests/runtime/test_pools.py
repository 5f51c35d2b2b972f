"""Process pools stopped cleanly (ccdcal.runtime.pools): a submit finishes before a Ctrl-C is raised, and
cancelling never races the pool's own thread when its workers die."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any

import pytest

from ccdcal.runtime.interrupts import handling_signals
from ccdcal.runtime.pools import cancel_pending, submit


@pytest.fixture
def handlers() -> Iterator[None]:
    with handling_signals():
        yield


class SignalledDuringSubmit(Executor):
    """An executor whose submit is hit by a Ctrl-C halfway (as a worker process starts)."""

    def __init__(self) -> None:
        self.submitted: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        future: Future[Any] = Future()
        self.submitted.append(future)
        return future


def test_a_ctrl_c_during_a_submit_is_raised_once_it_is_done(handlers: None) -> None:
    pool = SignalledDuringSubmit()
    with pytest.raises(KeyboardInterrupt):
        submit(pool, print, "never")
    assert len(pool.submitted) == 1


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def settled(futures: list[Future[float]], within: float = 10.0) -> bool:
    """Whether every future is done (finished, failed or cancelled) within ``within`` seconds."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if all(f.done() for f in futures):
            return True
        wait([f for f in futures if not f.done()], timeout=0.05)
    return False


def fork_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


def test_cancel_pending_leaves_the_running_to_finish_and_cancels_the_rest() -> None:
    pool = fork_pool(1)
    try:
        futures = [pool.submit(nap, 0.3) for _ in range(6)]
        time.sleep(0.15)  # the first runs, two more wait in the pool's call queue
        cancel_pending(pool, futures)
        assert settled(futures)
        assert futures[0].result() == 0.3
        assert sum(f.cancelled() for f in futures) >= 3  # the queue holds one more than the workers
    finally:
        pool.shutdown(wait=True)


def test_cancelling_while_the_workers_are_killed_settles_every_future_quietly() -> None:
    """SIGTERM to a process group kills the workers as their coordinator cancels: each future settles
    (cancelled, finished or broken) and the pool's thread raises nothing (pytest reports a thread's
    exception as an error)."""
    for _ in range(5):
        pool = fork_pool(2)
        futures = [pool.submit(nap, 0.05) for _ in range(40)]
        time.sleep(0.1)
        for child in multiprocessing.active_children():
            os.kill(child.pid or 0, signal.SIGKILL)
        cancel_pending(pool, futures)
        assert settled(futures)
        pool.shutdown(wait=True)


def test_cancel_pending_of_a_thread_pool_cancels_each_future() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(nap, 0.1) for _ in range(4)]
        cancel_pending(pool, futures)
        assert [f.cancelled() for f in futures[1:]] == [True, True, True]
        assert futures[0].result() == 0.1
