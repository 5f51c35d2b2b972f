"""Where ``ccdcal process`` calibrates its lights on this machine: the threads of one worker process.

The worker process (:class:`~ccdcal.runtime.pools.ForkedThreads`) is forked as early as the command allows
— by the command line (:func:`early_workers`), before it loads the catalog's libraries — and at once loads
the light's modules and compiled kernels (:func:`_prepare`) while this process plans: the two start-ups run
side by side, and this process never loads numba or the FITS reader. Its threads calibrate the frames; they
share the kernels and the masters, each read once (:func:`ccdcal.lights.pixels.load_master`), and the
kernels release the GIL, as reading, hashing and writing the files do. Nothing here touches the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ccdcal.lights.task import FrameResult, FrameTask, MasterUse
from ccdcal.runtime.cores import usable_cores
from ccdcal.runtime.pools import ForkedThreads, can_fork

#: The worker process forked early, until the coordinator takes it.
_early: ForkedThreads | None = None


@contextmanager
def early_workers(jobs: int | None, wanted: bool = True) -> Iterator[None]:
    """Fork the worker process of ``jobs`` threads (default: every core this process may use) now, for the
    coordinator to take (:func:`take`); ended with the block when it was not taken (nothing to calibrate,
    or the command stopped before). Nothing is forked unless ``wanted``, for one job, or where processes
    cannot be forked."""
    global _early
    threads = jobs or usable_cores()
    if wanted and threads > 1 and _early is None and can_fork():
        _early = start(threads)
    try:
        yield
    finally:
        left, _early = _early, None
        if left is not None:
            left.shutdown(wait=True, cancel_futures=True)


def take() -> ForkedThreads | None:
    """The worker process forked early (its owner then shuts it down), or ``None``."""
    global _early
    pool, _early = _early, None
    return pool


def start(threads: int) -> ForkedThreads:
    """A worker process of ``threads`` threads, forked now, loading the light's modules and kernels."""
    return ForkedThreads(threads, initializer=_prepare)


def calibrate(task: FrameTask) -> FrameResult:
    """:func:`ccdcal.lights.worker.calibrate_frame`, sent to the worker process by this name: the
    coordinator does not load the worker's modules."""
    # Imported here for start-up time: loaded in the worker process only, never in the coordinator.
    from ccdcal.lights.worker import calibrate_frame

    return calibrate_frame(task)


def load_master(use: MasterUse, thresholds: tuple[float, float] | None) -> bool:
    """:func:`ccdcal.lights.pixels.load_master`, sent to the worker process by this name."""
    # Imported here for start-up time: loaded in the worker process only, never in the coordinator.
    from ccdcal.lights.pixels import load_master

    return load_master(use, thresholds)


def _prepare() -> None:
    """Load the worker's modules and the fused kernel of the usual frame (16-bit unsigned, bias, dark and
    flat) in the worker process, while the coordinator plans."""
    # Imported here for start-up time: loaded in the worker process only, never in the coordinator.
    from ccdcal.kernels.light import warm_up
    from ccdcal.lights.worker import calibrate_frame

    assert calibrate_frame is not None
    warm_up(signed=(False,), generic=False)  # any other variant is loaded when first needed
