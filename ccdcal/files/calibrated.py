"""Calibrated FITS files: a valid header made from the raw one, and a streamed write with checksums.

The raw header is kept card by card, except:

- the structural cards (BITPIX, NAXISn, BZERO, BSCALE, BLANK, EXTEND, CHECKSUM ...) and the table or
  compression keywords, which the float32 data replace;
- DATAMIN/DATAMAX, which describe the raw pixels;
- a card whose value has the wrong type for a reserved keyword (a WCS keyword such as CRVAL1 or EQUINOX
  holding a string): converted to the standard type when the value is a number, else left out;
- a date keyword (DATE, DATE-OBS, DATE-LOC ...) that is not an ISO date, and a card astropy cannot make
  valid: left out.

Every change is told in a HISTORY line naming the keyword, so that the file passes ``fitsverify`` and the
user can see what was done. The data unit is written from big-endian words computed by the kernels
(:mod:`ccdcal.kernels.light`), hashed as it is written; CHECKSUM and DATASUM are computed on the way
(FITS checksum convention), without a second pass over the pixels.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import textwrap
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ccdcal._version import __version__
from ccdcal.files.fitsio import HISTORY_TEXT, LONG_STRING, add_history, output_error, set_card, temporary_path

_BLOCK = 2880

_STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|GROUPS|BZERO|BSCALE|BLANK|CHECKSUM|DATASUM"
    r"|END|INHERIT|THEAP|TFIELDS|(TTYPE|TFORM|TBCOL|TDIM|TNULL|TSCAL|TZERO|TUNIT|TDISP)\d+"
    r"|ZIMAGE|ZSIMPLE|ZEXTEND|ZBLOCKED|ZTENSION|ZPCOUNT|ZGCOUNT|ZHECKSUM|ZDATASUM|ZBITPIX|ZCMPTYPE"
    r"|ZQUANTIZ|ZDITHER0|ZBLANK|ZSCALE|ZZERO|(ZNAXIS|ZTILE|ZNAME|ZVAL)\d*|DATAMIN|DATAMAX)$"
)
#: Keywords the FITS standard types as real numbers (WCS and time), with an optional WCS letter.
_REAL = re.compile(
    r"^((CRPIX|CRVAL|CDELT|CROTA|CRDER|CSYER)\d{1,3}[A-Z]?|(PC|CD|PV)\d{1,2}_\d{1,2}[A-Z]?"
    r"|(EQUINOX|LONPOLE|LATPOLE|RESTFRQ|RESTFREQ|RESTWAV|VELOSYS|ZSOURCE|VELANGL)[A-Z]?"
    r"|EPOCH|MJD-OBS|MJD-AVG|MJD-BEG|MJD-END|MJDREF|OBSGEO-[XYZ])$"
)
_INTEGER = re.compile(r"^(WCSAXES[A-Z]?|EXTVER|EXTLEVEL)$")
_STRING = re.compile(
    r"^((CTYPE|CUNIT|CNAME)\d{1,3}[A-Z]?|PS\d{1,2}_\d{1,2}[A-Z]?|(RADESYS|SPECSYS|WCSNAME)[A-Z]?"
    r"|RADECSYS|ORIGIN|AUTHOR|REFERENC|TELESCOP|INSTRUME|OBSERVER|OBJECT|EXTNAME|DATEREF|TIMESYS)$"
)
#: The value field of a card in the usual form: a quoted string, a logical, an integer or a real (or
#: nothing), then an optional comment; printable ASCII only.
_PLAIN_VALUE = re.compile(
    r" *(?:'(?:[ -&(-~]|'')*'|[TF]|[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?)? *(?:/[ -~]*)?"
)
_PLAIN_KEYWORD = re.compile(r"[A-Z0-9_-]+ *")
_COMMENTARY = frozenset({"", "COMMENT", "HISTORY"})
#: ISO dates as CFITSIO accepts them, and the old ``dd/mm/yy`` form.
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d*)?)?)?|\d{2}/\d{2}/\d{2})$")


def clean_raw_header(raw: fits.Header) -> tuple[list[fits.Card], list[str]]:
    """The raw header's cards that fit a float32 primary image, and HISTORY lines for what changed.

    Parameters
    ----------
    raw : astropy.io.fits.Header
        The raw frame's image header.

    Returns
    -------
    cards : list of astropy.io.fits.Card
        Cards to keep, in their order (values converted where needed).
    notes : list of str
        One HISTORY line per kind of change, naming the keywords.
    """
    kept: list[fits.Card] = []
    converted: list[str] = []
    dropped: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for card in raw.cards:
            keyword = card.keyword
            if _STRUCTURAL.match(keyword):
                continue
            if _plain(card):
                kept.append(card)
                continue
            fixed, problem = _fixed(card)
            if problem is not None:
                dropped.append(f"{keyword} ({problem})")
            elif fixed is not card:
                converted.append(keyword)
                kept.append(fixed)
            else:
                kept.append(card)
    notes = []
    if converted:
        notes.append(f"raw cards converted to their standard type: {', '.join(converted)}")
    notes.extend(f"raw card {item} left out: not valid FITS" for item in dropped)
    kept, wcs_notes = _wcs_structure(kept)
    return kept, notes + wcs_notes


#: Keywords of a WCS description, with the alternate-description letter (CROTAn has none).
_WCS_KEY = re.compile(
    r"^(?P<name>CTYPE|CUNIT|CRVAL|CRPIX|CDELT|CRDER|CSYER|CNAME|CROTA)\d{1,3}(?P<alt>[A-Z]?)$"
    r"|^(?P<matrix>PC|CD|PV|PS)\d{1,2}_\d{1,2}(?P<malt>[A-Z]?)$"
)


def _wcs_key(keyword: str) -> tuple[str, str] | None:
    """(``PC``, ``CD``, ``CROTA``, other name; alternate letter) of a WCS keyword, else ``None``."""
    found = _WCS_KEY.match(keyword)
    if found is None:
        return None
    return found["name"] or found["matrix"], found["alt"] or found["malt"] or ""


def _wcs_structure(cards: list[fits.Card]) -> tuple[list[fits.Card], list[str]]:
    """Resolve what the WCS standard forbids between cards.

    PCi_j with CDi_j or CROTAn (MaxIm DL's WCS with a plate solver's appended): the PCi_j form is kept,
    as WCS readers use it, and the others left out. WCSAXES after other WCS keywords: moved before them.
    """
    notes = []
    described = {(k[0], k[1]) for c in cards if (k := _wcs_key(c.keyword))}
    for alt in sorted({alt for name, alt in described if name == "PC"}):
        clash = ("CD", "CROTA") if alt == "" else ("CD",)
        dropped = [c.keyword for c in cards if (k := _wcs_key(c.keyword)) and k[0] in clash and k[1] == alt]
        if dropped:
            notes.append(f"raw cards {', '.join(dropped)} left out: the PCi_j{alt} matrix is present")
            cards = [c for c in cards if c.keyword not in dropped]
    for card in [c for c in cards if c.keyword.startswith("WCSAXES")]:
        alt = card.keyword.removeprefix("WCSAXES")
        first = next((c for c in cards if (k := _wcs_key(c.keyword)) and k[1] == alt), None)
        if first is not None and cards.index(first) < cards.index(card):
            cards.remove(card)
            cards.insert(cards.index(first), card)
            notes.append(f"raw card {card.keyword} moved before the other WCS keywords")
    return cards, notes


def _read_image(card: fits.Card) -> str | None:
    """A card's text as it was read, when astropy keeps it (reading ``Card.image`` would re-verify it:
    most of the time of a header). ``None`` otherwise; the card then goes the slow way."""
    image = getattr(card, "_image", None)
    return image if isinstance(image, str) and getattr(card, "_modified", True) is False else None


def _image(card: fits.Card) -> str:
    """The text to write for a kept card."""
    return _read_image(card) or card.image


def _plain(card: fits.Card) -> bool:
    """A card that can be kept as it is without reading its value: one 80-character image in the usual
    form, whose keyword has no type the standard imposes (those are checked by :func:`_fixed`)."""
    image = _read_image(card)
    if image is None or len(image) != 80 or not image.isascii() or not image.isprintable():
        return False
    keyword = card.keyword
    if keyword in _COMMENTARY:
        return True
    if (
        _REAL.match(keyword)
        or _INTEGER.match(keyword)
        or _STRING.match(keyword)
        or keyword.startswith("DATE")
    ):
        return False
    return (
        image[8:10] == "= "
        and _PLAIN_KEYWORD.fullmatch(image[:8]) is not None
        and _PLAIN_VALUE.fullmatch(image, 10) is not None
    )


def _fixed(card: fits.Card) -> tuple[fits.Card, str | None]:
    """The card as it can be written: itself, a converted copy, or a problem (the card is left out)."""
    keyword = card.keyword
    if keyword in ("", "COMMENT", "HISTORY"):
        return card, None
    try:
        card.verify("exception")
        value = card.value
    except Exception:  # astropy raises VerifyError and ValueError subclasses on malformed cards
        return card, "malformed card"
    if isinstance(value, fits.card.Undefined):
        return card, None
    if _REAL.match(keyword) and not _is_number(value):
        number = _number(value)
        return (
            (fits.Card(keyword, number, card.comment), None) if number is not None else (card, "not a number")
        )
    if _INTEGER.match(keyword) and not (isinstance(value, int) and not isinstance(value, bool)):
        number = _number(value)
        if number is not None and float(number).is_integer():
            return fits.Card(keyword, int(number), card.comment), None
        return card, "not an integer"
    if keyword.startswith("DATE"):
        if not (isinstance(value, str) and _DATE.match(value.strip())):
            return card, f"{value!r} is not an ISO date"
        return card, None
    if _STRING.match(keyword) and not isinstance(value, str):
        return fits.Card(keyword, str(value), card.comment), None
    return card, None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if np.isfinite(number) else None
    return None


def output_cards(
    raw: fits.Header,
    shape: tuple[int, int],
    cards: Iterable[tuple[str, Any, str]],
    history: Iterable[str],
) -> str:
    """The calibrated frame's primary header cards: structure, the cleaned raw cards, provenance, HISTORY.

    Parameters
    ----------
    raw : astropy.io.fits.Header
        The raw frame's image header.
    shape : tuple of int
        (NAXIS2, NAXIS1) of the data.
    cards : iterable of (keyword, value, comment)
        Provenance cards (BIASCOR, DARKCOR, FLATCOR ...), after the raw ones (a raw card of the same
        keyword is replaced).
    history : iterable of str
        HISTORY lines for the steps (after the notes on raw cards that were changed).

    Returns
    -------
    str
        The 80-character card images, without CHECKSUM, DATASUM and END (:func:`write_calibrated` adds
        them). Raw cards already valid keep their text as it is.
    """
    kept, notes = clean_raw_header(raw)
    unit = raw.get("BUNIT")
    if isinstance(unit, str) and unit.strip().lower() not in ("adu", ""):
        notes.append(f"raw BUNIT '{unit.strip()}' replaced by 'adu'")
    ours = {"BUNIT": ("adu", "calibrated pixels in ADU")}
    ours |= {keyword: (value, comment) for keyword, value, comment in cards}
    ours["CCDCALV"] = (__version__, "ccdcal version that wrote this file")
    lines = [ascii_text(line) for line in (*notes, *history)]
    if any(len(_image(c)) > 80 for c in kept) or any(_long(value) for value, _ in ours.values()):
        tail = _tail_astropy(ours, lines)  # long strings: CONTINUE cards and the LONGSTRN declaration
    else:
        tail = "".join(_card_image(k, v, type(v), c) for k, (v, c) in ours.items()) + _history_images(lines)
    structure = _structure_images(shape)
    return structure + "".join(_image(c) for c in kept if c.keyword not in ours) + tail


@functools.lru_cache(maxsize=64)
def _structure_images(shape: tuple[int, int]) -> str:
    """SIMPLE ... EXTEND of a float32 primary image of ``shape``."""
    structure = [
        fits.Card("SIMPLE", True, "conforms to FITS standard"),
        fits.Card("BITPIX", -32, "array data type"),
        fits.Card("NAXIS", 2, "number of array dimensions"),
        fits.Card("NAXIS1", shape[1]),
        fits.Card("NAXIS2", shape[0]),
        fits.Card("EXTEND", True),
    ]
    return "".join(c.image for c in structure)


def _long(value: Any) -> bool:
    return isinstance(value, str) and len(value.replace("'", "''")) > LONG_STRING


@functools.lru_cache(maxsize=1024)
def _card_image(keyword: str, value: Any, kind: type, comment: str) -> str:
    """One card as :func:`ccdcal.files.fitsio.set_card` writes it (``kind`` keeps ``1`` and ``True`` apart
    in the cache): the same cards recur from frame to frame (the masters' names, the version)."""
    header = fits.Header()
    set_card(header, keyword, value, comment)
    return str(header.cards[0].image)


def _history_images(lines: Iterable[str]) -> str:
    """HISTORY cards of ``lines`` (ASCII), wrapped as :func:`ccdcal.files.fitsio.add_history` wraps them."""
    images: list[str] = []
    for line in lines:
        if not line.isprintable():  # astropy's card checks decide
            header = fits.Header()
            add_history(header, [line])
            images.extend(card.image for card in header.cards)
        elif len(line) <= HISTORY_TEXT and line == line.rstrip():
            images.append(f"HISTORY {line:<{HISTORY_TEXT}}")
        else:
            parts = textwrap.wrap(line, HISTORY_TEXT, break_long_words=True, break_on_hyphens=False)
            images.extend(f"HISTORY {part:<{HISTORY_TEXT}}" for part in parts or [""])
    return "".join(images)


def _tail_astropy(ours: dict[str, tuple[Any, str]], lines: list[str]) -> str:
    header = fits.Header()
    header["LONGSTRN"] = ("OGIP 1.0", "CONTINUE long-string convention is used")
    for keyword, (value, comment) in ours.items():
        set_card(header, keyword, value, comment)
    add_history(header, lines)
    return str(header.tostring(endcard=False, padding=False))


def output_header(
    raw: fits.Header,
    shape: tuple[int, int],
    cards: Iterable[tuple[str, Any, str]],
    history: Iterable[str],
) -> fits.Header:
    """:func:`output_cards` as an astropy header (for inspection; the writer uses the card text)."""
    return fits.Header.fromstring(output_cards(raw, shape, cards, history))


_ASCII = str.maketrans({"°": "", "±": "+/-", "Δ": "d", "→": "->", "×": "x", "—": "-", "–": "-"})


def ascii_text(text: str) -> str:
    """Text for a header card: ``-10 °C ±2`` becomes ``-10 C +/-2``; anything else non-ASCII becomes ``?``."""
    return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")


# -- checksums ------------------------------------------------------------------------------------------


def fold_checksum(total: int) -> int:
    """A sum of 32-bit words folded to a 32-bit ones' complement sum (the FITS checksum arithmetic)."""
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _word_sum(data: bytes) -> int:
    """The unfolded sum of the big-endian 32-bit words of ``data`` (a multiple of 4 bytes)."""
    return int(np.frombuffer(data, dtype=">u4").sum(dtype=np.uint64))


_EXCLUDE = frozenset(b":;<=>?@[\\]^_`")


def encode_checksum(value: int) -> str:
    """The 16 ASCII characters that encode a 32-bit checksum (FITS checksum convention, section A.7.2)."""
    chars = [0] * 16
    for i in range(4):
        byte = (value >> ((3 - i) * 8)) & 0xFF
        quotient, remainder = byte // 4 + ord("0"), byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                while ch[j] in _EXCLUDE or ch[j + 1] in _EXCLUDE:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    changed = True
        for j in range(4):
            chars[4 * j + i] = ch[j]
    return bytes(chars[(i + 15) % 16] for i in range(16)).decode("ascii")


_PLACEHOLDER = fits.Card("CHECKSUM", "0" * 16, "HDU checksum").image


def _header_bytes(cards: str, datasum: int) -> bytes:
    """A header as written: ``cards``, DATASUM, CHECKSUM (over header and data), END, padding."""
    text = cards + _PLACEHOLDER + fits.Card("DATASUM", str(datasum), "data unit checksum").image
    text += "END".ljust(80)
    raw = (text + " " * (-len(text) % _BLOCK)).encode("ascii")
    checksum = encode_checksum(~fold_checksum(_word_sum(raw) + datasum) & 0xFFFFFFFF)
    stamped: bytes = raw.replace(b"CHECKSUM= '0000000000000000'", f"CHECKSUM= '{checksum}'".encode(), 1)
    return stamped


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def write_calibrated(
    folder: Path,
    name: str,
    cards: str,
    words: np.ndarray,
    word_sum: int,
    mask: np.ndarray | None,
    *,
    sync: bool = True,
    uncertainty: np.ndarray | None = None,
    mask_cards: Iterable[tuple[str, Any, str]] = (),
) -> tuple[Path, str]:
    """Write a calibrated frame to a temporary file in ``folder``; return its path and sha256.

    The caller renames the file to its final name (``folder/name``) when its catalog rows are written.

    Parameters
    ----------
    folder : Path
        The output folder (created).
    name : str
        The final file name (named in an error).
    cards : str
        From :func:`output_cards`.
    words : numpy.ndarray
        The data unit as big-endian float32 words (``uint32``).
    word_sum : int
        Unfolded sum of ``words`` as big-endian integers (from the kernel).
    mask : numpy.ndarray or None
        uint8 image written as the ``MASK`` extension (read by ``CCDData.read`` as its mask).
    sync : bool
        Flush the file to disk before returning. ``ccdcal process`` leaves this to its coordinator, which
        syncs each file (waiting on the disk while the next frame is computed) before registering it.
    uncertainty : numpy.ndarray or None
        Standard deviation per pixel, written (float32) as the ``UNCERT`` extension with
        ``UTYPE = 'StdDevUncertainty'`` (read by ``CCDData.read`` as a ``StdDevUncertainty``).
    mask_cards : iterable of (keyword, value, comment)
        Cards added to the MASK extension's header (what its bits mean).
    """
    folder.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(folder)
    digest = hashlib.sha256()
    parts: list[Any] = [
        _header_bytes(cards, fold_checksum(word_sum)),
        np.ascontiguousarray(words).data.cast("B"),
    ]
    parts.append(_padding(words.nbytes))
    if mask is not None:
        parts.extend(_mask_hdu(mask, mask_cards))
    if uncertainty is not None:
        parts.extend(_uncertainty_hdu(uncertainty))
    try:
        with open(temporary, "wb", buffering=0) as handle:
            for part in parts:
                _hash_and_write(part, digest, handle)
            if sync:
                os.fsync(handle.fileno())
    except OSError as exc:  # a full disk, a folder made read-only: named, nothing left behind
        temporary.unlink(missing_ok=True)
        raise output_error(folder / name, exc) from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary, digest.hexdigest()


#: Bytes a large part is copied, hashed and written by at a time: small enough to stay in a core's cache.
_STREAM_BLOCK = 1 << 18
#: The block buffer, one per thread (a Dask worker may run several frames at once in threads).
_SCRATCH = threading.local()


def _hash_and_write(part: Any, digest: Any, handle: Any) -> None:
    """Hash ``part`` and write it, a cache-sized block at a time for large parts.

    Each block is first copied into a small buffer that stays in the cache: SHA-256 then reads cache, not
    main memory (measured about 20 % faster on 16 MB), and the write copies from the cache too.
    """
    view = memoryview(part).cast("B")
    if view.nbytes <= _STREAM_BLOCK:
        digest.update(view)
        _write_all(handle, view)
        return
    scratch = getattr(_SCRATCH, "buffer", None)
    if scratch is None:
        scratch = _SCRATCH.buffer = np.empty(_STREAM_BLOCK, dtype=np.uint8)
    source = np.frombuffer(view, dtype=np.uint8)
    for start in range(0, view.nbytes, _STREAM_BLOCK):
        block = source[start : start + _STREAM_BLOCK]
        staged = scratch[: block.size]
        np.copyto(staged, block)
        buffer = staged.data
        digest.update(buffer)
        _write_all(handle, buffer)


def _write_all(handle: Any, data: memoryview) -> None:
    """Write all of ``data`` to an unbuffered file (a raw write may write less than asked)."""
    written = handle.write(data)
    while written < data.nbytes:
        written += handle.write(data[written:])


def _mask_hdu(mask: np.ndarray, cards: Iterable[tuple[str, Any, str]] = ()) -> list[bytes]:
    """The MASK image extension (uint8: 1 = flat pixel below flat_min, clamped; other bits as its
    ``cards`` tell) as bytes."""
    data = np.ascontiguousarray(mask, dtype=np.uint8)
    header = fits.ImageHDU(data=data, name="MASK").header
    for keyword, value, comment in cards:
        set_card(header, keyword, value, comment)
    return _extension(header, data)


def _uncertainty_hdu(uncertainty: np.ndarray) -> list[bytes]:
    """The UNCERT image extension (float32 standard deviation, ``UTYPE = 'StdDevUncertainty'``)."""
    data = np.ascontiguousarray(uncertainty, dtype=">f4")
    header = fits.ImageHDU(data=data, name="UNCERT").header
    set_card(header, "UTYPE", "StdDevUncertainty", "uncertainty type (astropy CCDData)")
    set_card(header, "BUNIT", "adu", "standard deviation of the pixels, in ADU")
    return _extension(header, data)


def _extension(header: fits.Header, data: np.ndarray) -> list[bytes]:
    """An image extension's header and data as bytes, with CHECKSUM and DATASUM."""
    raw = data.tobytes()
    padded = raw + _padding(len(raw))
    return [
        _header_bytes(header.tostring(endcard=False, padding=False), fold_checksum(_word_sum(padded))),
        padded,
    ]
