"""Overscan and trim: FITS sections, the overscan level of each line, and the trimmed image.

What ccdproc does, in ccdcal's terms (``ccdproc.subtract_overscan`` then ``ccdproc.trim_image``)::

    oscan = ccdproc.subtract_overscan(raw, fits_section=BIASSEC, median=True, overscan_axis=None)
    oscan = ccdproc.subtract_overscan(raw, fits_section=BIASSEC, median=True, overscan_axis=None,
                                      model=Polynomial1D(N))            # --overscan poly:N
    trimmed = ccdproc.trim_image(oscan, fits_section=TRIMSEC)           # else DATASEC

that is: the overscan strip is collapsed along its short axis by a median (one value per image line, or
per column for a strip along the bottom), optionally replaced by a least-squares polynomial of degree N
fitted to those values, subtracted from every pixel of its line, and the image is cut to the trim
section. Sections are FITS sections as IRAF writes them: 1-based, inclusive, x (NAXIS1) first, spaces
allowed (``[   4:  13,   1: 520]``), ``*`` for a whole axis (:func:`parse_section`). The arithmetic is
float64; the result equals ccdproc's to the last bit in median mode.

Pure functions on arrays and header values; nothing here reads files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ccdcal.errors import UsageError

#: Header keywords of the overscan strip and of the part of the image kept, in order of preference.
BIASSEC_KEYS = ("BIASSEC",)
TRIM_KEYS = ("TRIMSEC", "DATASEC")
SECTION_KEYS = (*BIASSEC_KEYS, *TRIM_KEYS)

#: ``--overscan`` values.
MODES = ("auto", "off", "median", "poly:N")

_RANGE = re.compile(r"^(\*|\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class Section:
    """A FITS image section: 1-based inclusive pixel ranges, x (NAXIS1, columns) first.

    Attributes
    ----------
    x0, x1 : int
        First and last column (1-based, inclusive).
    y0, y1 : int
        First and last line (1-based, inclusive).
    """

    x0: int
    x1: int
    y0: int
    y1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """The numpy index of the section: ``(lines, columns)``, 0-based, end exclusive."""
        return slice(self.y0 - 1, self.y1), slice(self.x0 - 1, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        """(lines, columns) of the section."""
        return self.y1 - self.y0 + 1, self.x1 - self.x0 + 1

    @property
    def text(self) -> str:
        """The section as written in headers: ``[18:1382,1:1370]``."""
        return f"[{self.x0}:{self.x1},{self.y0}:{self.y1}]"

    def covers(self, shape: tuple[int, int]) -> bool:
        """Whether the section is the whole of an image of ``shape`` (lines, columns)."""
        return (self.x0, self.y0) == (1, 1) and (self.y1, self.x1) == tuple(shape)


def parse_section(text: str, shape: tuple[int, int]) -> Section:
    """A FITS section string as a :class:`Section` within an image of ``shape``.

    Parameters
    ----------
    text : str
        ``[x0:x1,y0:y1]``: 1-based inclusive ranges, x first; spaces anywhere; ``*`` for a whole axis;
        a single number for one column or line.
    shape : tuple of int
        (NAXIS2, NAXIS1) of the image the section belongs to.

    Returns
    -------
    Section

    Raises
    ------
    ValueError
        When the text is not a 2-D section, a range is reversed or empty, or it leaves the image (the
        message quotes the text).

    Examples
    --------
    >>> parse_section("[   4:  13,   1: 520]", (520, 536)).text
    '[4:13,1:520]'
    >>> parse_section("[*,1:10]", (100, 50)).text
    '[1:50,1:10]'
    """
    compact = "".join(str(text).split())
    if not (compact.startswith("[") and compact.endswith("]")):
        raise ValueError(f"section {text!r} is not enclosed in square brackets")
    parts = compact[1:-1].split(",")
    if len(parts) != 2:
        raise ValueError(f"section {text!r} does not have two ranges (x, y)")
    ranges = []
    for part, size, axis in ((parts[0], shape[1], "x"), (parts[1], shape[0], "y")):
        found = _RANGE.match(part)
        if found is None:
            raise ValueError(f"section {text!r}: {axis} range {part!r} is not first:last")
        if found[1] == "*":
            if found[2] is not None:
                raise ValueError(f"section {text!r}: {axis} range {part!r} is not first:last")
            first, last = 1, size
        else:
            first = int(found[1])
            last = int(found[2]) if found[2] is not None else first
        if first < 1 or last < first:
            raise ValueError(f"section {text!r}: {axis} range {first}:{last} is empty or reversed")
        if last > size:
            raise ValueError(f"section {text!r}: {axis} range ends at {last}, beyond the image's {size}")
        ranges.append((first, last))
    (x0, x1), (y0, y1) = ranges
    return Section(x0, x1, y0, y1)


# -- the --overscan option ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OverscanMode:
    """The ``--overscan`` choice: ``auto``, ``off``, ``median`` or ``poly`` with its degree."""

    name: str = "auto"
    degree: int | None = None

    @property
    def text(self) -> str:
        """As given on the command line: ``auto``, ``median``, ``poly:2``."""
        return f"poly:{self.degree}" if self.name == "poly" else self.name


def parse_mode(text: str) -> OverscanMode:
    """``--overscan auto|off|median|poly:N`` as an :class:`OverscanMode`.

    Raises
    ------
    UsageError
        For any other value.
    """
    value = str(text).strip().lower()
    if value in ("auto", "off", "median"):
        return OverscanMode(value)
    found = re.fullmatch(r"poly:(\d+)", value)
    if found and int(found[1]) <= 9:
        return OverscanMode("poly", int(found[1]))
    raise UsageError(f"--overscan {text!r}: use auto, off, median or poly:N (N from 0 to 9)")


@dataclass(frozen=True)
class OverscanPlan:
    """What is done to one frame: the overscan subtracted (``method``) and the part kept (``trim``).

    Attributes
    ----------
    method : str
        ``median`` (row-wise median), ``poly:N`` (a polynomial fitted to it) or ``none``.
    biassec : Section or None
        The overscan strip (``None`` with ``none``).
    trim : Section or None
        The section kept (``None``: the whole image).
    axis : int or None
        The axis the strip is collapsed along: 1 (one value per line) or 0 (one per column).
    """

    method: str = "none"
    biassec: Section | None = None
    trim: Section | None = None
    axis: int | None = None

    @property
    def applies(self) -> bool:
        """Whether anything is done."""
        return self.method != "none" or self.trim is not None

    @property
    def degree(self) -> int | None:
        """The polynomial degree (``None``: the medians are used as they are)."""
        return int(self.method.split(":")[1]) if self.method.startswith("poly:") else None

    def signature(self) -> dict[str, Any]:
        """The plan as recorded and compared: method and sections as text."""
        return {
            "method": self.method,
            "biassec": self.biassec.text if self.biassec else None,
            "trimsec": self.trim.text if self.trim else None,
        }

    def output_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(lines, columns) of a frame of ``shape`` after the plan."""
        return self.trim.shape if self.trim is not None else shape


