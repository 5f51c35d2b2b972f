"""A raw header's cards made FITS-valid for a calibrated light (docs/design.md, Files: raw cards made valid).

The raw header is kept card by card, except what ``fitsverify`` would reject in the output:

- the structural cards (BITPIX, NAXISn, BZERO, BSCALE, BLANK, EXTEND, CHECKSUM ...) and the table or
  compression keywords, which the float32 data replace, and DATAMIN/DATAMAX, which describe the raw
  pixels: left out silently;
- a reserved keyword holding a value of the wrong type (a WCS or time keyword such as CRVAL1, EQUINOX or
  MJD-OBS holding a string; WCSAXES a real; CTYPE1 or OBJECT a number): converted to the standard type
  when the value is one, else left out;
- a date keyword (every keyword starting with DATE, as fitsverify checks them): an ISO date in a form
  CFITSIO does not read (``2026-02-28 21:00``, a trailing ``Z`` or ``+00:00``) is written in the standard
  form; an impossible date (``2026-02-30T25:61:61``), another time zone, a number or no value is left out;
- a number fitsverify cannot read (NaN, infinity, a lower-case exponent), a value followed by text that is
  no comment, a keyword not left-justified: written in the standard form, or left out when the value is
  not a finite number;
- text outside printable ASCII (a tab in a COMMENT, a byte outside ASCII in a comment): made ASCII;
- PCi_j together with CDi_j or CROTAn (MaxIm DL's WCS with a plate solver's appended): PCi_j kept; a
  WCSAXES card after other WCS keywords: moved before them.

Every change is told in a HISTORY line naming the keyword.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np
from astropy.io import fits

from ccdcal.files.cardtext import printable_text as _printable

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
    r"^((CTYPE|CUNIT|CNAME)\d{1,3}[A-Z]?|PS\d{1,2}_\d{1,2}[A-Z]?|(RADESYS|SPECSYS|SSYSOBS|SSYSSRC|WCSNAME)[A-Z]?"
    r"|RADECSYS|ORIGIN|AUTHOR|REFERENC|TELESCOP|INSTRUME|OBSERVER|OBJECT|EXTNAME|TIMESYS)$"
)
#: The value field of a card in the usual form: a quoted string, a logical, an integer or a real (an
#: upper-case exponent: fitsverify rejects ``1e5``), or nothing, then an optional comment; printable ASCII.
_PLAIN_VALUE = re.compile(
    r" *(?:'(?:[ -&(-~]|'')*'|[TF]|[+-]?(?:\d+\.?\d*|\.\d+)(?:[ED][+-]?\d+)?)? *(?:/[ -~]*)?"
)
_PLAIN_KEYWORD = re.compile(r"[A-Z0-9_-]+ *")
_COMMENTARY = frozenset({"", "COMMENT", "HISTORY"})
#: A date as it may be written: ``YYYY-MM-DD`` with a time after ``T`` or a blank (seconds optional),
#: then ``Z``, ``UTC`` or an offset; a time alone; the old ``dd/mm/yy``.
_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<time>\d{2}:\d{2})(?P<seconds>:\d{2}(?:\.\d*)?)?)?"
    r" *(?P<zone>[Zz]|UTC|[+-]\d{2}:?\d{2})?"
)
#: A value field holding NaN or infinity (``bad``), or a number with a lower-case exponent.
_ODD_NUMBER = re.compile(
    r" *(?:(?P<bad>[+-]?(?:nan|inf(?:inity)?))|[+-]?(?:\d+\.?\d*|\.\d+)(?P<exponent>[ed])[+-]?\d+) *(?:/|$)",
    re.IGNORECASE,
)
_TIME = re.compile(r"\d{2}:\d{2}:\d{2}(?:\.\d*)?")
_OLD_DATE = re.compile(r"\d{2}/\d{2}/\d{2}")
_UTC_OFFSETS = frozenset({"Z", "z", "UTC", "+00:00", "-00:00", "+0000", "-0000"})


@dataclass
class _Changes:
    """What :func:`clean_raw_header` did, for the HISTORY lines."""

    converted: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    ascii: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        notes = []
        if self.converted:
            notes.append(f"raw cards converted to their standard type: {', '.join(self.converted)}")
        if self.rewritten:
            notes.append(f"raw cards rewritten in the standard form: {', '.join(self.rewritten)}")
        if self.ascii:
            notes.append(f"raw cards made ASCII (other characters as ?): {', '.join(self.ascii)}")
        notes.extend(self.dates)
        notes.extend(f"raw card {item} left out: not valid FITS" for item in self.dropped)
        return notes


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
    changes = _Changes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for card in raw.cards:
            if _STRUCTURAL.match(card.keyword):
                continue
            if _plain(card):
                kept.append(card)
                continue
            fixed = _fixed(card, changes)
            if fixed is not None:
                kept.append(fixed)
    kept, wcs_notes = _wcs_structure(kept)
    return kept, changes.notes() + wcs_notes


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


def read_image(card: fits.Card) -> str | None:
    """A card's text as it was read, when astropy keeps it (reading ``Card.image`` would re-verify it:
    most of the time of a header). ``None`` otherwise; the card then goes the slow way."""
    image = getattr(card, "_image", None)
    return image if isinstance(image, str) and getattr(card, "_modified", True) is False else None


def card_image(card: fits.Card) -> str:
    """The text to write for a kept card."""
    return read_image(card) or card.image


def _plain(card: fits.Card) -> bool:
    """A card that can be kept as it is without reading its value: one 80-character image in the usual
    form, whose keyword has no type the standard imposes (those are checked by :func:`_fixed`)."""
    image = read_image(card)
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
    return _standard_image(image)


def _standard_image(image: str) -> bool:
    """Whether an 80-character card image has a left-justified keyword and a value in the usual form."""
    return (
        image[8:10] == "= "
        and _PLAIN_KEYWORD.fullmatch(image[:8]) is not None
        and _PLAIN_VALUE.fullmatch(image, 10) is not None
    )


def _fixed(card: fits.Card, changes: _Changes) -> fits.Card | None:
    """The card as it can be written: itself, or a converted copy; ``None`` when it is left out (the
    change is recorded in ``changes``)."""
    keyword = card.keyword
    if keyword in _COMMENTARY:
        return _commentary(card, changes)
    image = card_image(card)
    made_ascii = False
    if len(image) == 80 and not (image.isascii() and image.isprintable()):  # a tab, a byte outside ASCII
        image = "".join(c if " " <= c <= "~" else "?" for c in image)
        card = fits.Card.fromstring(image)
        made_ascii = True
    number = _ODD_NUMBER.match(image, 10) if image[8:10] == "= " else None
    if number is not None and number["bad"]:
        changes.dropped.append(f"{keyword} ({number['bad']} is not a finite number)")
        return None
    if number is not None:  # a lower-case exponent, which fitsverify rejects: read as the number it is
        upper = (
            image[: number.start("exponent")] + number["exponent"].upper() + image[number.end("exponent") :]
        )
        card = fits.Card.fromstring(upper)
    try:
        card.verify("exception")
        value = card.value
        comment = card.comment
    except Exception:  # astropy raises VerifyError and ValueError subclasses on malformed cards
        changes.dropped.append(f"{keyword} (malformed card)")
        return None
    if keyword.startswith("DATE"):
        return _date_card(card, value, comment, changes)
    if isinstance(value, fits.card.Undefined):
        return card
    problem, fixed = _typed(keyword, value)
    if problem is not None:
        changes.dropped.append(f"{keyword} ({problem})")
        return None
    if fixed is not None:
        changes.converted.append(keyword)
        return fits.Card(keyword, fixed, _printable(comment))
    if isinstance(value, float | complex) and not np.all(np.isfinite(value)):
        changes.dropped.append(f"{keyword} ({value} is not a finite number)")
        return None
    text = value if isinstance(value, str) else None
    if made_ascii or (text is not None and _printable(text) != text) or _printable(comment) != comment:
        changes.ascii.append(keyword)
        return fits.Card(keyword, _printable(text) if text is not None else value, _printable(comment))
    odd = len(image) == 80 and not (
        image.startswith("HIERARCH ") or _standard_image(image) or _complex(image)
    )
    if number is not None or odd:
        changes.rewritten.append(keyword)
        return fits.Card(keyword, value, comment)
    return card


def _complex(image: str) -> bool:
    """A card holding a complex value such as ``(1, 2)``, which astropy reads and fitsverify accepts."""
    return image[8:10] == "= " and image[10:].lstrip().startswith("(")


def _commentary(card: fits.Card, changes: _Changes) -> fits.Card:
    """A COMMENT, HISTORY or blank-keyword card: its text made printable ASCII."""
    text = str(card.value)
    fixed = _printable(text)
    if fixed == text:
        return card
    changes.ascii.append(card.keyword or "blank-keyword card")
    return fits.Card(card.keyword, fixed)


def _typed(keyword: str, value: object) -> tuple[str | None, float | int | str | None]:
    """(problem, converted value) of a reserved keyword's value: (None, None) when it is right."""
    if _REAL.match(keyword):
        if not _is_number(value):
            number = _number(value)
            return (None, number) if number is not None else ("not a number", None)
        return (None, None) if math.isfinite(value) else (f"{value} is not a finite number", None)
    if _INTEGER.match(keyword) and not (isinstance(value, int) and not isinstance(value, bool)):
        whole = value if _is_number(value) else _number(value)
        if whole is not None and math.isfinite(whole) and float(whole).is_integer():
            return None, int(whole)
        return "not an integer", None
    if _STRING.match(keyword) and not isinstance(value, str):
        return None, str(value)
    return None, None


