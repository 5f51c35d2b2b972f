"""How many cores this process may use: the one count every default number of workers derives from.

On Linux the CPU affinity of the process (``taskset``, a container's or a batch system's CPU set), which
may be fewer than the machine has; elsewhere the machine's count.
"""

from __future__ import annotations

import os

from ccdcal.errors import UsageError


def usable_cores() -> int:
    """The cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: The most workers (processes, threads, local Dask workers) a command may be told to start: more than any
#: machine has cores, and few enough that each gets the memory and file handles it needs.
MAX_WORKERS = 1024


def check_workers(count: int, option: str = "--jobs") -> None:
    """Raise :class:`~ccdcal.errors.UsageError` naming ``option`` unless ``count`` is from 1 to
    :data:`MAX_WORKERS`."""
    if count < 1:
        raise UsageError(f"{option} must be at least 1, not {count}")
    if count > MAX_WORKERS:
        raise UsageError(
            f"{option} must be at most {MAX_WORKERS}, not {count} (this process may use "
            f"{usable_cores()} cores)"
        )
