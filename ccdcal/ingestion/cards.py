"""Fast FITS header parsing: every card of a raw frame's image HDU, equal to astropy's reading.

Why this module does not use astropy
------------------------------------
The project rule is to read FITS with astropy. This module is the one exception. ``ccdcal ingest``
stores every header card of every raw frame and has to be at least 5x faster than
``ccdproc.ImageFileCollection(keywords='*')``. Almost all of that collection's time goes into
astropy's ``Card`` parsing: a lazy object per card, and several regular expressions for each value
and comment. Worker processes also import this module, so it has to import quickly. It therefore
uses only the standard library at module level, with no numpy or astropy.

The price of the exception is that we have to prove the result is the same as astropy's.
``tests/ingestion/test_cards.py`` compares every card of every real frame with
``astropy.io.fits.open(path)[hdu].header``. It also tests hand-written edge cases and runs
Hypothesis property tests on arbitrary 80-character cards.

How it works
------------
The header is decoded once, the way ``fits.open`` decodes it: ASCII, with every non-ASCII byte
replaced by ``?``. It is then cut into 80-character card images. The cards in the common form
``KEYWORD = value / comment`` are parsed with regular expressions (all the cards of a header with
one ``findall`` when the header allows it), and so are COMMENT, HISTORY and blank cards. Every
other card goes to ``_SlowCard``, a line-by-line port of the parts of ``astropy.io.fits.card.Card``
that are used when a header is read (keyword, value, comment, the CONTINUE long-string convention,
HIERARCH, record-valued keyword cards, invalid cards). The regular expressions are copied from
astropy 6-8 (BSD-3-Clause). A card that astropy cannot parse, and would raise on when its value is
read, never raises here. It is stored like commentary, as ``(keyword, text after column 8, None,
None)``.

Card tuples
-----------
``Card = (keyword, value, value_num, comment)``, where:

* ``keyword`` is ``Card.keyword`` as astropy gives it.
* ``value`` is a string's content (the ``''`` escapes undone and trailing blanks removed), or
  ``'T'``/``'F'``, or a number as written (blanks inside it removed), or a complex number as
  written, or the commentary text. It is ``None`` when the value is undefined.
* ``value_num`` is the float of an integer or real value, and ``None`` for everything else.
* ``comment`` is the comment, or ``None`` when there is none.

A string value that reads ``T`` or ``F``, or a complex value, is returned as a private subclass of
``str``. The subclass compares equal to the plain string. It lets :func:`header_values` tell such a
value apart from a boolean or a string without changing the tuple. Once the card has been through
the database the subclass is lost: ``'T'``/``'F'`` then read as booleans and a complex number reads
as a string.

Where this deliberately differs from astropy
--------------------------------------------
* When extensions follow a primary header that has no EXTEND card, ``fits.open`` adds
  ``EXTEND = T`` to it (and changes ``EXTEND = F`` to T). We store the cards that are in the file.
* A card whose value astropy cannot read keeps only its raw text. astropy would also guess a
  comment from the first '/'; we keep no comment.
* astropy renames a CONTINUE or HIERARCH card that looks record-valued (``'AXIS.1: 1'``) only after
  its value has been read. We keep the keyword astropy gives first.
* A number's text has its inner blanks removed (``'- 5'`` becomes ``'-5'``) so that ``int()`` and
  ``float()`` accept it. :func:`header_values` gives an int for a record-valued card whose number
  is an integer, where astropy gives a float.
* astropy refuses a header whose last 2880-byte block is cut short. We return the cards, and the
  caller checks the file size.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Container
from typing import Any, NamedTuple

from ccdcal.errors import FitsFormatError

Card = tuple[str, str | None, float | None, str | None]
"""(keyword, value, value_num, comment); see the module docstring."""

HeaderValue = str | float | int | bool | complex | None

__all__ = [
    "Card",
    "HeaderInfo",
    "HeaderValue",
    "cards_from_astropy",
    "find_image_header",
    "header_values",
    "parse_header",
]

BLOCK = 2880
CARD = 80
_END_CARD = b"END" + b" " * 77
_KEYWORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

# Keywords whose value is the raw text after column 8 (astropy's Card._commentary_keywords), and
# those that astropy never treats as a normal keyword (Card._special_keywords).
_COMMENTARY = frozenset({"", "COMMENT", "HISTORY", "END"})
_SPECIAL = _COMMENTARY | {"CONTINUE"}
_TF = frozenset({"T", "F"})
_DE = str.maketrans("dD", "eE")
_DE_BLANK = str.maketrans({"d": "e", "D": "E", " ": None})


class _StrValue(str):
    """A FITS string value that reads ``T`` or ``F`` (header_values keeps it a string)."""

    __slots__ = ()


class _ComplexValue(str):
    """The text of a FITS complex value, as written (header_values turns it into a complex)."""

    __slots__ = ()


class HeaderInfo(NamedTuple):
    """The image HDU of a FITS byte stream, as found by :func:`find_image_header`."""

    hdu: int
    """Index of the image HDU in the file (0 for the primary)."""
    cards: list[Card]
    """Every card of that HDU in order (END excluded), with CONTINUE long strings merged."""
    data_offset: int
    """Byte offset of the data unit in the (uncompressed) stream."""
    data_size: int
    """Size of the data unit in bytes, padded to a multiple of 2880."""
    compressed: bool
    """True when the image HDU is a tile-compressed BINTABLE (ZIMAGE = T)."""


# --------------------------------------------------------------------------------------------
# Regular expressions. The slow path uses astropy's (astropy/io/fits/card.py, BSD-3-Clause) as
# they are. The fast one matches only a subset of astropy's _value_NFSC_RE, and whenever it
# matches it gives the same value and comment (the reasoning is in _parse_cards).
# --------------------------------------------------------------------------------------------

_digits_FSC = r"(\.\d+|\d+(\.\d*)?)([DE][+-]?\d+)?"
_digits_NFSC = r"(\.\d+|\d+(\.\d*)?) *([deDE] *[+-]? *\d+)?"
_numr_FSC = r"[+-]?" + _digits_FSC
_numr_NFSC = r"[+-]? *" + _digits_NFSC
_strg = r"\'(?P<strg>([ -~]+?|\'\'|) *?)\'(?=$|/| )"
_comm_field = r"(?P<comm_field>(?P<sepr>/ *)(?P<comm>(.|\n)*))"

_STRG_COMMENT_RE = re.compile(f"({_strg})? *{_comm_field}?$")
_VALUE_NFSC_RE = re.compile(
    r"(?P<value_field> *"
    r"(?P<value>"
    rf"{_strg}|"
    r"(?P<bool>[FT])|"
    r"(?P<numr>" + _numr_NFSC + r")|"
    r"(?P<cplx>\( *"
    r"(?P<real>" + _numr_NFSC + r") *, *"
    r"(?P<imag>" + _numr_NFSC + r") *\))"
    rf")? *){_comm_field}?$"
)
_rvkc_identifier = r"[a-zA-Z_]\w*"
_rvkc_field = _rvkc_identifier + r"(\.\d+)?"
_rvkc_field_specifier_s = rf"{_rvkc_field}(\.{_rvkc_field})*"
_rvkc_field_specifier_val = rf"(?P<keyword>{_rvkc_field_specifier_s}): +(?P<val>{_numr_FSC})"
_RVKC_KEYWORD_VAL_COMM_RE = re.compile(
    rf" *\'(?P<rawval>{_rvkc_field_specifier_val})\' *(/ *(?P<comm>[ -~]*))?$"
)
_COMPLEX_PARTS_RE = re.compile(rf"\( *(?P<real>{_numr_NFSC}) *, *(?P<imag>{_numr_NFSC}) *\)$")

# Fast path, applied to columns 11-80 of an all-printable card that has '= ' in columns 9-10.
# Groups: string content (astropy's strg: the shortest non-empty content whose closing quote is
# followed by blanks and then '/' or the end, else the empty string), boolean, number without
# inner blanks, comment.
_FAST_VALUE_RE = re.compile(
    r" *(?:'(?P<s>[ -~]+?|)'(?=$|/| )"
    r"|(?P<b>[FT])"
    r"|(?P<n>[+-]?(?:\.\d+|\d+(?:\.\d*)?)(?:[DEde][+-]?\d+)?))?"
    r" *(?:/ *(?P<c>.*))?$"
)

# The whole-header fast path (_parse_cards) runs one findall over the card images of a header,
# each with its trailing blanks stripped and a newline before it, so that the regular expression
# engine, not Python, loops over the cards. Each card gives a tuple (columns 1-8, number, string
# with its quotes or boolean, comment). A card that is not 'KEYWORD = value / comment' gives
# (columns 1-8, '', '', ''); its stripped columns 1-8 may be shorter. The value and comment
# sub-patterns match exactly what _FAST_VALUE_RE matches on the whole card. They are written so
# that the engine does less work, and each change gives the same match:
# * A number, string or boolean starts with a different character, so their order is free.
# * What follows a run of blanks is never a blank, and what follows a number is a blank, '/' or
#   the end of the card, so possessive quantifiers (which never give back) find the same match.
#   '(?:x|)' is '(?:x)?', and '[0-9]' is '\d' in ASCII text.
# * A non-empty string whose first inner quote closes it (is followed by the end, '/' or a
#   blank) is also the first candidate of astropy's lazy string sub-pattern, which follows.
# * Stripping removes only blanks that the final ' *' or the comment's '.*' would match (and
#   that _parse_images strips from the comment); a string is followed by the end either way. A
#   card that is blank after its '= ' no longer matches, and goes to _parse_images.
_CARDS_RE = re.compile(
    r"\n(.{0,8}+)(?:= ++"
    r"(?:([+-]?+(?:[0-9]++\.?+[0-9]*+|\.[0-9]++)(?:[DEde][+-]?+[0-9]++|))"
    r"|('[^'\n]++'(?=$|/| )|'(?:[ -~]+?|)'(?=$|/| )|F|T)|)"
    r" *+(?:/ *+(.*+)|)$|.*)",
    re.MULTILINE,
)
_PRINTABLE = bytes(range(32, 127))
# By card count: the unpack of a header into its 80-byte card images (struct cuts them in C).
_splitters: dict[int, Callable[[bytes], tuple[Any, ...]]] = {}

_STD, _TEXT, _SLOW = 0, 1, 2


class _KeywordCache(dict[str, tuple[int, str]]):
    """_classify's answer by keyword field (columns 1-8), computed on first use."""

    def __missing__(self, field: str) -> tuple[int, str]:
        entry = self[field] = _classify(field)
        return entry