NO_OVERSCAN = OverscanPlan()


def resolve(mode: OverscanMode, values: Mapping[str, Any], shape: tuple[int, int]) -> OverscanPlan:
    """The plan for one frame: its header's sections under ``--overscan``.

    ``auto`` subtracts the row-wise median of BIASSEC when the header has one; ``median`` and ``poly:N``
    require it; every mode but ``off`` trims to TRIMSEC (else DATASEC) when that is smaller than the image.

    Parameters
    ----------
    mode : OverscanMode
        The option.
    values : mapping
        The frame's header values by keyword (only BIASSEC, TRIMSEC, DATASEC are read).
    shape : tuple of int
        (NAXIS2, NAXIS1).

    Returns
    -------
    OverscanPlan

    Raises
    ------
    ValueError
        A section that cannot be read or leaves the image, a strip that does not span the image, a strip
        inside the trimmed part, or ``median``/``poly:N`` without BIASSEC.
    """
    if mode.name == "off":
        return NO_OVERSCAN
    biassec = _section(values, BIASSEC_KEYS, shape)
    trim = _section(values, TRIM_KEYS, shape)
    if trim is not None and trim.covers(shape):
        trim = None
    if biassec is None:
        if mode.name != "auto":
            raise ValueError(f"--overscan {mode.text} needs a BIASSEC keyword, and the header has none")
        return OverscanPlan(trim=trim)
    axis = 0 if biassec.shape[1] > biassec.shape[0] else 1  # ccdproc's overscan_axis=None
    spans = biassec.shape[1 - axis] == shape[1 - axis]
    if not spans:
        along = "line" if axis == 1 else "column"
        raise ValueError(
            f"BIASSEC {biassec.text} does not cover every image {along} of the {shape[1]}x{shape[0]} "
            "frame: its overscan cannot be subtracted line by line (use --overscan off)"
        )
    if trim is not None and _overlap(trim, biassec):
        raise ValueError(f"BIASSEC {biassec.text} overlaps the trim section {trim.text}")
    method = "median" if mode.name in ("auto", "median") else mode.text
    return OverscanPlan(method, biassec, trim, axis)


