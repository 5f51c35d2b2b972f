"""Header dialects → the normalised ``frames`` columns.

Capture programs (N.I.N.A., SharpCap, MaxIm DL, CCDSoft, Ekos/INDI, observatory systems) spell the same
facts differently. Which keywords are consulted, and in which order, is data (the tables below), not code
paths; the functions here are pure and import nothing heavy, because worker processes run them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import PurePath
from typing import Any

HeaderValue = str | float | int | bool | complex | None

#: Keywords holding the frame type, in order of preference.
IMAGETYP_KEYS = ("IMAGETYP", "IMAGE-TYP", "IMGTYPE", "OBSTYPE", "FRAME", "FRAMETYP")

#: Normalised type words (lower case; spaces, hyphens, underscores removed; a trailing
#: ``frame``/``image``/``field`` dropped) → frame kind. Also used for folder names.
TYPE_WORDS: Mapping[str, str] = {
    **dict.fromkeys(("bias", "zero", "biases", "zeros", "offset", "offsets"), "bias"),
    **dict.fromkeys(
        ("dark", "darks", "darkflat", "darkflats", "flatdark", "flatdarks", "darkcurrent"),
        "dark",
    ),
    **dict.fromkeys(
        (
            "flat",
            "flats",
            "skyflat",
            "skyflats",
            "domeflat",
            "domeflats",
            "twilightflat",
            "twilightflats",
            "twiflat",
            "twiflats",
            "screenflat",
            "lampflat",
            "flatfields",
        ),
        "flat",
    ),
    **dict.fromkeys(
        ("light", "lights", "object", "objects", "science", "sci", "target"),
        "light",
    ),
}

#: Frame column → header keywords consulted in order (the first one present wins).
KEYWORDS: Mapping[str, tuple[str, ...]] = {
    "exptime": ("EXPTIME", "EXPOSURE"),
    "ccd_temp": ("CCD-TEMP", "CCD_TEMP", "TEMPERAT", "DET-TEMP", "DETTEMP"),
    "set_temp": ("SET-TEMP", "SETTEMP", "SET_TEMP"),
    "gain": ("GAIN",),
    "offset": ("OFFSET", "BLKLEVEL"),
    "filter": ("FILTER", "FILT", "FILTNAME", "FILTER1"),
    "instrument": ("INSTRUME",),
    "readout_mode": ("READOUTM", "READMODE", "READOUT"),
}

#: Keywords completing a date-only DATE-OBS with the time of day, in order of preference.
TIME_KEYS = ("UTCSTART", "UTC-OBS", "UT", "TIME-OBS", "UTSTART", "UT-START", "UTC")

#: A temperature above this is taken to be in kelvin (no cooled camera runs at +150 °C).
KELVIN_THRESHOLD = 150.0

#: Every keyword :func:`normalise` may consult (the reader converts only these values).
CONSULTED_KEYS = frozenset(
    {*IMAGETYP_KEYS, *TIME_KEYS, "DATE-OBS", "DATE_OBS", "XBINNING", "YBINNING", "BINNING", "CCDSUM"}
    | {"NAXIS1", "NAXIS2", "BITPIX"}
    | {key for keys in KEYWORDS.values() for key in keys}
)

_TYPE_STRIP = re.compile(r"[\s_\-]+")
_TYPE_SUFFIXES = ("frame", "frames", "image", "images", "field", "fields")
_BINNING = re.compile(r"^\s*(\d+)\s*[xX*,\s]\s*(\d+)\s*$")
_DATE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d+))?)?)?\s*(?:Z|UTC|[+-]00:?00)?\s*$"
)
_OLD_DATE = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{2})\s*$")
_TIME = re.compile(r"^\s*(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d+))?)?\s*$")
_PLACEHOLDERS = frozenset({"", "none", "null", "nan", "n/a", "na", "unknown", "-"})


def type_word(text: str) -> str:
    """Reduce a frame-type text to its comparison form: ``'Bias Frame'`` → ``'bias'``."""
    word = _TYPE_STRIP.sub("", text.strip().lower())
    for suffix in _TYPE_SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return word[: -len(suffix)]
    return word


def normalise_imagetyp(text: str | None) -> str | None:
    """The frame kind (``bias``/``dark``/``flat``/``light``) a header type value means, or ``None``.

    Examples
    --------
    >>> [normalise_imagetyp(t) for t in ("Bias Frame", "zero", "Flat Field", "DarkFlat", "object")]
    ['bias', 'bias', 'flat', 'dark', 'light']
    """
    if not text:
        return None
    word = type_word(text)
    return TYPE_WORDS.get(word) or TYPE_WORDS.get(_TYPE_STRIP.sub("", text.strip().lower()))


def type_from_folders(folders: Iterable[str]) -> str | None:
    """The frame kind named by the nearest folder that names one (``BIAS/``, ``darks/``, ``Flat/`` ...).

    Parameters
    ----------
    folders
        Folder names from the file's own folder outwards, up to the ingest root.
    """
    for name in folders:
        kind = normalise_imagetyp(name)
        if kind is not None:
            return kind
    return None


def folders_between(path: PurePath, root: PurePath) -> list[str]:
    """Names of the folders from ``path``'s parent up to and including ``root``, nearest first."""
    names = []
    for parent in path.parents:
        names.append(parent.name)
        if parent == root:
            break
    return names