_keyword_cache = _KeywordCache()


def _classify(field: str) -> tuple[int, str]:
    """How to parse a card whose columns 1-8 are ``field``: standard, commentary text, or slow."""
    if not field.isprintable():
        return _SLOW, ""
    keyword = field.strip().upper()
    if keyword in _COMMENTARY:
        return _TEXT, keyword
    if keyword == "CONTINUE" or keyword == "HIERARCH" or not keyword or "=" in field:
        return _SLOW, ""
    return _STD, keyword


def _number(text: str) -> tuple[str, float]:
    """The stored text (inner blanks removed) and float of a number matched by astropy's regex."""
    text = text.replace(" ", "")
    return text, float(text.translate(_DE))


# --------------------------------------------------------------------------------------------
# Slow path: a port of astropy.io.fits.card.Card for reading (astropy 6-8).
# --------------------------------------------------------------------------------------------


class _Unparsable(Exception):
    """Astropy would raise reading this card's value (VerifyError)."""


class _SlowCard:
    """Keyword, value and comment of one card image (80 characters, or more with CONTINUE cards),
    following astropy's ``Card._parse_keyword``, ``_parse_value``, ``_parse_comment`` and
    ``_split`` step by step."""

    __slots__ = ("hierarch", "image", "invalid", "keyword", "rvkc_number")

    def __init__(self, image: str) -> None:
        self.image = image
        self.hierarch = False
        self.invalid = False
        self.rvkc_number: str | None = None
        self.keyword = self._parse_keyword()

    def _parse_keyword(self) -> str:
        image = self.image
        keyword = image[:8].strip()
        upper = keyword.upper()
        if upper in _SPECIAL:
            return upper
        if upper == "HIERARCH" and image[8] == " " and "=" in image:
            self.hierarch = True
            return image.split("=", 1)[0][9:].strip()
        index = image.find("= ")
        if 0 <= index <= 8:
            if index < 8:
                keyword = keyword[:index]
                upper = upper[:index]
            rest = image[index + 2 :].lstrip()
            if rest[:1] == "'" and rest.find(": ") >= 2:
                m = _RVKC_KEYWORD_VAL_COMM_RE.match(rest)
                if m:  # a record-valued keyword card ('DP1     = 'AXIS.1: 1'')
                    self.rvkc_number = m.group("val")
                    return f"{keyword.upper()}.{m.group('keyword')}"
            return upper
        self.invalid = True  # astropy warns: invalid or unrecognized non-standard card
        return keyword

    def value(self) -> tuple[str | None, float | None, type]:
        """(value text, value_num, Python type astropy gives); raises _Unparsable or ValueError."""
        if self.keyword.upper() in _COMMENTARY or self.invalid:
            return self.image[8:].rstrip(), None, str
        number = self.rvkc_number
        if number is None and (self.hierarch or self.keyword == "CONTINUE"):
            # astropy's _parse_value looks for a record-valued card again, with '= ' allowed up
            # to column 10 (it then renames the card; we keep the keyword it gave first).
            index = self.image.find("= ")
            rest = self.image[index + 2 :].lstrip()
            if 0 <= index <= 9 and rest[:1] == "'" and rest.find(": ") >= 2:
                m = _RVKC_KEYWORD_VAL_COMM_RE.match(rest)
                number = m.group("val") if m else None
        if number is not None:
            return number, float(number.translate(_DE)), float
        m = _VALUE_NFSC_RE.match(self.split()[1])
        if m is None:
            raise _Unparsable(self.keyword)
        if m.group("bool") is not None:
            return m.group("bool"), None, bool
        strg = m.group("strg")
        if strg is not None:
            return strg.replace("''", "'").rstrip(), None, str
        if m.group("numr") is not None:
            text, num = _number(m.group("numr"))
            return text, num, int if text.lstrip("+-").isdigit() else float
        if m.group("cplx") is not None:
            return m.group("cplx"), None, complex
        return None, None, type(None)

    def comment(self) -> str:
        if self.keyword in _COMMENTARY or self.invalid:
            return ""
        valuecomment = self.split()[1]
        m = _VALUE_NFSC_RE.match(valuecomment)
        if m is not None:
            comment = m.group("comm")
            return comment.rstrip() if comment else ""
        if "/" in valuecomment:
            return valuecomment.split("/", 1)[1].strip()
        return ""

    def split(self) -> tuple[str, str]:
        image = self.image
        if len(image) > CARD:
            return self._split_long()
        if self.keyword in _SPECIAL:
            keyword, valuecomment = image.split(" ", 1)
        else:
            indicator = "=" if self.hierarch else "= "
            index = image.find(indicator)
            if index < 0 or (index > 10 and image[:9] != "HIERARCH "):
                keyword, valuecomment = image[:8], image[8:]
            else:
                keyword, valuecomment = image.split(indicator, 1)
        return keyword.strip(), valuecomment.strip()

    def _split_long(self) -> tuple[str, str]:
        """astropy's Card._split for an image with CONTINUE cards (Card._itersubcards)."""
        image = self.image
        values: list[str] = []
        comments: list[str] = []
        keyword: str | None = None
        for start in range(0, len(image) // CARD * CARD, CARD):
            sub = _SlowCard(image[start : start + CARD])
            if start > 0 and sub.keyword.upper() not in _SPECIAL:
                raise _Unparsable("long card images must continue with CONTINUE cards")
            if sub.value()[2] is not str:
                raise _Unparsable("CONTINUE cards must have string values")
            kw, vc = sub.split()
            if keyword is None:
                keyword = kw
            if keyword in _COMMENTARY:
                values.append(vc)
                continue
            m = _STRG_COMMENT_RE.match(vc)
            if not m:
                return kw, vc
            value = (m.group("strg") or "").rstrip()
            if value and value[-1] == "&":
                value = value[:-1]
            values.append(value)
            comment = m.group("comm")
            if comment:
                comments.append(comment.rstrip())
        assert keyword is not None
        if keyword in _COMMENTARY:
            return keyword, "".join(values)
        return keyword, f"'{''.join(values)}' / {' '.join(comments)}"


def _mark(text: str, kind: type) -> str:
    """Wrap a value text whose type the plain text would misstate (see the module docstring)."""
    if kind is str:
        return _StrValue(text) if text in _TF else text
    if kind is complex:
        return _ComplexValue(text)
    return text


def _slow_card(image: str) -> Card:
    card = _SlowCard(image)
    try:
        text, num, kind = card.value()
        comment = card.comment()
    except (_Unparsable, ValueError):
        # astropy raises on this card's value: keep the raw text like a commentary card.
        return (card.keyword, _mark(image[8:].rstrip(), str), None, None)
    if text is not None:
        text = _mark(text, kind)
    return (card.keyword, text, num, comment or None)


# --------------------------------------------------------------------------------------------
# Header parsing
# --------------------------------------------------------------------------------------------


def _parse_cards(text: str) -> list[Card]:
    """Cards of a decoded header (a multiple of 80 characters, END excluded), like
    ``astropy.io.fits.Header.fromstring`` followed by reading every card.

    The result is always _parse_images(text). A header of printable ASCII cards is read with
    one ``findall`` of _CARDS_RE, which finds the cards that _parse_images reads with
    _FAST_VALUE_RE and gives the same value and comment. Commentary cards take their text from
    the card, as _parse_images does. Every other card is read by _parse_images on its own, and
    so is a card whose tuple does not tell its form (an undefined value with no comment). A
    header with a CONTINUE card, which joins the card before it, is read by _parse_images whole.
    """
    n = len(text)
    if not n or n % CARD or not text.isascii():
        return _parse_images(text)
    raw = text.encode("ascii")
    if raw.translate(None, _PRINTABLE):  # a character that is not printable
        return _parse_images(text)
    count = n // CARD
    split = _splitters.get(count)
    if split is None:
        if len(_splitters) > 1000:
            _splitters.clear()
        split = _splitters[count] = struct.Struct(f"{CARD}s" * count).unpack
    lines = "\n" + b"\n".join(map(bytes.rstrip, split(raw))).decode("ascii")
    cache = _keyword_cache
    if len(cache) > 20000:
        cache.clear()
    out: list[Card] = []
    for field, num, value, comment in _CARDS_RE.findall(lines):
        kind, keyword = cache[field]  # stripping the field does not change _classify's answer
        if kind:  # commentary, or a card for the slow path
            start = len(out) * CARD
            if kind == _TEXT:
                out.append((keyword, text[start + 8 : start + CARD].rstrip(), None, None))
            elif text[start : start + 8] == "CONTINUE":
                return _parse_images(text)
            else:
                out.append(_parse_images(text[start : start + CARD])[0])
        elif num:
            try:
                f = float(num)
            except ValueError:  # a D exponent
                f = float(num.translate(_DE))
            out.append((keyword, num, f, comment or None))
        elif value in _TF:
            out.append((keyword, value, None, comment or None))
        elif value:
            s = value[1:-1]
            if ": " in s:  # maybe a record-valued keyword card
                start = len(out) * CARD
                out.append(_parse_images(text[start : start + CARD])[0])
                continue
            v = s.replace("''", "'").rstrip() if "'" in s else s.rstrip()
            out.append((keyword, _StrValue(v) if v in _TF else v, None, comment or None))
        elif comment:  # undefined value
            out.append((keyword, None, None, comment))
        else:  # not of the fast form, or an undefined value with no comment ('KEY     = /')
            start = len(out) * CARD
            out.append(_parse_images(text[start : start + CARD])[0])
    return out


def _parse_images(text: str) -> list[Card]:
    """_parse_cards card by card (and the way it reads any header it does not read itself).

    The fast path is used when the card is printable ASCII and no CONTINUE card follows it.
    Cards whose keyword field is COMMENT, HISTORY or blank are commentary: the value is
    ``image[8:].rstrip()``. A card whose keyword field is a plain keyword (no '=', not special)
    with '= ' in columns 9-10 has its keyword in astropy's third branch with the value indicator
    at 8. astropy then matches _VALUE_NFSC_RE against columns 11-80 stripped. _FAST_VALUE_RE
    tries astropy's alternatives in the same order (string, boolean, number) with the same
    string sub-pattern and a blank-free number sub-pattern, and requires the rest of the card to
    be blanks and an optional '/ comment'. So whenever it matches, astropy's match has the same
    value and comment. A string with ': ' might be a record-valued keyword card and goes to the
    slow path.
    """
    n = len(text)
    images = [text[i : i + CARD] for i in range(0, n, CARD)]
    careful = "CONTINUE" in text or not text.isprintable()
    if careful:
        images = _merge_continue(images)
    cache = _keyword_cache
    if len(cache) > 20000:
        cache.clear()
    fast = _FAST_VALUE_RE.match
    out: list[Card] = []
    append = out.append
    for image in images:
        field = image[:8]
        entry = cache.get(field)
        if entry is None:
            entry = cache[field] = _classify(field)
        kind, keyword = entry
        if careful and (len(image) != CARD or not image.isprintable()):
            append(_slow_card(image))
        elif kind == _STD and image[8:10] == "= ":
            m = fast(image, 10)
            if m is None:
                append(_slow_card(image))
                continue
            s, b, num, c = m.groups()
            if s is not None:
                if ": " in s:
                    append(_slow_card(image))
                    continue
                v = s.replace("''", "'").rstrip() if "'" in s else s.rstrip()
                append((keyword, _StrValue(v) if v in _TF else v, None, c.rstrip() if c else None))
            elif num is not None:
                try:
                    f = float(num)
                except ValueError:  # a D exponent
                    f = float(num.translate(_DE))
                append((keyword, num, f, c.rstrip() if c else None))
            else:  # boolean or undefined
                append((keyword, b, None, c.rstrip() if c else None))
        elif kind == _TEXT:
            append((keyword, image[8:].rstrip(), None, None))
        else:
            append(_slow_card(image))
    return out


def _merge_continue(images: list[str]) -> list[str]:
    """Join every card with the CONTINUE cards that follow it, as Header.fromstring does."""
    out: list[str] = []
    for image in images:
        if out and image[:8] == "CONTINUE":
            out[-1] += image
        else:
            out.append(image)
    return out


def _find_end(buf: bytes, offset: int) -> int:
    """Offset of the card that ends the header starting at ``offset``, or -1 if there is none.

    Like ``fits.open``: its full parser takes the first card-aligned 'END' not followed by a
    keyword character (Header._find_end_card). Its fast parser (_BasicHeader) takes the first
    exact 'END' + 77 blanks card. It is used when every block up to and including that card is
    complete and ASCII, so a malformed 'END ...' card before a real END card is just a card.
    """
    size = len(buf)
    # The first exact END card (q), and before it the first card that starts with 'END' and a
    # byte that is not a keyword character (end), found from the cards' first bytes.
    pos = offset
    while (q := buf.find(_END_CARD, pos)) >= 0 and (q - offset) % CARD:
        pos = q - (q - offset) % CARD + CARD
    end = -1
    if q >= 0:
        starts = bytes(buf[offset:q:CARD])
        k = starts.find(b"E")
        while k >= 0 and end < 0:
            p = offset + k * CARD
            if buf[p + 1 : p + 3] == b"ND" and buf[p + 3] not in _KEYWORD_BYTES:
                end = p
            k = starts.find(b"E", k + 1)
        if end < 0:
            return q
    else:  # no exact END card: the first card-aligned 'END' not followed by a keyword character
        pos = offset
        while True:
            p = buf.find(b"END", pos)
            if p < 0:
                return -1
            rel = (p - offset) % CARD
            if rel:
                pos = p - rel + CARD
                continue
            if p + 3 >= size or buf[p + 3] not in _KEYWORD_BYTES:
                return p
            pos = p + CARD
    # A malformed END card before the exact one: does the exact one satisfy the fast parser?
    block_end = offset + ((q - offset) // BLOCK + 1) * BLOCK
    if block_end <= size and buf[offset:block_end].isascii():
        return q
    return end


def _decode(raw: bytes) -> str:
    """Decode header bytes as fits.open does: ASCII, each other byte becoming '?'."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.decode("ascii", "replace").replace("\ufffd", "?")


def parse_header(buf: bytes, offset: int = 0) -> tuple[list[Card], int]:
    """Parse card images from buf[offset:] up to END; return the cards and the offset just past
    the header's last 2880-byte block.

    The returned offset may be past the end of ``buf`` when the file stops inside the header's
    last block; the caller compares it with the file size.
    """
    size = len(buf)
    if offset >= size:
        if size == 0:
            raise FitsFormatError("empty file")
        raise FitsFormatError(f"truncated file (no header at byte {offset}, the file has {size})")
    end = _find_end(buf, offset)
    if end < 0:
        raise FitsFormatError("truncated header (no END card)")
    cards = _parse_cards(_decode(bytes(buf[offset:end])))
    blocks = (end + CARD - offset + BLOCK - 1) // BLOCK
    return cards, offset + blocks * BLOCK


def _structural(values: dict[str, HeaderValue], keyword: str, default: int | None) -> HeaderValue:
    """A structural keyword's value. A card that a CONTINUE card follows is merged with it and
    unreadable (astropy raises), but fits.open sizes the data from the first card alone
    (_BasicHeader), and so do we: its text starts with that card's columns 9-80."""
    value = values.get(keyword, default)
    if isinstance(value, str) and value[:1] == "=" and len(value) > 72 and len(keyword) <= 8:
        value = header_values(_parse_cards(f"{keyword:8}{value[:72]}")).get(keyword)
    return value


def _int_keyword(values: dict[str, HeaderValue], keyword: str, where: str, default: int = -1) -> int:
    value = _structural(values, keyword, default)
    if type(value) is not int or value < 0:
        state = "missing" if keyword not in values else f"{value!r}, not a non-negative integer"
        raise FitsFormatError(f"{where}: {keyword} is {state}")
    return value


def _data_size(values: dict[str, HeaderValue], where: str) -> tuple[int, bool]:
    """Padded size of the data unit and whether it holds an image (all NAXISn > 0)."""
    naxis = _int_keyword(values, "NAXIS", where)
    if naxis == 0:
        return 0, False
    if naxis > 999:
        raise FitsFormatError(f"{where}: NAXIS is {naxis}, more than 999")
    bitpix = _structural(values, "BITPIX", None)
    if type(bitpix) is not int or bitpix not in (8, 16, 32, 64, -32, -64):
        state = "missing" if bitpix is None else f"{bitpix!r}"
        raise FitsFormatError(f"{where}: BITPIX is {state}, not 8, 16, 32, 64, -32 or -64")
    axes = [_int_keyword(values, f"NAXIS{i}", where) for i in range(1, naxis + 1)]
    groups = axes[0] == 0 and values.get("GROUPS") is True  # random groups: NAXIS1 = 0
    count = 1
    for axis in axes[1:] if groups else axes:
        count *= axis
    gcount = _int_keyword(values, "GCOUNT", where, 1)
    pcount = _int_keyword(values, "PCOUNT", where, 0)
    if count == 0 and not groups:
        nbytes = abs(bitpix) * gcount * pcount // 8
    else:
        nbytes = abs(bitpix) * gcount * (pcount + count) // 8
    padded = (nbytes + BLOCK - 1) // BLOCK * BLOCK
    return padded, count > 0 and not groups


def find_image_header(buf: bytes) -> HeaderInfo:
    """Walk HDUs from the start of an uncompressed FITS byte stream and return the first image
    HDU: the primary when NAXIS > 0, else the first XTENSION='IMAGE' with NAXIS > 0, else the
    first BINTABLE with ZIMAGE = T (compressed=True; the caller then reads that header with
    astropy).

    An HDU counts as an image only when every NAXISn is positive (as ccdproc's reader needs data).
    A missing or short data unit is not an error here: the caller compares the file size with
    ``data_offset + data_size``.
    """
    if len(buf) == 0:
        raise FitsFormatError("empty file")
    if bytes(buf[:6]).upper() != b"SIMPLE":
        raise FitsFormatError("not a FITS file (does not start with SIMPLE =)")
    cards, end = parse_header(buf, 0)
    if not cards or cards[0][0] != "SIMPLE":
        raise FitsFormatError("not a FITS file (does not start with SIMPLE =)")
    size, is_image = _data_size(header_values(cards, STRUCTURAL_KEYS), "primary HDU")
    if is_image:
        return HeaderInfo(0, cards, end, size, False)
    compressed: HeaderInfo | None = None
    pos = end + size
    index = 1
    try:
        while pos < len(buf) and bytes(buf[pos : pos + 8]) == b"XTENSION":
            cards, end = parse_header(buf, pos)
            values = header_values(cards, STRUCTURAL_KEYS)
            size, is_image = _data_size(values, f"extension {index}")
            xtension = values.get("XTENSION")
            if is_image and xtension == "IMAGE":
                return HeaderInfo(index, cards, end, size, False)
            if compressed is None and xtension == "BINTABLE" and values.get("ZIMAGE") is True:
                compressed = HeaderInfo(index, cards, end, size, True)
            pos = end + size
            index += 1
    except FitsFormatError:
        if compressed is None:
            raise
    if compressed is not None:
        return compressed
    raise FitsFormatError("no image HDU (primary is empty and no IMAGE extension follows)")


# --------------------------------------------------------------------------------------------
# Typed values
# --------------------------------------------------------------------------------------------


def _complex(text: str) -> complex:
    m = _COMPLEX_PARTS_RE.match(text)
    if m is None:
        raise ValueError(f"not a FITS complex value: {text!r}")
    parts = []
    for part in (m.group("real"), m.group("imag")):
        digits = part.translate(_DE_BLANK)
        parts.append(int(digits) if digits.lstrip("+-").isdigit() else float(digits))
    return parts[0] + parts[1] * 1j


#: The keywords that describe an HDU's structure (enough for :func:`find_image_header`).
STRUCTURAL_KEYS = frozenset(
    {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS", "ZIMAGE", "EXTEND"}
    | {f"NAXIS{axis}" for axis in range(1, 1000)}
)


def header_values(cards: list[Card], keys: Container[str] | None = None) -> dict[str, HeaderValue]:
    """Typed values by keyword, first occurrence wins (as astropy's header[kw]): str for strings,
    bool for T/F, int for integers, float for reals, complex for complex values, None for
    undefined; commentary cards (COMMENT, HISTORY, blank keyword) excluded.

    A card that astropy cannot parse comes back as its raw text (astropy would raise).
    With ``keys``, only those keywords are converted (ingest needs a few dozen of ~200).
    """
    out: dict[str, HeaderValue] = {}
    if keys is not None:
        cards = [card for card in cards if card[0] in keys]
    for keyword, value, num, _comment in cards:
        if keyword in out or keyword.upper() in _COMMENTARY:
            continue
        typed: HeaderValue
        if value is None:
            typed = None
        elif num is not None:
            typed = int(value) if value.lstrip("+-").isdigit() else num
        elif type(value) is _StrValue:
            typed = str(value)
        elif type(value) is _ComplexValue:
            try:
                typed = _complex(value)
            except ValueError:
                typed = str(value)
        elif value in _TF:
            typed = value == "T"
        else:
            typed = value
        out[keyword] = typed
    return out


# --------------------------------------------------------------------------------------------
# From astropy (tile-compressed images are read with astropy)
# --------------------------------------------------------------------------------------------


def _format_float(value: Any) -> str:
    """astropy.io.fits.card._format_float: how astropy writes a float it formats itself."""
    text = str(value).replace("e", "E")
    if len(text) > 20:
        idx = text.find("E")
        text = text[:20] if idx < 0 else text[: 20 - (len(text) - idx)] + text[idx:]
    return text


def _astropy_number_text(card: Any, value: Any) -> str:
    """The value text of an astropy numeric card: as written when it was read from a file, else
    as astropy writes it (numpy scalars included)."""
    if card.field_specifier is not None:  # record-valued keyword card: 'AXIS.1: 1'
        return str(card.rawvalue).split(":", 1)[1].strip()
    written = getattr(card, "_valuestring", None)
    if written:
        return str(written).replace(" ", "")
    if isinstance(value, complex) or type(value).__name__.startswith("complex"):
        return f"({_format_float(value.real)}, {_format_float(value.imag)})"
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return _format_float(value)
    return str(int(value))


def cards_from_astropy(header: Any) -> list[Card]:
    """The same Card tuples from an astropy Header (used for tile-compressed files, which are
    read with astropy). Values, keywords and comments come from astropy; astropy is imported
    only when this is called.
    """
    # Imported here to keep start-up fast: the reader processes load astropy only for the cards the parser
    # hands over.
    from astropy.io.fits.card import Undefined
    from astropy.io.fits.verify import VerifyError

    out: list[Card] = []
    for card in header.cards:
        keyword = card.keyword
        try:
            value = card.value
            comment = card.comment or None
        except (VerifyError, ValueError):
            image = getattr(card, "_image", None) or ""
            out.append((keyword, _mark(image[8:].rstrip(), str), None, None))
            continue
        if keyword.upper() in _COMMENTARY:
            out.append((keyword, str(value), None, None))
        elif isinstance(value, Undefined):
            out.append((keyword, None, None, comment))
        elif isinstance(value, str):
            out.append((keyword, _mark(value, str), None, comment))
        elif isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):
            out.append((keyword, "T" if value else "F", None, comment))
        elif isinstance(value, complex) or type(value).__name__.startswith("complex"):
            text = _astropy_number_text(card, value)
            out.append((keyword, _ComplexValue(text), None, comment))
        else:
            # value_num from the text, as the parser does (a float32 0.1 is written '0.1')
            text = _astropy_number_text(card, value)
            out.append((keyword, text, float(text.translate(_DE)), comment))
    return out