def recorded_plan(record: Mapping[str, Any], shape: tuple[int, int]) -> OverscanPlan:
    """The plan a record of it describes (:meth:`OverscanPlan.signature` with its ``axis``, as
    ``calibrations.steps`` and ``masters.parameters`` keep it) for a frame of ``shape`` (NAXIS2, NAXIS1).

    Raises
    ------
    ValueError
        A method or section that cannot be read (the message quotes it).
    """
    method = str(record.get("method") or "none")
    if method not in ("none", "median") and re.fullmatch(r"poly:\d", method) is None:
        raise ValueError(f"overscan method {method!r} is not none, median or poly:N")
    biassec, trimsec = record.get("biassec"), record.get("trimsec")
    bias = parse_section(str(biassec), shape) if biassec else None
    trim = parse_section(str(trimsec), shape) if trimsec else None
    if method == "none" or bias is None:
        return OverscanPlan(trim=trim)
    axis = record.get("axis")
    if axis not in (0, 1):
        axis = 0 if bias.shape[1] > bias.shape[0] else 1  # as resolve chooses it
    return OverscanPlan(method, bias, trim, int(axis))


def _section(values: Mapping[str, Any], keys: tuple[str, ...], shape: tuple[int, int]) -> Section | None:
    for key in keys:
        value = values.get(key)
        if isinstance(value, str) and value.strip():
            try:
                return parse_section(value, shape)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
    return None


def _overlap(a: Section, b: Section) -> bool:
    return a.x0 <= b.x1 and b.x0 <= a.x1 and a.y0 <= b.y1 and b.y0 <= a.y1


# -- arithmetic -----------------------------------------------------------------------------------------


def overscan_levels(data: np.ndarray, plan: OverscanPlan) -> np.ndarray:
    """The overscan value of each line (``axis`` 1) or column (``axis`` 0), in float64.

    The median of the strip across its short axis; with ``poly:N``, the least-squares polynomial of
    degree N through those medians (as ``ccdproc.subtract_overscan`` with ``model=Polynomial1D(N)``,
    whose fitter solves the same linear least-squares problem).
    """
    assert plan.biassec is not None
    assert plan.axis is not None
    strip = np.asarray(data[plan.biassec.slices], dtype=np.float64)
    levels: np.ndarray = np.median(strip, axis=plan.axis)
    degree = plan.degree
    if degree is not None:
        x = np.arange(levels.size, dtype=np.float64)
        fit = np.polynomial.Polynomial.fit(x, levels, degree)
        levels = fit(x)
    return levels


def apply_overscan(data: np.ndarray, plan: OverscanPlan) -> tuple[np.ndarray, float | None]:
    """Subtract the overscan and trim: the float64 image and the median overscan level (``None``: none).

    Parameters
    ----------
    data : numpy.ndarray
        The raw image (BZERO/BSCALE applied), any numeric type.
    plan : OverscanPlan
        From :func:`resolve`.

    Returns
    -------
    image : numpy.ndarray
        float64, C-contiguous, of ``plan.output_shape(data.shape)``.
    level : float or None
        The median of the subtracted line values, for the record.
    """
    image = np.asarray(data, dtype=np.float64)
    level = None
    if plan.method != "none":
        levels = overscan_levels(image, plan)
        level = float(np.median(levels))
        image = image - (levels[:, np.newaxis] if plan.axis == 1 else levels[np.newaxis, :])
    if plan.trim is not None:
        image = image[plan.trim.slices]
    return np.ascontiguousarray(image), level


# -- records ------------------------------------------------------------------------------------------


