r"""Paths as text: the catalog stores every path in a text column, so a path ccdcal records must be valid
UTF-8 (docs/design.md, Ingest).

On Linux a file name is bytes. Python gives a name that is not valid UTF-8 (a latin-1 ``é`` an old system
wrote) as text holding surrogates (``os.fsdecode``), which no database text column takes and no terminal
prints. ccdcal does not catalogue such a file: it is rejected alone, named with its undecodable bytes
escaped (``Caf\xe9.fits``), with the fix (rename it); a folder given as an option must be text too.
"""

from __future__ import annotations

import os


def is_text(path: str | os.PathLike[str]) -> bool:
    """Whether a path is valid UTF-8 (no byte that :func:`os.fsdecode` had to escape)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str | os.PathLike[str]) -> str:
    r"""A path as it can be printed and stored: its undecodable bytes written ``\xNN``.

    Examples
    --------
    >>> shown(os.fsdecode(b"/data/Caf\xe9.fits"))
    '/data/Caf\\xe9.fits'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def not_text_reason(path: str | os.PathLike[str], *, folder: bool = False) -> str:
    r"""Why a path that is not text cannot be catalogued, naming the file or folder at fault and the fix
    (``folder``: the path itself is a folder).

    Examples
    --------
    >>> not_text_reason(os.fsdecode(b"/data/Caf\xe9/Light_001.fits"))[:62]
    'the folder name Caf\\xe9 is not valid UTF-8 (byte \\xe9, perhaps'
    """
    parts = os.fspath(path).split(os.sep)
    index = next((i for i, part in enumerate(parts) if not is_text(part)), len(parts) - 1)
    kind = "file" if index == len(parts) - 1 and not folder else "folder"
    byte = _first_bad_byte(os.fsencode(parts[index]))
    return (
        f"the {kind} name {shown(parts[index])} is not valid UTF-8 (byte \\x{byte:02x}, perhaps latin-1): "
        f"the catalog stores paths as text; rename the {kind} "
        "(for example with convmv -f latin1 -t utf8 --notest)"
    )


def _first_bad_byte(raw: bytes) -> int:
    """The first byte of ``raw`` that does not decode as UTF-8."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw[exc.start]
    return 0
