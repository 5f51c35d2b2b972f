"""How many cores this process may use: the one count every default number of workers derives from.

On Linux the CPU affinity of the process (``taskset``, a container's or a batch system's CPU set), which
may be fewer than the machine has; elsewhere the machine's count.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