def describe(plan: OverscanPlan, level: float | None) -> list[tuple[str, Any, str]]:
    """IRAF ccdproc's OVERSCAN and TRIM cards (text), and the machine-readable OVSCMETH/OVSCSEC/TRIMSECT.

    The last three are what a master records of how its inputs were prepared, so that a light is only
    calibrated with masters prepared the same way.
    """
    cards: list[tuple[str, Any, str]] = []
    if plan.method != "none" and plan.biassec is not None:
        how = "row-wise median" if plan.method == "median" else f"{plan.method} fit of row medians"
        if plan.axis == 0:
            how = how.replace("row", "column")
        shown = f", level {level:.6g}" if level is not None else ""
        cards.append(("OVERSCAN", f"Overscan section is {plan.biassec.text}: {how}{shown}", "ccdcal"))
    if plan.trim is not None:
        cards.append(("TRIM", f"Trim data section is {plan.trim.text}", "ccdcal"))
    cards += machine_cards(plan)
    return cards


def machine_cards(plan: OverscanPlan) -> list[tuple[str, Any, str]]:
    """OVSCMETH, OVSCSEC and TRIMSECT of a plan that applies (none otherwise)."""
    if not plan.applies:
        return []
    cards: list[tuple[str, Any, str]] = [("OVSCMETH", plan.method, "overscan subtracted: method")]
    if plan.biassec is not None:
        cards.append(("OVSCSEC", plan.biassec.text, "overscan section of the raw frames"))
    if plan.trim is not None:
        cards.append(("TRIMSECT", plan.trim.text, "section of the raw frames kept"))
    return cards


def signature_of_header(header: Mapping[str, Any]) -> dict[str, Any]:
    """What a master's header says of its inputs' preparation (:func:`machine_cards`), as
    :meth:`OverscanPlan.signature` gives it (``none`` and no sections for a master without those cards)."""
    method = header.get("OVSCMETH")
    return {
        "method": str(method) if method else "none",
        "biassec": header.get("OVSCSEC") or None,
        "trimsec": header.get("TRIMSECT") or None,
    }


def shown(signature: dict[str, Any] | None) -> str:
    """A signature (:meth:`OverscanPlan.signature`) for messages: ``median of [61:70,1:40] trim [4:56,1:40]``
    or ``none``."""
    if signature is None or (signature["method"] == "none" and not signature.get("trimsec")):
        return "none"
    parts = [str(signature["method"])]
    if signature.get("biassec"):
        parts.append(f"of {signature['biassec']}")
    if signature.get("trimsec"):
        parts.append(f"trim {signature['trimsec']}")
    return " ".join(parts)


def trimmed_header_changes(header: Any, plan: OverscanPlan) -> list[str]:
    """Update a raw header (astropy) in place for a trimmed image; return HISTORY lines for the changes.

    As IRAF ccdproc: TRIMSEC and BIASSEC no longer describe the image and are removed, DATASEC becomes the
    whole image, LTV1/LTV2 record the offset to the raw pixel grid, and the WCS reference pixels CRPIXn
    (also alternate ones, and numbers written as strings) move with the image.
    """
    if plan.trim is None:
        return []
    dx, dy = plan.trim.x0 - 1, plan.trim.y0 - 1
    lines = []
    removed = [key for key in ("TRIMSEC", "BIASSEC") if key in header]
    for key in removed:
        del header[key]
    if removed:
        lines.append(f"trimmed: {', '.join(removed)} removed (they described the raw frame)")
    ny, nx = plan.trim.shape
    if "DATASEC" in header:
        header["DATASEC"] = (f"[1:{nx},1:{ny}]", "the whole trimmed image")
    for axis, offset in (("1", dx), ("2", dy)):
        if offset:
            before = _float(header.get(f"LTV{axis}")) or 0.0
            header[f"LTV{axis}"] = (before - offset, "offset of the raw pixel grid (IRAF)")
    moved = []
    for key in list(header.keys()):
        found = re.fullmatch(r"CRPIX([12])([A-Z]?)", key)
        if found is None:
            continue
        value = _float(header[key])
        if value is None:
            continue
        header[key] = value - (dx if found[1] == "1" else dy)
        moved.append(key)
    if moved:
        lines.append(f"trimmed: {', '.join(moved)} moved by the trim offset ({dx}, {dy})")
    return lines


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None
