"""When a file a capture program is writing may be ingested: its size has held for ``settle`` seconds and
it is a whole FITS file (:func:`ccdcal.files.complete.completeness`); a file still not whole ``give_up``
seconds after it was first seen is rejected with the reason, and so, at once, is one that is not FITS.

:class:`Settler` holds the files seen and not yet decided. The watcher tells it each file an event names
(:meth:`Settler.see`) and asks, when :meth:`Settler.wait` says one may be due, which are ready and which are
rejected (:meth:`Settler.due`). Time comes from a clock the caller gives (``time.monotonic`` by default),
so the rules are tested without sleeping.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ccdcal.files.complete import completeness

__all__ = ["GIVE_UP", "SETTLE", "Decided", "Settler"]

#: Seconds a file's size and mtime must hold before it is checked (``--settle``).
SETTLE = 0.2
#: Seconds after a file is first seen past which one still not whole is rejected (``--give-up``).
GIVE_UP = 60.0


@dataclass
class _Candidate:
    first_seen: float
    changed: float
    stamp: tuple[int, int] | None


@dataclass(frozen=True)
class Decided:
    """What :meth:`Settler.due` decided: the files to ingest, and those rejected with the reason."""

    ready: list[Path]
    rejected: list[tuple[Path, str]]
    #: Files gone before they were decided (deleted or renamed away).
    gone: list[Path]


class Settler:
    """The files seen and not yet decided (see the module docstring).

    Parameters
    ----------
    settle : float
        Seconds a file's size and mtime must hold.
    give_up : float
        Seconds after which a file still not whole is rejected.
    clock : callable
        Seconds, monotonic.
    """

    def __init__(
        self, settle: float = SETTLE, give_up: float = GIVE_UP, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settle, self.give_up, self.clock = settle, give_up, clock
        self._files: dict[Path, _Candidate] = {}

    def __len__(self) -> int:
        return len(self._files)

    def see(self, path: Path) -> None:
        """A file an event named (created, written, renamed into place): checked from now on."""
        now = self.clock()
        found = self._files.get(path)
        if found is None:
            self._files[path] = _Candidate(now, now, _stamp(path))
        else:
            found.changed = now

    def wait(self) -> float | None:
        """Seconds until a file may be due (``None``: none is waiting)."""
        if not self._files:
            return None
        now = self.clock()
        return max(0.0, min(c.changed + self.settle - now for c in self._files.values()))

    def due(self) -> Decided:
        """The files whose size held for ``settle`` seconds: whole (ready), not FITS or past ``give_up``
        (rejected), gone; the others stay."""
        now = self.clock()
        decided = Decided([], [], [])
        for path, candidate in list(self._files.items()):
            stamp = _stamp(path)
            if stamp is None:
                del self._files[path]
                decided.gone.append(path)
                continue
            if stamp != candidate.stamp:  # still being written
                candidate.stamp, candidate.changed = stamp, now
                continue
            if now - candidate.changed < self.settle:
                continue
            try:
                found = completeness(path)
            except OSError as exc:
                found = None
                reason = f"cannot be read ({exc.strerror or exc})"
            if found is not None and found.whole:
                del self._files[path]
                decided.ready.append(path)
            elif found is not None and not found.fits:
                del self._files[path]
                decided.rejected.append((path, found.reason or "not a FITS file"))
            elif now - candidate.first_seen >= self.give_up:
                del self._files[path]
                why = found.reason if found is not None else reason
                decided.rejected.append(
                    (path, f"still not whole {self.give_up:g} s after it appeared: {why}")
                )
            else:
                candidate.changed = now  # checked: wait another settle period before the next look
        return decided


def _stamp(path: Path) -> tuple[int, int] | None:
    """A file's size and mtime (ns), ``None`` when it is gone."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_size, found.st_mtime_ns