def _first(values: Mapping[str, HeaderValue], keys: Iterable[str]) -> HeaderValue:
    for key in keys:
        if key in values and values[key] is not None:
            return values[key]
    return None


def as_float(value: HeaderValue) -> float | None:
    """A header value as a finite float: numbers and numeric strings (``'40      '``); else ``None``."""
    if value is None or isinstance(value, (bool, complex)):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = value.strip().replace("D", "E").replace("d", "e")
        if text.lower() in _PLACEHOLDERS:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
    return number if math.isfinite(number) else None


def as_text(value: HeaderValue) -> str | None:
    """A header value as trimmed text, ``None`` when empty or a placeholder such as ``'None'``."""
    if value is None or isinstance(value, bool):
        return None
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
    return None if text.lower() in _PLACEHOLDERS else text


def as_int(value: HeaderValue) -> int | None:
    """A header value as an integer when it is a whole number."""
    number = as_float(value)
    return int(number) if number is not None and number.is_integer() else None


def celsius(value: HeaderValue) -> float | None:
    """A temperature in °C; values above 150 are taken to be kelvin and converted."""
    number = as_float(value)
    if number is None:
        return None
    return round(number - 273.15, 6) if number > KELVIN_THRESHOLD else number


def binning(values: Mapping[str, HeaderValue]) -> tuple[int | None, int | None]:
    """(x, y) binning from XBINNING/YBINNING, else BINNING ``'2x2'``, else CCDSUM ``'2 2'``."""
    x, y = as_int(values.get("XBINNING")), as_int(values.get("YBINNING"))
    if x is not None or y is not None:
        return x if x is not None else y, y if y is not None else x
    for key in ("BINNING", "CCDSUM"):
        value = values.get(key)
        if isinstance(value, str):
            match = _BINNING.match(value)
            if match:
                return int(match.group(1)), int(match.group(2))
        elif (number := as_int(value)) is not None:
            return number, number
    return None, None


def _time_of_day(text: str) -> dt.time | None:
    match = _TIME.match(text)
    if not match:
        return None
    hour, minute, second, fraction = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        return dt.time(int(hour), int(minute), int(second or 0), micro)
    except ValueError:
        return None


def parse_date_obs(values: Mapping[str, HeaderValue]) -> dt.datetime | None:
    """DATE-OBS as a naive UTC datetime, completing a date-only value from UTCSTART/UT/TIME-OBS."""
    value = values.get("DATE-OBS") or values.get("DATE_OBS")
    if not isinstance(value, str):
        return None
    match = _DATE.match(value)
    if match:
        year, month, day, hour, minute, second, fraction = match.groups()
        try:
            date = dt.date(int(year), int(month), int(day))
        except ValueError:
            return None
        if hour is not None:
            clock = _time_of_day(f"{hour}:{minute}:{second or 0}.{fraction or 0}")
            return dt.datetime.combine(date, clock) if clock else None
    else:
        old = _OLD_DATE.match(value)  # the pre-1999 FITS form dd/mm/yy
        if not old:
            return None
        day, month, year2 = (int(g) for g in old.groups())
        try:
            date = dt.date(1900 + year2, month, day)
        except ValueError:
            return None
    for key in TIME_KEYS:
        text = values.get(key)
        if isinstance(text, str) and (clock := _time_of_day(text)) is not None:
            return dt.datetime.combine(date, clock)
    return dt.datetime.combine(date, dt.time())


