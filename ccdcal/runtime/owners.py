"""Which process owns a temporary file or a run, and whether that process is still alive.

Runs that die (killed, out of memory, a power cut) leave work behind: temporary files, claims on lights,
``runs`` rows still ``running``. A later run may clean up after a dead one, never after a live one — two
``ccdcal process`` may share a catalog and folders. Ownership is a process id on a host: on this host a
process is alive when its id exists and it started before the thing it owns (an id reused by a newer
process does not count); on another host it cannot be checked here.

How a live run stops on Ctrl-C or SIGTERM is :mod:`ccdcal.runtime.interrupts`.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time

#: This machine's name, reduced to characters safe in a file name.
HOST = re.sub(r"[^A-Za-z0-9.\-]", "_", socket.gethostname()) or "localhost"
#: This machine in a temporary file's name: 12 hex digits of the sha256 of its name, whatever its length.
HOST_TOKEN = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:12]

# Slack between a process's start and a time it recorded (clock granularity, /proc rounding).
_SLACK = 2.0

_owner: str | None = None


def owner_tag() -> str:
    """The owner of the temporary files this process writes, in 20 hex digits: its process id (8) and
    :data:`HOST_TOKEN` (12). Fixed in length, so that a temporary name is short whatever the host's name.

    The tag is fixed by the first call in a process, and worker processes forked after it keep their
    parent's: the coordinator that registers their files owns them, so its death (not a worker's) is what
    makes them stale.
    """
    global _owner
    if _owner is None:
        _owner = f"{os.getpid():08x}{HOST_TOKEN}"
    return _owner


_TAG = re.compile(r"^([0-9a-f]{8})([0-9a-f]{12})-")
# The tag of ccdcal before fixed-length names: ``{pid}@{host}~``.
_LEGACY_TAG = re.compile(r"^(\d+)@([A-Za-z0-9._\-]+)~")


def parse_tag(text: str) -> tuple[int, str] | None:
    """(pid, host) of a text starting with an owner tag and ``-`` (:func:`owner_tag`; the host is then a
    :data:`HOST_TOKEN`), or with an older ccdcal's ``{pid}@{host}~``; ``None`` when it has no owner tag."""
    match = _TAG.match(text)
    if match:
        return int(match.group(1), 16), match.group(2)
    legacy = _LEGACY_TAG.match(text)
    return (int(legacy.group(1)), legacy.group(2)) if legacy else None


def process_alive(pid: int | None, host: str | None, since: float | None = None) -> bool | None:
    """Whether process ``pid`` on ``host`` is alive: ``None`` when that cannot be told from here.

    Parameters
    ----------
    pid, host
        The process (``host`` as recorded: :data:`HOST`, the raw host name of a ``runs`` row, or the
        :data:`HOST_TOKEN` of a temporary file's owner tag).
    since : float, optional
        A time (seconds since the epoch) at which the owner was known to be running: a process with
        that id that started later is another process, and the owner is dead.
    """
    if pid is None or host is None:
        return None
    if host not in (HOST, HOST_TOKEN, socket.gethostname()):
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    if since is not None:
        started = _start_time(pid)
        if started is not None and started > since + _SLACK:
            return False
    return True


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch; Linux), else ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5): start time after boot, in clock ticks
        with open("/proc/uptime", "rb") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
