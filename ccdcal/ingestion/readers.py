"""How ``ccdcal ingest`` reads its files: here, in threads, in worker processes or on Dask workers, chosen
from the files' sizes (:func:`reader_plan`), a bounded amount ahead of the writer (:func:`read_all`)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from contextlib import contextmanager
from itertools import islice
from multiprocessing import forkserver
from typing import Any, NamedTuple

from ccdcal.ingestion.reader import FrameRecord, ReadTask, read_frame, read_frames
from ccdcal.runtime.cluster import dask_cluster
from ccdcal.runtime.cores import usable_cores
from ccdcal.runtime.interrupts import ignore_interrupts, ignoring_signals
from ccdcal.runtime.pools import cancel_pending, submit

#: Called as ``progress(done, total)`` while files are read.
Progress = Callable[[int, int], None]

# Files at least this large on average are read by several threads (see reader_plan).
LARGE_FILE = 1 << 20
# Smaller files are parsed by worker processes when there are at least this many.
MIN_FILES_FOR_PROCESSES = 200
# Files handed to a reader at a time.
READ_CHUNK = 50


class ReaderPlan(NamedTuple):
    """How files are read: ``threads``, ``processes`` or ``dask`` (the workers of ``scheduler``), and how
    many (1 thread: the caller's own)."""

    kind: str
    workers: int
    scheduler: str | None = None


def reader_plan(jobs: int | None, sizes: list[int], scheduler: str | None = None) -> ReaderPlan:
    """Decide how to read: ``jobs`` reader processes when given, else a choice from the files' sizes.

    Reading and hashing release the GIL and dominate for real frames (megabytes each), so several
    threads overlap them with the parsing and the catalog writes. For many small files parsing
    dominates: worker processes parse while this process writes (two threads would only contend
    for the GIL). A few files are read here, in order: starting workers would cost more.
    """
    if scheduler is not None:
        return ReaderPlan("dask", 2, scheduler)
    if jobs is not None:
        return ReaderPlan("processes" if jobs > 1 else "threads", max(1, jobs))
    mean = sum(sizes) / len(sizes) if sizes else 0
    if mean >= LARGE_FILE:
        return ReaderPlan("threads", min(4, usable_cores()))
    cores = usable_cores()
    if cores > 1 and len(sizes) >= MIN_FILES_FOR_PROCESSES:
        return ReaderPlan("processes", max(1, min(cores - 1, 4)))
    return ReaderPlan("threads", 1)


def _process_context() -> Any:
    """``forkserver`` where there is one (no fork of a process with threads), else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _start_process_server() -> None:
    """Start the fork server early, with the reader module loaded, so workers start in milliseconds."""
    if usable_cores() < 2 or "forkserver" not in multiprocessing.get_all_start_methods():
        return

    context = _process_context()
    context.set_forkserver_preload(["ccdcal.ingestion.reader"])
    with ignoring_signals():  # the server and its workers leave Ctrl-C and SIGTERM to this process
        forkserver.ensure_running()


def read_all(
    tasks: list[ReadTask], plan: ReaderPlan, progress: Progress | None, batch: int
) -> Iterator[FrameRecord]:
    """Read files: in this thread (in order), or in a pool of threads or processes (in the order they are
    done), a bounded amount ahead of the writer (``batch``: the files the writer takes at a time)."""
    total = len(tasks)
    if progress:
        progress(0, total)
    if (plan.workers <= 1 and plan.kind == "threads") or (total < 2 and plan.kind != "dask"):
        for done, record in enumerate(map(read_frame, tasks), 1):
            if progress:
                progress(done, total)
            yield record
        return
    chunks = [tasks[i : i + READ_CHUNK] for i in range(0, total, READ_CHUNK)]
    with _readers(plan) as (pool, workers):
        # Results waiting for the writer stay bounded whatever the tree's size.
        ahead = max(2 * workers, 2 * batch // READ_CHUNK)
        pending: dict[Future[list[FrameRecord]], list[ReadTask]] = {}
        queue = iter(chunks)
        done = 0
        try:
            for chunk in islice(queue, ahead):
                pending[submit(pool, read_frames, chunk)] = chunk
            while pending:
                finished = [future for future in pending if future.done()]
                if not finished:
                    # While the workers start up (or fall behind) this process reads a chunk none of
                    # them has started; otherwise it waits for the first one to finish.
                    # (Not on Dask: a task its workers run still looks pending here.)
                    steal = plan.kind != "dask"
                    idle = next((f for f in reversed(pending) if steal and f.cancel()), None)
                    finished = [idle] if idle else list(wait(pending, return_when=FIRST_COMPLETED).done)
                for future in finished:
                    chunk = pending.pop(future)
                    records = read_frames(chunk) if future.cancelled() else future.result()
                    for following in islice(queue, 1):
                        pending[submit(pool, read_frames, following)] = following
                    for record in records:
                        done += 1
                        if progress:
                            progress(done, total)
                        yield record
        finally:
            cancel_pending(pool, pending)


@contextmanager
def _readers(plan: ReaderPlan) -> Iterator[tuple[Executor, int]]:
    """The pool reading chunks of files, and how many it reads at once."""
    if plan.kind == "dask":
        assert plan.scheduler is not None
        with dask_cluster(plan.scheduler) as cluster:
            yield cluster.executor, cluster.workers
        return
    if plan.kind == "processes":
        _start_process_server()
        pool: Executor = ProcessPoolExecutor(
            max_workers=plan.workers, mp_context=_process_context(), initializer=ignore_interrupts
        )
    else:
        pool = ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="ccdcal-read")
    with pool:
        yield pool, plan.workers
