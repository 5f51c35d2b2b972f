"""Whether a FITS file is whole: every header ends (``END``) and every data unit holds the bytes its header
promises — what a watcher checks before it ingests a file a capture program may still be writing.

A camera's capture program writes a frame over a second or more; a file caught half-written would be
catalogued as broken (or, worse, read as short data). :func:`completeness` walks the file's HDUs as FITS
lays them out (2880-byte blocks of 80-character cards, each data unit ``|BITPIX| / 8 × GCOUNT × (PCOUNT +
NAXIS1 × ... × NAXISn)`` bytes, padded to a block) and says whether the file ends where its last HDU does,
or where it stops short and by how much. Only the cards that size the data are parsed: the rest of the
header is astropy's business once the file is whole. A gzipped file (``.gz``, by its magic bytes) is
whole when its gzip stream ends and the FITS inside it is whole.

Written here rather than with astropy: astropy opens a truncated file with a warning and reads its short
data unit as far as it goes, and reading every header through it would cost a watcher far more than
reading the few cards that size each data unit.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["BLOCK", "Completeness", "completeness"]

#: The FITS block: headers and data units are padded to a multiple of it.
BLOCK = 2880
#: A card.
CARD = 80
_GZIP_MAGIC = b"\x1f\x8b"
_SIZING = (b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT")


@dataclass(frozen=True)
class Completeness:
    """What :func:`completeness` found.

    Attributes
    ----------
    whole : bool
        Every HDU's header and data unit is there (the last data unit's padding may be missing, as some
        writers leave it out).
    reason : str or None
        Why the file is not whole, or is not FITS at all (``None`` when whole).
    hdus : int
        The HDUs found whole.
    fits : bool
        Whether the file starts as a FITS file does (``SIMPLE  =``); a file that does not is never whole
        and will not become so.
    """

    whole: bool
    reason: str | None
    hdus: int
    fits: bool = True


def completeness(path: str | os.PathLike[str]) -> Completeness:
    """Whether the FITS file at ``path`` is whole (see the module docstring).

    Raises
    ------
    OSError
        When the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        magic = handle.read(2)
        handle.seek(0)
        if magic == _GZIP_MAGIC:
            return _gzipped(handle)
        size = os.fstat(handle.fileno()).st_size
        return _walk(handle, size)


def _gzipped(handle: BinaryIO) -> Completeness:
    """A gzipped FITS file: whole when the stream ends and the FITS inside is whole."""
    stream = gzip.GzipFile(fileobj=handle, mode="rb")
    try:
        return _walk(stream, None)
    except EOFError:
        return Completeness(False, "the gzip stream stops before its end", 0)
    except (OSError, zlib.error) as exc:
        return Completeness(False, f"not a readable gzip stream ({exc})", 0, fits=False)


def _walk(stream: BinaryIO | gzip.GzipFile, size: int | None) -> Completeness:
    """Walk the HDUs of ``stream`` (``size`` bytes; ``None``: read to its end to know)."""
    position = 0
    hdus = 0
    while True:
        first = stream.read(BLOCK)
        if hdus and not first:
            return Completeness(True, None, hdus)
        if hdus and not first.startswith(b"XTENSION"[: len(first)]):
            return Completeness(True, None, hdus)  # bytes after the last HDU that begin no extension
        if not hdus and first[:9] != b"SIMPLE  ="[: len(first[:9])]:
            return Completeness(False, "not a FITS file (it does not begin with SIMPLE =)", 0, fits=False)
        header, error = _header(stream, first)
        if error is not None:
            where = "primary header" if hdus == 0 else f"header of HDU {hdus}"
            return Completeness(False, f"the {where} {error}", hdus)
        position += len(header)
        data = _data_bytes(header)
        if data is None:
            return Completeness(False, f"the header of HDU {hdus} does not size its data unit", hdus)
        padded = math.ceil(data / BLOCK) * BLOCK
        got = _skip(stream, padded)
        if got < data:
            short = data - got
            return Completeness(False, f"its data unit {hdus} is {short} bytes short of {data}", hdus)
        position += got
        hdus += 1
        if got < padded:  # the last data unit, its padding left out: whole
            return Completeness(True, None, hdus)
        if size is not None and position >= size:
            return Completeness(True, None, hdus)


def _header(stream: BinaryIO | gzip.GzipFile, first: bytes) -> tuple[bytes, str | None]:
    """The header's blocks from ``first`` to the one holding ``END``, or why it is not whole."""
    blocks = [first]
    block = first
    while True:
        if len(block) < BLOCK:
            read = sum(len(b) for b in blocks)
            return b"", f"stops after {read} bytes, before its END card"
        for start in range(0, BLOCK, CARD):
            if block[start : start + 8] == b"END     ":
                return b"".join(blocks), None
        block = stream.read(BLOCK)
        blocks.append(block)


def _data_bytes(header: bytes) -> int | None:
    """The data unit's size from BITPIX, NAXIS, NAXISn, PCOUNT and GCOUNT (``None``: not sized)."""
    values: dict[bytes, int] = {}
    for start in range(0, len(header), CARD):
        card = header[start : start + CARD]
        keyword = card[:8].rstrip()
        if keyword.startswith(_SIZING) and card[8:10] == b"= ":
            text = card[10:].split(b"/", 1)[0].strip()
            try:
                values[keyword] = int(text)
            except ValueError:
                return None
        if keyword == b"END":
            break
    bitpix, naxis = values.get(b"BITPIX"), values.get(b"NAXIS")
    if bitpix not in (8, 16, 32, 64, -32, -64) or naxis is None or naxis < 0:
        return None
    if naxis == 0:
        return 0
    axes = [values.get(b"NAXIS%d" % i) for i in range(1, naxis + 1)]
    if any(a is None or a < 0 for a in axes):
        return None
    sizes = [a for a in axes if a is not None]
    random_groups = sizes[0] == 0 and b"GROUPS  =                    T" in header
    count = math.prod(sizes[1:] if random_groups else sizes)  # random groups: NAXIS1 = 0 is no axis
    pcount, gcount = values.get(b"PCOUNT", 0), values.get(b"GCOUNT", 1)
    return abs(bitpix) // 8 * gcount * (pcount + count)


def _skip(stream: BinaryIO | gzip.GzipFile, length: int) -> int:
    """Read past ``length`` bytes (seeking where the stream can); the number of bytes there were."""
    if length == 0:
        return 0
    if stream.seekable() and not isinstance(stream, gzip.GzipFile):
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(min(here + length, end))
        return min(length, end - here)
    done = 0
    while done < length:
        chunk = stream.read(min(1 << 20, length - done))
        if not chunk:
            break
        done += len(chunk)
    return done
