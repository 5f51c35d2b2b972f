"""FITS files ccdcal writes: atomic writes, hashes, and the provenance cards it puts in headers.

Raw files are only ever opened for reading. Every output is written to a temporary file in the target
folder, flushed to disk, then renamed over the final name, so a crash never leaves a half file under a
final name; each output carries CHECKSUM/DATASUM cards.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

from ccdcal._version import __version__
from ccdcal.errors import FitsFormatError

#: Prefix of temporary files; a rerun removes stale ones it finds in its output folders.
TEMP_PREFIX = ".ccdcal-tmp-"
_HASH_CHUNK = 1 << 22


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_image(path: str | os.PathLike[str], hdu: int = 0, dtype: type = np.float32) -> np.ndarray:
    """The pixels of one image HDU with BZERO/BSCALE applied, as ``dtype``.

    Raises
    ------
    FitsFormatError
        When the file cannot be read as an image (the reason names the file).
    """
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


def write_atomic(path: Path, hdul: fits.HDUList) -> str:
    """Write ``hdul`` to ``path`` atomically and return the written file's sha256.

    The file is written as ``.ccdcal-tmp-*`` in the same folder, synced, and renamed over ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(temporary, "wb") as handle:
            hdul.writeto(handle, checksum=True)
            handle.flush()
            os.fsync(handle.fileno())
        digest = sha256_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return digest


def _sync_folder(folder: Path) -> None:
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
    """Delete temporary files an interrupted run left in ``folder``; return how many."""
    if not folder.is_dir():
        return 0
    removed = 0
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def add_history(header: fits.Header, lines: Iterable[str]) -> None:
    """Append HISTORY cards, splitting long lines so nothing is lost."""
    for line in lines:
        for start in range(0, max(len(line), 1), 70):
            header.add_history(line[start : start + 70])


def stamp_version(header: fits.Header) -> None:
    """The CCDCALV card: which ccdcal wrote the file."""
    header["CCDCALV"] = (__version__, "ccdcal version that wrote this file")