def exposure(values: Mapping[str, HeaderValue]) -> float | None:
    """The exposure in seconds: the first of EXPTIME, EXPOSURE that is a number of zero or more.

    ``EXPTIME = 'abc'`` or ``-60`` is no exposure (the next keyword is tried): a light without one is
    not matched to a dark, and the reason says so.
    """
    for key in KEYWORDS["exptime"]:
        number = as_float(values.get(key))
        if number is not None and number >= 0:
            return number
    return None


def temp_key(set_temp: float | None, ccd_temp: float | None) -> float | None:
    """The temperature grouping key: SET-TEMP when present, else CCD-TEMP rounded to a degree."""
    if set_temp is not None:
        return set_temp
    if ccd_temp is not None:
        return float(math.floor(ccd_temp + 0.5))
    return None


def normalise(values: Mapping[str, HeaderValue], folder_type: str | None = None) -> dict[str, Any]:
    """The normalised ``frames`` columns of one image header.

    Parameters
    ----------
    values
        Header values by keyword (first occurrence), as :func:`ccdcal.ingestion.cards.header_values` gives.
    folder_type
        The kind named by the file's folders, used when the header names none.

    Returns
    -------
    dict
        Column name → value for the ``frames`` table.
    """
    header_type = as_text(_first(values, IMAGETYP_KEYS))
    kind = normalise_imagetyp(header_type)
    source = "header" if kind else ("folder" if folder_type else None)
    xbin, ybin = binning(values)
    ccd_temp = celsius(_first(values, KEYWORDS["ccd_temp"]))
    set_temp = celsius(_first(values, KEYWORDS["set_temp"]))
    return {
        "imagetyp": kind or folder_type,
        "imagetyp_header": header_type[:80] if header_type else None,
        "imagetyp_source": source,
        "exptime": exposure(values),
        "ccd_temp": ccd_temp,
        "set_temp": set_temp,
        "temp_key": temp_key(set_temp, ccd_temp),
        "xbinning": xbin,
        "ybinning": ybin,
        "gain": as_float(_first(values, KEYWORDS["gain"])),
        "offset": as_float(_first(values, KEYWORDS["offset"])),
        "filter": _text80(_first(values, KEYWORDS["filter"])),
        "instrument": _text80(_first(values, KEYWORDS["instrument"])),
        "readout_mode": _text80(_first(values, KEYWORDS["readout_mode"])),
        "naxis1": as_int(values.get("NAXIS1")),
        "naxis2": as_int(values.get("NAXIS2")),
        "bitpix": as_int(values.get("BITPIX")),
        "date_obs": parse_date_obs(values),
    }


def _text80(value: HeaderValue) -> str | None:
    text = as_text(value)
    return text[:80] if text else None


# -- --type-from-name ------------------------------------------------------------------------------------

#: A ``--type-from-name`` rule: a file-name pattern (shell wildcards, case-insensitive) and the kind.
TypeRule = tuple[str, str]


def parse_type_rule(text: str, kinds: Iterable[str] = ("bias", "dark", "flat", "light")) -> TypeRule:
    """``'bias_*=bias'`` as a rule (pattern, kind).

    Raises
    ------
    ValueError
        When the text is not ``PATTERN=KIND`` with a known kind (the message names the text).

    Examples
    --------
    >>> parse_type_rule("IC310_*.fits=Light")
    ('IC310_*.fits', 'light')
    """
    pattern, sep, kind = text.rpartition("=")
    kind = kind.strip().lower()
    allowed = tuple(kinds)
    if not sep or not pattern.strip() or kind not in allowed:
        raise ValueError(
            f"--type-from-name {text!r}: give PATTERN=KIND, with KIND one of {', '.join(allowed)} "
            "(e.g. 'flats*=flat')"
        )
    return pattern.strip(), kind


def type_from_name(name: str, rules: Iterable[TypeRule]) -> str | None:
    """The kind of the first rule whose pattern matches the file name (case-insensitive), else ``None``.

    Examples
    --------
    >>> type_from_name("IC310_1.fits", [("bias_*", "bias"), ("ic310_*", "light")])
    'light'
    """

    lowered = name.lower()
    for pattern, kind in rules:
        if fnmatchcase(lowered, pattern.lower()):
            return kind
    return None
