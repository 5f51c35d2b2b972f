"""Reading one raw file for the catalog: hash, image header, normalised columns. Never pixels.

This runs in worker processes, so it imports only the standard library and ccdcal's light modules
(astropy is imported only for tile-compressed files, whose image header astropy reconstructs).
A file that cannot be catalogued is returned with a reason, never raised: one bad file must not stop a run.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from typing import Any, NamedTuple

from ccdcal.errors import FitsFormatError
from ccdcal.ingestion.cards import (
    STRUCTURAL_KEYS,
    Card,
    HeaderInfo,
    cards_from_astropy,
    find_image_header,
    header_values,
)
from ccdcal.ingestion.normalise import CONSULTED_KEYS, normalise

# Header values the reader needs: the normaliser's keywords, the data-unit structure, and the card that
# marks a file ccdcal wrote.
_NEEDED = CONSULTED_KEYS | STRUCTURAL_KEYS | {"CCDCALV"}
#: Bytes read first, where the primary header of a file ccdcal wrote shows its CCDCALV card: such a file
#: is skipped without reading (and hashing) its pixels.
_PEEK = 16 * 2880

_GZIP_MAGIC = b"\x1f\x8b"
_BLOCK = 2880


#: A header's cards by column: (keywords, values, numeric values, comments). Columns rather than one
#: tuple per card: they cross a process boundary several times cheaper, and the catalog writer zips
#: them into rows in C.
CardColumns = tuple[tuple[str, ...], tuple[str | None, ...], tuple[float | None, ...], tuple[str | None, ...]]
NO_CARDS: CardColumns = ((), (), (), ())


def card_columns(cards: list[Card]) -> CardColumns:
    """Cards as :data:`CardColumns`."""
    return tuple(zip(*cards, strict=True)) if cards else NO_CARDS  # type: ignore[return-value]


class ReadTask(NamedTuple):
    """A file to read and the kind its folders name (for frames whose header names none).

    ``problem``: why the entry is not a file to open (a broken link, a named pipe ...; see
    :class:`ccdcal.ingestion.scan.Found`): it is rejected with that reason, unread.
    """

    path: str
    folder_type: str | None
    problem: str | None = None


class FrameRecord(NamedTuple):
    """What one file contributes to the catalog: its identity, and cards and columns or a reason.

    ``skipped``: the file is not a raw frame but one ccdcal wrote (a calibrated light, a master, a mask),
    with the note saying so; it is not catalogued.
    """

    path: str
    size: int
    mtime: float
    sha256: str | None
    error: str | None
    hdu: int | None
    cards: CardColumns
    columns: dict[str, Any]
    skipped: str | None = None


def read_frame(task: ReadTask) -> FrameRecord:
    """Hash one file and parse its image header; a file that is not a usable FITS image gets a reason.

    The file is read once: the same bytes are hashed and parsed, so the hash always describes the
    header that was catalogued.
    """
    path = task.path
    if task.problem is not None:  # never opened (a named pipe would block); looked at again next time
        return _rejected(path, 0, 0.0, None, task.problem)
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            written = _written_by_ccdcal(handle.read(_PEEK))
            if written is not None:
                return FrameRecord(path, stat.st_size, stat.st_mtime, None, None, None, NO_CARDS, {}, written)
            handle.seek(0)  # read whole in one piece (the first blocks again, from the cache): no copy
            data = handle.read()
    except OSError as exc:
        return _rejected(path, 0, 0.0, None, f"cannot read the file: {exc.strerror or exc}")
    size, mtime = stat.st_size, stat.st_mtime
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return _rejected(path, size, mtime, digest, "empty file (0 bytes)")
    try:
        if data[:2] == _GZIP_MAGIC:
            data = _gunzip(data)
        info = find_image_header(data)
        values = header_values(info.cards, _NEEDED)
        if not info.compressed:
            _check_data_present(values, info.data_offset, len(data))
        if info.compressed:
            info = _astropy_image_header(path, info.hdu)
            values = header_values(info.cards, _NEEDED)
    except FitsFormatError as exc:
        return _rejected(path, size, mtime, digest, exc.reason)
    naxis = values.get("NAXIS")
    if isinstance(naxis, int) and naxis > 2 and _true_cube(values, naxis):
        return _rejected(
            path,
            size,
            mtime,
            digest,
            f"a {naxis}-D cube, not a 2-D image: ccdcal calibrates 2-D frames",
        )
    if "CCDCALV" in values:  # a compressed or gzipped output, or one with a long header
        note = ccdcal_output_note(values.get("CCDCALV"), values.get("IMAGETYP"))
        return FrameRecord(path, size, mtime, digest, None, None, NO_CARDS, {}, note)
    columns = normalise(values, task.folder_type)
    return FrameRecord(path, size, mtime, digest, None, info.hdu, card_columns(info.cards), columns)


def _written_by_ccdcal(head: bytes) -> str | None:
    """The note of a file whose primary header (within ``head``) has ccdcal's CCDCALV card, else ``None``."""
    if not head.startswith(b"SIMPLE  ="):
        return None
    if b"CCDCALV " not in head:  # no card of that keyword (its field is "CCDCALV "): the common case, in C
        return None
    found: dict[str, Any] = {}
    for offset in range(0, len(head) - 79, 80):
        card = head[offset : offset + 80]
        keyword = card[:8].rstrip()
        if keyword == b"END":
            break
        if keyword in (b"CCDCALV", b"IMAGETYP") and card[8:10] == b"= ":
            found[keyword.decode()] = _string_value(card[10:])
    if "CCDCALV" not in found:
        return None
    return ccdcal_output_note(found["CCDCALV"], found.get("IMAGETYP"))


