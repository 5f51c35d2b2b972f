"""Output file names (docs/design.md, Files), derived from header values but never able to escape their
folder."""

from __future__ import annotations

import math
import os
import re
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
) -> str:
    """The file name of a master, e.g. ``master_dark_b2x2_g120_10s_C-20.fits``.

    Darks carry their exposure (``10s``); bias and flat carry ``sNA``. Flats add the sanitised filter;
    a dark that still contains the bias adds ``_withbias``.
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
    if includes_bias:
        parts.append("withbias")
    return "_".join(parts) + ".fits"


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


def versioned(folder: Path, name: str, taken: set[str] | None = None) -> Path:
    """``folder/name``, or with ``_v2``, ``_v3`` ... when that file (or a name in ``taken``) exists."""
    taken = taken or set()
    stem, suffix = name[: -len(".fits")], ".fits"
    candidate = folder / name
    version = 1
    while candidate.exists() or str(candidate) in taken:
        version += 1
        candidate = folder / f"{stem}_v{version}{suffix}"
    return candidate
