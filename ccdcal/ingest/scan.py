"""Finding raw FITS files: a walk of the given paths that follows links safely and stats each file once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ccdcal.errors import UsageError

#: File name endings ccdcal catalogues (compared case-insensitively).
FITS_SUFFIXES = (
    ".fits",
    ".fit",
    ".fts",
    ".fits.gz",
    ".fit.gz",
    ".fts.gz",
    ".fits.fz",
    ".fit.fz",
    ".fz",
)


class Found(NamedTuple):
    """A FITS file found on disk: resolved path, size, mtime, the root it was found under, and where.

    ``location`` is the path as walked (through any symbolic link), whose folders may name the kind.
    """

    path: str
    size: int
    mtime: float
    root: str
    location: str


def is_fits_name(name: str) -> bool:
    """Whether a file name has one of :data:`FITS_SUFFIXES` (any case)."""
    return name.lower().endswith(FITS_SUFFIXES)


def resolve_roots(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """The given files and folders as resolved absolute paths; a missing one is a usage error."""
    roots = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise UsageError(f"{given}: no such file or folder; check the path")
        roots.append(path.resolve())
    return roots


def walk(roots: list[Path]) -> Iterator[Found]:
    """Every FITS file under the roots, each once, in a stable order.

    Symbolic links are followed, with a guard against loops; paths are reported resolved. Folders that
    cannot be listed are skipped silently here (they hold nothing that could be catalogued).
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for root in roots:
        if root.is_file():
            if str(root) not in seen_files:
                seen_files.add(str(root))
                stat = root.stat()
                yield Found(str(root), stat.st_size, stat.st_mtime, str(root), str(root))
            continue
        yield from _walk_dir(str(root), str(root), str(root), seen_dirs, seen_files)


def _walk_dir(
    real: str, shown: str, root: str, seen_dirs: set[tuple[int, int]], seen_files: set[str]
) -> Iterator[Found]:
    """Walk one folder: ``real`` is its resolved path, ``shown`` the path it was reached by."""
    try:
        stat = os.stat(real)
    except OSError:
        return
    key = (stat.st_dev, stat.st_ino)
    if key in seen_dirs:
        return
    seen_dirs.add(key)
    try:
        with os.scandir(real) as entries:
            items = sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return
    subfolders: list[tuple[str, str]] = []
    for entry in items:
        location = os.path.join(shown, entry.name)
        try:
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.path.isdir(target):
                    subfolders.append((target, location))
                    continue
                if not (os.path.isfile(target) and is_fits_name(entry.name)):
                    continue
                path = target
                file_stat = os.stat(target)
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append((entry.path, location))
                continue
            elif entry.is_file(follow_symlinks=False) and is_fits_name(entry.name):
                path = entry.path
                file_stat = entry.stat(follow_symlinks=False)
            else:
                continue
        except OSError:
            continue
        if path not in seen_files:
            seen_files.add(path)
            yield Found(path, file_stat.st_size, file_stat.st_mtime, root, location)
    for sub_real, sub_shown in subfolders:
        yield from _walk_dir(sub_real, sub_shown, root, seen_dirs, seen_files)
