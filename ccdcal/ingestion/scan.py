"""Finding raw FITS files: a walk of the given paths that follows links safely and stats each file once."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ccdcal.errors import NoFitsError, UsageError
from ccdcal.runtime.pathtext import shown

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
    ``problem`` says why a FITS-named entry cannot be read as a file at all (a broken or looping
    symbolic link, a named pipe ...); its size and mtime are then those of the entry itself.
    """

    path: str
    size: int
    mtime: float
    root: str
    location: str
    problem: str | None = None


def is_fits_name(name: str) -> bool:
    """Whether a file name has one of :data:`FITS_SUFFIXES` (any case)."""
    return name.lower().endswith(FITS_SUFFIXES)


def resolve_roots(paths: list[str | os.PathLike[str]]) -> list[Path]:
    """The given files and folders as resolved absolute paths; a missing one, or one that cannot be looked
    at (a folder on its way without permission), is a usage error."""
    roots = []
    for given in paths:
        path = Path(given).expanduser()
        try:
            path.stat()
        except FileNotFoundError:
            raise UsageError(f"{shown(given)}: no such file or folder; check the path") from None
        except OSError as exc:
            raise UsageError(
                f"{shown(given)}: cannot be looked at ({exc.strerror or exc}); check the permissions of its "
                "folders"
            ) from None
        roots.append(path.resolve())
    return roots


def no_fits(roots: list[Path]) -> str:
    """What to say when ``roots`` hold no FITS file: the paths and the fix."""
    return (
        f"no FITS file under {', '.join(shown(root) for root in roots)}: nothing to catalogue; check the "
        "path (ccdcal catalogues files named .fits, .fit or .fts, also gzipped (.gz) or tile-compressed "
        "(.fz))"
    )


def require_fits(paths: list[str | os.PathLike[str]]) -> None:
    """Check that ``paths`` hold a FITS file (or a folder that cannot be read, which ingest lists); the
    walk stops at the first one.

    Raises
    ------
    NoFitsError
        When they hold none.
    UsageError
        When a path does not exist or cannot be looked at (:func:`resolve_roots`).
    """
    roots = resolve_roots(paths)
    unreadable: list[NotRead] = []
    if next(walk(roots, unreadable), None) is None and not unreadable:
        raise NoFitsError(no_fits(roots))


#: A folder, or an entry of one, that could not be read, and why: (path, reason).
NotRead = tuple[str, str]


def walk(roots: list[Path], unreadable: list[NotRead] | None = None) -> Iterator[Found]:
    """Every FITS file under the roots, each once, in a stable order.

    Symbolic links are followed, with a guard against loops; paths are reported resolved. A folder that
    cannot be listed, or an entry of a folder that cannot be looked at (no permission), is appended to
    ``unreadable`` with the reason: what is there is not known, neither new nor gone. An entry with a FITS
    name that is not a readable regular file (a broken or looping link, a named pipe, a device) is
    reported with its :attr:`Found.problem`, never opened.
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    problems = unreadable if unreadable is not None else []
    for root in roots:
        if root.is_file():
            if str(root) not in seen_files:
                seen_files.add(str(root))
                found = root.stat()
                yield Found(str(root), found.st_size, found.st_mtime, str(root), str(root))
            continue
        yield from _walk_dir(str(root), str(root), str(root), seen_dirs, seen_files, problems)


def _walk_dir(
    real: str,
    shown: str,
    root: str,
    seen_dirs: set[tuple[int, int]],
    seen_files: set[str],
    unreadable: list[NotRead],
) -> Iterator[Found]:
    """Walk one folder: ``real`` is its resolved path, ``shown`` the path it was reached by."""
    try:
        folder = os.stat(real)
    except OSError as exc:
        unreadable.append((real, _folder_problem(exc)))
        return
    key = (folder.st_dev, folder.st_ino)
    if key in seen_dirs:
        return
    seen_dirs.add(key)
    try:
        with os.scandir(real) as entries:
            items = sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        unreadable.append((real, _folder_problem(exc)))
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
                if not is_fits_name(entry.name):
                    continue
                if not os.path.isfile(target):
                    if entry.path not in seen_files:
                        seen_files.add(entry.path)
                        yield _unreadable(entry.path, root, location)
                    continue
                path = target
                file_stat = os.stat(target)
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append((entry.path, location))
                continue
            elif not is_fits_name(entry.name):
                continue
            elif entry.is_file(follow_symlinks=False):
                path = entry.path
                file_stat = entry.stat(follow_symlinks=False)
            else:
                yield _unreadable(entry.path, root, location)
                continue
        except OSError as exc:  # a folder without search permission: its entries can be listed, no more
            unreadable.append(
                (entry.path, f"cannot be looked at: {_strerror(exc)} (check the permissions of its folder)")
            )
            continue
        if path not in seen_files:
            seen_files.add(path)
            yield Found(path, file_stat.st_size, file_stat.st_mtime, root, location)
    for sub_real, sub_shown in subfolders:
        yield from _walk_dir(sub_real, sub_shown, root, seen_dirs, seen_files, unreadable)


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _folder_problem(exc: OSError) -> str:
    """Why a folder could not be walked, and what follows."""
    return (
        f"cannot read the folder: {_strerror(exc)}; the FITS files in it were not looked at (check its "
        "permissions, then ingest again)"
    )


def _unreadable(path: str, root: str, location: str) -> Found:
    """An entry with a FITS name that is no regular file to read, with the reason in words."""
    entry = os.lstat(path)
    try:
        target = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problem = "a symbolic link loop: the link leads back to itself, never to a file"
        else:
            problem = f"a broken symbolic link: its target {os.readlink(path)} does not exist"
    else:
        problem = f"not a regular file but {_file_kind(target.st_mode)}: nothing to read as FITS"
    return Found(path, entry.st_size, entry.st_mtime, root, location, problem)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
