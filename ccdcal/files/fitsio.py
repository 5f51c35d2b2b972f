"""FITS files ccdcal writes: atomic writes, hashes, and the provenance cards it puts in headers.

Raw files are only ever opened for reading. Every output is written to a temporary file in the target
folder, flushed to disk, then renamed over the final name, so a crash never leaves a half file under a
final name; each output carries CHECKSUM/DATASUM cards, their comments fixed: the same HDUs make the same
bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ccdcal._version import __version__
from ccdcal.errors import FitsFormatError, OutputError
from ccdcal.files.cardtext import history_pieces, printable_text
from ccdcal.runtime.owners import owner_tag, parse_tag, process_alive

if TYPE_CHECKING:
    from astropy.io import fits

#: Prefix of temporary files; a rerun removes stale ones it finds in its output folders.
TEMP_PREFIX = ".ccdcal-tmp-"
#: Suffix of a publication journal (:mod:`ccdcal.files.journal`): a temporary file that only recovery
#: removes, never as stale, since it is the proof of what its dead writer published.
JOURNAL_SUFFIX = ".journal"
_HASH_CHUNK = 1 << 22
#: A temporary file of a process on another machine is stale after this long (its owner is not seen).
FOREIGN_TEMPORARY_AGE = 24 * 3600.0


def temporary_path(folder: Path, suffix: str = "") -> Path:
    """A new temporary file name in ``folder``: ``.ccdcal-tmp-{owner}-{random}{suffix}``.

    The owner tag (:func:`ccdcal.runtime.owners.owner_tag`: the process id and a hash of the host name)
    lets :func:`remove_stale_temporaries` remove the leftovers of dead processes only, never the files a
    concurrent run is still writing. The name does not hold the final name: it is 49 characters (and
    ``suffix``) however long the final name or the host's name, so a final name the file system allows
    always has a temporary name it allows too.
    """
    return folder / f"{TEMP_PREFIX}{owner_tag()}-{secrets.token_hex(8)}{suffix}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_image(path: str | os.PathLike[str], hdu: int = 0, dtype: type | None = np.float32) -> np.ndarray:
    """The pixels of one image HDU with BZERO/BSCALE applied, as ``dtype`` (``None``: the type astropy
    gives them, e.g. uint16 for unsigned 16-bit data).

    Raises
    ------
    FitsFormatError
        When the file cannot be read as an image (the reason names the file).
    """
    # Imported here for start-up time: planning and status use this module's paths, not astropy.
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(path, memmap=False) as hdul:
                data = hdul[hdu].data
                if data is None:
                    raise FitsFormatError(f"HDU {hdu} holds no pixels", str(path))
                return np.asarray(data, dtype=dtype)
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise FitsFormatError(f"cannot read the pixels: {exc}", str(path)) from exc


#: Called with the final path and the file's sha256 just before a file is published under it.
BeforePublish = Callable[[Path, str], None]


def write_atomic(
    path: Path, hdul: fits.HDUList, *, overwrite: bool = True, before_publish: BeforePublish | None = None
) -> str:
    """Write ``hdul`` to ``path`` atomically and return the written file's sha256.

    The file is written as ``.ccdcal-tmp-*`` in the same folder, synced, and renamed over ``path``; on
    any error the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : Path
        Final name (its folder is created).
    hdul : astropy.io.fits.HDUList
        What to write (with CHECKSUM/DATASUM cards).
    overwrite : bool
        With ``False`` an existing ``path`` is never replaced, even by a concurrent writer: the file is
        published with a hard link, which fails when the name exists.
    before_publish : callable, optional
        Called with ``path`` and the sha256 once the file is written and flushed, just before it is
        published (a :class:`~ccdcal.files.journal.Journal` records it).

    Raises
    ------
    FileExistsError
        ``overwrite=False`` and ``path`` exists.
    OutputError
        When the file cannot be written (no permission, disk full ...): nothing is left behind.
    """
    temporary = temporary_path(path.parent)
    published = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            _stamp_checksums(hdul)
            hdul.writeto(handle, checksum=False)  # the cards just set are kept as they are
            handle.flush()
            os.fsync(handle.fileno())
        digest = sha256_file(temporary)
        if before_publish is not None:
            before_publish(path, digest)
        _publish(temporary, path, overwrite)
        published = True
        temporary.unlink(missing_ok=True)
        sync_folder(path.parent)
    except BaseException as exc:  # Ctrl-C too: the caller is told nothing was written, so nothing is left
        if published and not overwrite:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise output_error(path, exc) from exc
        raise
    finally:
        temporary.unlink(missing_ok=True)
    return digest


def _stamp_checksums(hdul: fits.HDUList) -> None:
    """Set the DATASUM and CHECKSUM cards of every HDU, with fixed comments, as the calibrated lights' writer
    does (:mod:`ccdcal.files.calibrated`): astropy's own comments hold the time of writing, so the same
    pixels and cards would make other bytes, and another sha256, at every write."""
    hdul.update_extend()  # as writeto does, before the primary header is summed
    for hdu in hdul:
        hdu.add_datasum(when="data unit checksum")
        hdu.add_checksum(when="HDU checksum", override_datasum=True)


#: How the message of an output that could not be written begins (a light failed so is tried again).
OUTPUT_FAILED = "cannot write "


def write_free(
    choose: Callable[[], Path], hdul: fits.HDUList, before_publish: BeforePublish | None = None
) -> tuple[Path, str]:
    """Write ``hdul`` under the free name ``choose`` gives, never replacing a file; return the path and the
    file's sha256. ``choose`` is asked again when a concurrent writer takes the name first (it sees the
    file that appeared). ``before_publish`` as for :func:`write_atomic`."""
    for _ in range(100):
        path = choose()
        try:
            return path, write_atomic(path, hdul, overwrite=False, before_publish=before_publish)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free file name for {path.name} in {path.parent}")


def output_error(path: Path, exc: OSError, *, folder: bool = False) -> OutputError:
    """The error of an output that cannot be written: the file (or the folder), the cause, what to do."""
    where = path if folder else path.parent
    what = f"in {path}" if folder else str(path)
    cause = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some space on the disk of {where}, then run the command again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"make {where} writable or choose another folder"
    else:
        hint = f"check {where} and its disk, then run the command again"
    return OutputError(f"{OUTPUT_FAILED}{what}: {cause}; {hint}")


def check_folder(folder: Path) -> None:
    """Raise :class:`OutputError` when ``folder`` is a file (or a path through one): no output can go in
    it. A folder that does not exist yet passes (it is created when the first file is written)."""
    for path in (folder, *folder.parents):
        try:
            if not path.exists():
                continue
            is_folder = path.is_dir()
        except OSError:  # a folder on the way that cannot be searched: writing there says why
            return
        if not is_folder:
            raise OutputError(
                f"{OUTPUT_FAILED}in {folder}: {path} is a file, not a folder; choose another folder"
            )
        return


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written in it.

    Raises
    ------
    OutputError
        When they cannot, with the cause (a file in the way, permissions, a read-only or full disk).
    """
    check_folder(folder)
    probe = temporary_path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"ccdcal")
            handle.flush()
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise output_error(folder, exc, folder=True) from exc


