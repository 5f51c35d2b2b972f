"""Output file names (docs/design.md, Files), derived from header values but never able to escape their
folder."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9+\-]+")


def number_text(value: float | int | None) -> str:
    """A number as written in file names: no trailing ``.0`` (``120``, ``-20``, ``2.5``), ``NA`` if absent.

    Examples
    --------
    >>> [number_text(v) for v in (120.0, -20.0, 2.5, 0.125, None, -0.0, 5e-08)]
    ['120', '-20', '2.5', '0.125', 'NA', '0', '5e-08']
    """
    if value is None or not math.isfinite(float(value)):
        return "NA"
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    if text in ("0", "-0", ""):
        return f"{float(value):.3g}" if value else "0"
    return text


def safe_token(text: str | None) -> str:
    """A header value reduced to letters, digits, ``-`` and ``+`` (``NA`` when nothing is left).

    Examples
    --------
    >>> [safe_token(t) for t in ("Ha", "O III", "../../x", "'; DROP TABLE frames; --", None)]
    ['Ha', 'OIII', 'x', 'DROPTABLEframes--', 'NA']
    """
    cleaned = _UNSAFE.sub("", text or "")
    return cleaned[:40] or "NA"


def master_name(
    kind: str,
    *,
    xbinning: int | None,
    ybinning: int | None,
    gain: float | None,
    exptime: float | None,
    temp_key: float | None,
    filter: str | None = None,
    includes_bias: bool = False,
    token: str | None = None,
) -> str:
    """The file name of a master, e.g. ``master_dark_b2x2_g120_10s_C-20.fits``.

    Darks carry their exposure (``10s``); bias and flat carry ``sNA``. Flats add the sanitised filter;
    ``token`` (which tells the group from another whose name would coincide, see :func:`master_stems`)
    comes next; a dark that still contains the bias adds ``_withbias``.
    """
    exposure = f"{number_text(exptime)}s" if kind == "dark" else "sNA"
    parts = [
        f"master_{kind}",
        f"b{number_text(xbinning)}x{number_text(ybinning)}",
        f"g{number_text(gain)}",
        exposure,
        f"C{number_text(temp_key)}",
    ]
    if kind == "flat" and filter is not None:
        parts.append(safe_token(filter))
    if token:
        parts.append(token)
    if includes_bias:
        parts.append("withbias")
    return "_".join(parts) + ".fits"


#: Characters of an instrument's name in a master's name, and of the hash of a group's keys.
INSTRUMENT_TOKEN = 16
HASH_TOKENS = (6, 10, 16, 64)


def group_hash(kind: str, keys: Mapping[str, object], includes_bias: bool) -> str:
    """The sha256 (hex) of a master group's kind, keys and ``includes_bias``: the same group, the same hash.

    Examples
    --------
    >>> group_hash("bias", {"gain": 120.0, "offset": 30.0}, False)[:6]
    'fa42dc'
    """
    text = json.dumps([kind, sorted(keys.items()), includes_bias], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def master_stems(kind: str, keys: Mapping[str, object], *, includes_bias: bool = False) -> list[str]:
    """The names (without ``.fits``) a master group may take, in order of preference (docs/design.md, Files).

    The plain name first; then, for a group whose plain name another holds, the plain name with a short
    token of its instrument's name (``ZWOASI294MMPro``), then with ``h`` and 6, 10, 16 or 64 hex
    characters of :func:`group_hash`. The token comes after the filter, before ``_withbias``.

    Examples
    --------
    >>> keys = {"xbinning": 2, "ybinning": 2, "gain": 120.0, "temp_key": -10.0, "instrument": "ZWO ASI294MM"}
    >>> master_stems("bias", keys)[:3]  # doctest: +ELLIPSIS
    ['master_bias_b2x2_g120_sNA_C-10', 'master_bias_b2x2_g120_sNA_C-10_ZWOASI294MM', 'master_bias_..._h...']
    """

    def stem(token: str | None) -> str:
        return master_name(
            kind,
            xbinning=_int(keys.get("xbinning")),
            ybinning=_int(keys.get("ybinning")),
            gain=_float(keys.get("gain")),
            exptime=_float(keys.get("exptime")),
            temp_key=_float(keys.get("temp_key")),
            filter=str(keys["filter"]) if keys.get("filter") is not None else None,
            includes_bias=includes_bias,
            token=token,
        ).removesuffix(".fits")

    instrument = _UNSAFE.sub("", str(keys.get("instrument") or ""))[:INSTRUMENT_TOKEN]
    digest = group_hash(kind, keys, includes_bias)
    tokens = [None, instrument or None, *(f"h{digest[:n]}" for n in HASH_TOKENS)]
    return list(dict.fromkeys(stem(token) for token in tokens))


def version_name(stem: str, version: int) -> str:
    """``{stem}.fits`` for version 1 of a group, ``{stem}_v{N}.fits`` for version N."""
    return f"{stem}.fits" if version <= 1 else f"{stem}_v{version}.fits"


def _belongs(name: str, stem: str) -> bool:
    """Whether ``name`` is a version of ``stem`` (``stem.fits``, ``stem_v2.fits`` ...)."""
    return name == f"{stem}.fits" or re.fullmatch(re.escape(stem) + r"_v\d+\.fits", name) is not None


def free_master_name(
    stems: Sequence[str],
    ours: Iterable[str],
    others: Iterable[str],
    version: int,
    exists: Callable[[str], bool],
) -> str:
    """The file name of version ``version`` of a master group (docs/design.md, Files).

    Parameters
    ----------
    stems : sequence of str
        The names the group may take, from :func:`master_stems`.
    ours, others : iterable of str
        The file names, in the masters folder, of the catalog's masters of this group and of the others.
    version : int
        The new master's version (``masters.version``).
    exists : callable
        Whether a file of that name is in the folder (one the catalog may not know).

    Returns
    -------
    str
        The stem the group already uses there (it keeps its token); else the first no other group or file
        holds — a stem is held when a name of another group is a version of it, or looks like a version
        of another's (``X_v2`` for a group named ``X``), or when its ``.fits`` file exists. Then
        ``_v{version}`` from version 2, or the next free number when a file holds that name: ``_vN``
        only ever marks a newer version of the same group.

    Raises
    ------
    FileExistsError
        Every stem is held (a file of each name exists).
    """
    ours, others = set(ours), set(others)
    chosen = next((s for s in stems if any(_belongs(name, s) for name in ours)), None)
    if chosen is None:
        other_stems = {name.removesuffix(".fits") for name in others}
        chosen = next(
            (
                s
                for s in stems
                if not any(_belongs(name, s) for name in others)
                and not any(_belongs(f"{s}.fits", o) for o in other_stems)
                and not exists(f"{s}.fits")
            ),
            None,
        )
    if chosen is None:
        raise FileExistsError(f"no free name for {stems[0]}.fits: every name it may take is held")
    number = max(version, 1)
    while (name := version_name(chosen, number)) in ours | others or exists(name):
        number += 1
    return name


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def calibrated_name(raw_path: str | Path) -> str:
    """``calibrated/{raw stem}_cal.fits`` for a raw frame (compression suffixes dropped)."""
    name = os.path.basename(raw_path) if isinstance(raw_path, str) else ""
    if name in ("", ".", ".."):  # a path ending in a separator or a dot: as pathlib reads it
        name = Path(raw_path).name
    lower = name.lower()
    for suffix in (".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fit.fz", ".fits", ".fit", ".fts", ".fz"):
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}_cal.fits"


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system of ``folder`` (or of its nearest existing parent)
    allows: 255 on the usual ones."""
    for candidate in (folder, *folder.parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError):  # not there yet, or not known here
            continue
    return 255


def name_too_long(output: str, limit: int) -> str | None:
    """Why a light cannot get this output name (longer than the file system allows), else ``None``."""
    name = os.path.basename(output)
    size = len(os.fsencode(name))
    if size <= limit:
        return None
    return (
        f"its output name {name[:40]}...{name[-16:]} is {size} bytes, longer than the {limit} the file "
        f"system of {os.path.dirname(output)} allows: rename the raw file to a shorter name, ingest it "
        "again, and run process again"
    )