def _date_card(card: fits.Card, value: object, comment: str, changes: _Changes) -> fits.Card | None:
    """A DATE... card with a date CFITSIO reads (as fitsverify checks), converted or left out."""
    if not isinstance(value, str):
        shown = "no value" if isinstance(value, fits.card.Undefined) else f"{value!r} is not a date string"
        changes.dropped.append(f"{card.keyword} ({shown})")
        return None
    date = fits_date(value)
    if date is None:
        changes.dropped.append(f"{card.keyword} ({value!r} {_date_problem(value)})")
        return None
    if date == value.rstrip():
        return card if _printable(comment) == comment else fits.Card(card.keyword, value, _printable(comment))
    changes.dates.append(f"raw card {card.keyword} {value!r} written as {date!r} (an ISO date in UTC)")
    return fits.Card(card.keyword, date, _printable(comment))


def fits_date(text: str) -> str | None:
    """A date card's value as CFITSIO reads it (and fitsverify accepts), else ``None``.

    Parameters
    ----------
    text : str
        The value of a DATE... card.

    Returns
    -------
    str or None
        ``YYYY-MM-DD`` or ``YYYY-MM-DDThh:mm:ss[.s...]`` (seconds added when absent, a ``T`` for a blank,
        a trailing ``Z``, ``UTC`` or zero offset removed), a time ``hh:mm:ss[.s...]`` or the old
        ``dd/mm/yy`` as they are; ``None`` for an impossible date or time (``2026-02-30``, ``25:61:61``),
        another time zone, or any other text.

    Examples
    --------
    >>> [fits_date(t) for t in ("2026-02-28 21:05", "2026-02-28T21:05:09.5Z", "2026-02-30T25:61:61")]
    ['2026-02-28T21:05:00', '2026-02-28T21:05:09.5', None]
    """
    text = text.strip()
    if _TIME.fullmatch(text):
        return text if _valid_time(text) else None
    if _OLD_DATE.fullmatch(text):
        day, month, year = (int(part) for part in text.split("/"))
        return text if _valid_date(1900 + year, month, day) else None
    found = _ISO.fullmatch(text)
    if found is None or (found["zone"] is not None and found["zone"] not in _UTC_OFFSETS):
        return None
    year, month, day = (int(part) for part in found["date"].split("-"))
    if not _valid_date(year, month, day):
        return None
    if found["time"] is None:
        return found["date"] if found["zone"] is None else None
    time = found["time"] + (found["seconds"] or ":00")
    return f"{found['date']}T{time}" if _valid_time(time) else None


def _date_problem(text: str) -> str:
    """Why :func:`fits_date` refused ``text``, in words."""
    text = text.strip()
    found = _ISO.fullmatch(text)
    if found is not None and found["zone"] is not None and found["zone"] not in _UTC_OFFSETS:
        return "has a time zone other than UTC"
    if found is not None or _TIME.fullmatch(text) or _OLD_DATE.fullmatch(text):
        return "is an impossible date or time"
    return "is not an ISO date"


def _valid_date(year: int, month: int, day: int) -> bool:
    """A Gregorian calendar date (CFITSIO's range: years 0 to 9999)."""
    return 0 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)


def _days_in_month(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]


def _valid_time(text: str) -> bool:
    """``hh:mm:ss[.s...]`` within a day (a leap second, 60 to 61, allowed as CFITSIO allows it)."""
    hours, minutes, seconds = text.split(":")
    return int(hours) < 24 and int(minutes) < 60 and float(seconds or "0") < 61


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: object) -> float | None:
    """The finite number a string holds, else ``None``."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
