"""Hashing recorded files again, in parallel, and saying whether each still matches its record.

Used by ``ccdcal provenance`` (the files of one tree) and ``ccdcal audit`` (every file the catalog
records). Threads do the work: reading and sha256 both release the GIL, so they overlap on several cores
and on the disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from ccdcal.files.fitsio import TEMP_PREFIX, sha256_file
from ccdcal.runtime.cores import usable_cores

#: How a file compares with its record.
OK, CHANGED, MISSING, UNREADABLE, UNCHECKED = "ok", "changed", "missing", "unreadable", "unchecked"

#: States that mean a file is not what the catalog (or a header) recorded.
DRIFT = frozenset({CHANGED, MISSING, UNREADABLE})

Progress = Callable[[int, int], None]

#: File names of FITS files (as ingest takes them): ``.fits .fit .fts`` in any case, gzipped, ``.fz``.
FITS_NAME = re.compile(r"\.(fits|fit|fts)(\.gz|\.fz)?$|\.fz$", re.IGNORECASE)


def fits_files(roots: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """Paths of the FITS files under each folder (recursively; ccdcal's temporary files left out)."""
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                if FITS_NAME.search(name) and not name.startswith(TEMP_PREFIX):
                    yield os.path.join(folder, name)


@dataclass(frozen=True)
class Hashed:
    """One file hashed: its sha256, or why it could not be (``missing``, ``unreadable: ...``)."""

    path: str
    sha256: str | None = None
    error: str | None = None

    def state(self, recorded: str | None) -> str:
        """``ok``, ``changed``, ``missing``, ``unreadable``; ``unchecked`` when nothing was recorded."""
        if self.error == MISSING:
            return MISSING
        if self.error is not None:
            return UNREADABLE
        if recorded is None:
            return UNCHECKED
        return OK if self.sha256 == recorded else CHANGED


def default_jobs() -> int:
    """Threads hashing files: two per usable core, at most 16 (hashing waits on the disk as much as on a
    core)."""
    return max(1, min(16, 2 * usable_cores()))


def hash_one(path: str) -> Hashed:
    """Hash one file (never raises for a file problem)."""
    try:
        return Hashed(path, sha256_file(path))
    except FileNotFoundError:
        return Hashed(path, error=MISSING)
    except IsADirectoryError:
        return Hashed(path, error="unreadable: a folder")
    except OSError as exc:
        return Hashed(path, error=f"unreadable: {exc.strerror or exc}")


def hash_files(
    paths: Iterable[str], jobs: int | None = None, progress: Progress | None = None
) -> dict[str, Hashed]:
    """Hash every distinct path, ``jobs`` threads at a time.

    Parameters
    ----------
    paths : iterable of str
        Files to hash (repeats are hashed once).
    jobs : int, optional
        Threads (default :func:`default_jobs`).
    progress : callable, optional
        Called as ``progress(done, total)``.

    Returns
    -------
    dict
        Path → :class:`Hashed`.
    """
    unique = list(dict.fromkeys(paths))
    results: dict[str, Hashed] = {}
    if progress:
        progress(0, len(unique))
    if not unique:
        return results
    workers = min(jobs or default_jobs(), len(unique))
    if workers <= 1:
        for done, path in enumerate(unique, 1):
            results[path] = hash_one(path)
            if progress:
                progress(done, len(unique))
        return results
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ccdcal-hash") as pool:
        futures = [pool.submit(hash_one, path) for path in unique]
        for done, future in enumerate(as_completed(futures), 1):
            hashed = future.result()
            results[hashed.path] = hashed
            if progress:
                progress(done, len(unique))
    return results