def _string_value(field: bytes) -> str:
    """The text of a card's string value (``'0.1.0   ' / comment`` → ``0.1.0``), or the field as it is."""
    text = field.decode("ascii", "replace").strip()
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1 : end + 2] == "'":
            end = text.find("'", end + 2)
        return text[1:end].replace("''", "'").rstrip() if end != -1 else text[1:]
    return text.split("/", 1)[0].strip()


def ccdcal_output_note(version: Any, imagetyp: Any) -> str:
    """Why a file ccdcal wrote is not catalogued as a raw frame, naming what it is."""
    kind = str(imagetyp or "").strip().upper()
    what = "a calibrated frame"
    if kind == "MASTER BPM":
        what = "a bad-pixel mask"
    elif kind.startswith("MASTER ") and kind[7:].strip():
        what = f"a master {kind[7:].strip().lower()}"
    return f"{what} written by ccdcal {version} (its CCDCALV card), not a raw frame: not catalogued"


def read_frames(tasks: list[ReadTask]) -> list[FrameRecord]:
    """:func:`read_frame` over a chunk of files (one task for a worker process)."""
    return [read_frame(task) for task in tasks]


def _rejected(path: str, size: int, mtime: float, digest: str | None, reason: str) -> FrameRecord:
    return FrameRecord(path, size, mtime, digest, reason, None, NO_CARDS, {})


def _true_cube(values: dict[str, Any], naxis: int) -> bool:
    """A NAXIS > 2 header whose extra axes are longer than 1 (a 1×N×M cube is still an image)."""
    return any(values.get(f"NAXIS{axis}", 1) != 1 for axis in range(3, naxis + 1))


def _data_bytes(values: dict[str, Any]) -> int:
    """Unpadded size of an HDU's data unit from BITPIX, NAXISn, PCOUNT and GCOUNT."""
    naxis = values.get("NAXIS")
    bitpix = values.get("BITPIX")
    if not isinstance(naxis, int) or not isinstance(bitpix, int) or naxis <= 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        length = values.get(f"NAXIS{axis}")
        count *= length if isinstance(length, int) and length >= 0 else 0
    pcount = values.get("PCOUNT", 0)
    gcount = values.get("GCOUNT", 1)
    pcount = pcount if isinstance(pcount, int) else 0
    gcount = gcount if isinstance(gcount, int) else 1
    return abs(bitpix) // 8 * gcount * (pcount + count)


def _check_data_present(values: dict[str, Any], data_offset: int, available: int) -> None:
    needed = _data_bytes(values)
    if data_offset + needed > available:
        missing = data_offset + needed - available
        raise FitsFormatError(
            f"truncated data: the header promises {needed} bytes of pixels, "
            f"{missing} are missing (an interrupted copy or download?)"
        )


def _gunzip(data: bytes) -> bytes:
    """The whole content of a gzipped file, checked to its end (a cut or corrupt stream is an error)."""
    decoder = zlib.decompressobj(wbits=31)
    try:
        content = decoder.decompress(data) + decoder.flush()
    except zlib.error as exc:
        raise FitsFormatError(f"corrupt gzip stream: {exc}") from exc
    if not decoder.eof:
        raise FitsFormatError("truncated gzip stream: it ends early (an interrupted copy or download?)")
    return content


def _astropy_image_header(path: str, hdu: int) -> HeaderInfo:
    """The image header of a tile-compressed HDU as astropy presents it (ZBITPIX → BITPIX, ...)."""

    # Imported here to keep start-up fast: the reader processes load astropy only for files the fast parser
    # cannot read.
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                header = hdul[hdu].header
                cards = cards_from_astropy(header)
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise FitsFormatError(f"cannot read the compressed image header: {exc}") from exc
    return HeaderInfo(hdu=hdu, cards=cards, data_offset=0, data_size=0, compressed=True)