def _publish(temporary: Path, path: Path, overwrite: bool) -> None:
    """Give ``temporary`` its final name (the caller removes ``temporary`` if it is still there)."""
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (not race-free)
        if path.exists():
            raise FileExistsError(f"{path} exists") from None
        os.replace(temporary, path)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename into it survives a crash (best effort: not every system allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files that dead processes left in ``folder``; return how many.

    A temporary file is stale when its owner (named in it, see :func:`temporary_path`) is a process of
    this machine that is gone, or when it has no owner tag (an older ccdcal's); one of a process on
    another machine after :data:`FOREIGN_TEMPORARY_AGE`. Files of live processes — a concurrent run
    sharing the folder — are left alone, and so are journals (:data:`JOURNAL_SUFFIX`), which recovery
    reads and removes. This process also tags its own temporaries from now on (see
    :func:`ccdcal.runtime.owners.owner_tag`), so workers it forks later write them as its own.
    """
    owner_tag()
    if not folder.is_dir():
        return 0
    removed = 0
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        if not leftover.name.endswith(JOURNAL_SUFFIX) and _stale(leftover):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def remove_own_temporaries(folder: Path) -> int:
    """Delete the temporary files this process (and the workers it forked) left in ``folder``: for a run
    that stops on an error or Ctrl-C, once its workers are done. Returns how many. A journal is left to
    recovery: the process that wrote it discards it once its files are registered or put back."""
    if not folder.is_dir():
        return 0
    removed = 0
    for leftover in folder.glob(f"{TEMP_PREFIX}{owner_tag()}-*"):
        if not leftover.name.endswith(JOURNAL_SUFFIX):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def temporary_owner(temporary: Path) -> tuple[int, str] | None:
    """(pid, host) of the process that wrote a temporary file, ``None`` when its name has no owner tag."""
    return parse_tag(temporary.name[len(TEMP_PREFIX) :])


def _stale(temporary: Path) -> bool:
    try:
        modified = temporary.lstat().st_mtime
    except FileNotFoundError:
        return False
    owner = temporary_owner(temporary)
    if owner is None:
        return True
    alive = process_alive(*owner, since=modified)
    if alive is None:
        return time.time() - modified > FOREIGN_TEMPORARY_AGE
    return not alive


#: A string value longer than this needs CONTINUE cards (the OGIP long-string convention).
LONG_STRING = 68


def set_card(header: fits.Header, keyword: str, value: Any, comment: str = "") -> None:
    """Set ``keyword`` to ``value`` with ``comment`` shortened to what fits on the card.

    astropy truncates a comment that does not fit, with a ``VerifyWarning``; this never warns. A string
    value longer than one card can hold is written with CONTINUE cards, and the header then declares
    the convention (``LONGSTRN = 'OGIP 1.0'``) so that fitsverify accepts it. Text a card cannot hold
    (outside printable ASCII: a tab in a header value) is written as
    :func:`~ccdcal.files.cardtext.printable_text` makes it (the catalog keeps the value itself).
    """
    if isinstance(value, str):
        value = printable_text(value)
    comment = printable_text(comment)
    if isinstance(value, str) and len(value.replace("'", "''")) > LONG_STRING:
        if "LONGSTRN" not in header:
            header["LONGSTRN"] = ("OGIP 1.0", "CONTINUE long-string convention is used")
        header[keyword] = (value, comment)
        return
    # Imported here for start-up time (see read_image).
    from astropy.io import fits

    shown = fits.Card(keyword, value).image.rstrip()
    room = 80 - max(len(shown), 30) - len(" / ")
    if len(comment) > room:
        head = comment[: max(room, 0) + 1]
        comment = (head.rsplit(" ", 1)[0] if " " in head else head)[: max(room, 0)].rstrip()
    header[keyword] = (value, comment) if comment else value


def add_history(header: fits.Header, lines: Iterable[str]) -> None:
    """Append HISTORY cards, each line cut as :func:`ccdcal.files.cardtext.history_pieces` cuts it (so that
    :func:`ccdcal.files.cardtext.history_lines` reads it back exactly)."""
    for line in lines:
        for piece in history_pieces(line):
            header.add_history(piece)


def stamp_version(header: fits.Header) -> None:
    """The CCDCALV card: which ccdcal wrote the file."""
    header["CCDCALV"] = (__version__, "ccdcal version that wrote this file")
