r"""Text ccdcal writes into FITS cards, written so that it reads back exactly (docs/design.md, Files).

A card holds printable ASCII only, and a HISTORY card 72 characters of it. Two rules make what ccdcal
writes there readable again as it was:

- **File names** (IMCMBnnn, BIASCOR/DARKCOR/FLATCOR and the names in HISTORY lines) are percent-encoded
  where a card cannot hold them: each character outside printable ASCII as the ``%XX`` of its UTF-8
  bytes, ``%`` itself as ``%25``, and trailing blanks (which a FITS string drops) as ``%20``
  (:func:`card_name`, :func:`name_from_card`). ``M 51 it's.fits`` is written as it is,
  ``Lumière.fits`` as ``Lumi%C3%A8re.fits``.
- **HISTORY lines** are made ASCII (``°`` dropped, ``±`` as ``+/-`` ..., any other character ``?``), with
  a backslash written ``\\``. A line longer than a card is cut into pieces, after a space where there is
  one, and every piece but the last ends with a single ``\`` (:func:`history_pieces`);
  :func:`history_lines` joins consecutive HISTORY cards back into the lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

#: Characters of text a HISTORY card holds.
HISTORY_TEXT = 72

#: Printable ASCII but ``%``: what a name keeps as it is.
_NAME_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")
_ASCII = str.maketrans({"°": "", "±": "+/-", "Δ": "d", "→": "->", "×": "x", "—": "-", "–": "-"})
#: A run of backslashes at the end of a card's text.
_TRAILING_BACKSLASHES = re.compile(r"\\+$")


def card_name(name: str) -> str:
    """A file name as ccdcal writes it into a card: percent-encoded where a card cannot hold it.

    Examples
    --------
    >>> [card_name(n) for n in ("M 51 it's.fits", "Lumière.fits", "100%.fits", "a\\nb.fits")]
    ["M 51 it's.fits", 'Lumi%C3%A8re.fits', '100%25.fits', 'a%0Ab.fits']
    """
    text = quote(name, safe=_NAME_SAFE, errors="surrogateescape")
    # Trailing spaces are dropped by FITS, a trailing & read as a long string's CONTINUE mark: encoded.
    kept = text.rstrip(" &")
    return kept + "".join(_TRAILING[c] for c in text[len(kept) :])


_TRAILING = {" ": "%20", "&": "%26"}


def name_from_card(text: str) -> str:
    """The file name :func:`card_name` wrote as ``text``.

    Examples
    --------
    >>> name_from_card("Lumi%C3%A8re.fits")
    'Lumière.fits'
    """
    return unquote(text, errors="surrogateescape")


def ascii_text(text: str) -> str:
    """Text for a header card: ``-10 °C ±2`` becomes ``-10 C +/-2``; anything else non-ASCII becomes ``?``."""
    return text.translate(_ASCII).encode("ascii", "replace").decode("ascii")


def printable_text(text: str) -> str:
    """``text`` as a card holds it: :func:`ascii_text`, and control characters (a tab) as ``?``."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in ascii_text(text))


def history_pieces(line: str) -> list[str]:
    r"""The texts of the HISTORY cards of one line (each at most :data:`HISTORY_TEXT` characters).

    The line is made ASCII (:func:`ascii_text`, control characters as ``?``), its trailing blanks
    dropped and each backslash doubled; a longer line is cut after the last space that leaves a piece of
    at least half a card (else at the card's width, never between the two characters of a ``\\``), and
    each piece but the last ends with ``\``.
    """
    text = printable_text(line).rstrip().replace("\\", "\\\\")
    pieces: list[str] = []
    room = HISTORY_TEXT - 1
    while len(text) > HISTORY_TEXT:
        cut = text.rfind(" ", 0, room) + 1
        if cut < room // 2:
            cut = room
        if _backslashes_at_end(text[:cut]) % 2:
            cut -= 1
        pieces.append(text[:cut] + "\\")
        text = text[cut:]
    pieces.append(text)
    return pieces


def history_lines(texts: Iterable[str | None]) -> list[str]:
    r"""The lines :func:`history_pieces` wrote, from the texts of consecutive HISTORY cards in order.

    ``None`` stands for a card that is not HISTORY: it ends a line cut short. Backslashes written
    doubled are read single.
    """
    lines: list[str] = []
    current: str | None = None
    for text in texts:
        if text is None:
            if current is not None:
                lines.append(current.replace("\\\\", "\\"))
            current = None
            continue
        continued = _backslashes_at_end(text) % 2 == 1
        current = (current or "") + (text[:-1] if continued else text)
        if not continued:
            lines.append(current.replace("\\\\", "\\"))
            current = None
    if current is not None:
        lines.append(current.replace("\\\\", "\\"))
    return lines


def _backslashes_at_end(text: str) -> int:
    found = _TRAILING_BACKSLASHES.search(text)
    return len(found.group()) if found else 0
