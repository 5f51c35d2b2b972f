"""Two files compared data unit by data unit (:mod:`ccdcal.files.dataunits`), and a difference described by
the statistics of its pixels.

The recorded file and the one made again are the same result when every HDU's data unit has the same
sha256; their headers are not compared (the version that wrote them, the day's QA). When a unit differs,
its pixels are compared: how many differ, and for images of numbers the largest, mean and rms difference
of the pixels finite in both, and the pixels NaN in one file only; for a MASK, how many pixels differ in
each bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from ccdcal.files.dataunits import DataUnit, data_units, unit_data


class Difference(TypedDict, total=False):
    """How one data unit differs: ``pixels`` of ``total`` differ; for numbers, ``max_abs``, ``mean`` and
    ``rms`` of (re-made − recorded) over the pixels finite in both and ``nan`` (NaN in one file only); for
    integers, ``bits`` (pixels differing in each bit, by its value as text); ``shape`` when the shapes
    differ (recorded, re-made)."""

    pixels: int
    total: int
    max_abs: float | None
    mean: float | None
    rms: float | None
    nan: int
    bits: dict[str, int]
    shape: list[list[int]]


@dataclass
class UnitComparison:
    """One HDU in either file: the sha256 of its data unit in the recorded file and in the re-made one
    (``None``: not in that file), and how they differ."""

    name: str
    recorded: str | None
    reproduced: str | None
    difference: Difference | None = None

    @property
    def same(self) -> bool:
        """Whether the data units are identical."""
        return self.recorded is not None and self.recorded == self.reproduced

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: ``name``, ``recorded``, ``reproduced``, ``same``, ``difference``."""
        return {
            "name": self.name,
            "recorded": self.recorded,
            "reproduced": self.reproduced,
            "same": self.same,
            "difference": dict(self.difference) if self.difference is not None else None,
        }

    def text(self) -> str:
        """The difference in words (``PRIMARY: 12 of 3,072 pixels differ (max |Δ| 0.5, ...)``)."""
        if self.recorded is None:
            return f"{self.name}: in the re-made file only"
        if self.reproduced is None:
            return f"{self.name}: in the recorded file only"
        if self.same:
            return f"{self.name}: identical"
        return f"{self.name}: {difference_text(self.difference)}"


def compare_files(recorded: Path, remade: Path) -> list[UnitComparison]:
    """Every HDU of either file (by name, the recorded file's order first), compared.

    Raises
    ------
    FitsFormatError
        When either file cannot be read.
    """
    before = {unit.name: unit for unit in data_units(recorded)}
    after = {unit.name: unit for unit in data_units(remade)}
    compared = []
    for name in [*before, *(n for n in after if n not in before)]:
        old, new = before.get(name), after.get(name)
        found = UnitComparison(name, old.sha256 if old else None, new.sha256 if new else None)
        if old is not None and new is not None and not found.same:
            found.difference = difference(recorded, old, remade, new)
        compared.append(found)
    return compared


def difference(recorded: Path, old: DataUnit, remade: Path, new: DataUnit) -> Difference:
    """The statistics of how the data of ``new`` (in ``remade``) differ from ``old`` (in ``recorded``)."""
    a, b = unit_data(recorded, old.index), unit_data(remade, new.index)
    if a is None or b is None or a.shape != b.shape:
        shapes = [list(x.shape) if x is not None else [] for x in (a, b)]
        return {"shape": shapes}
    total = int(a.size)
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        x, y = a.astype(np.int64), b.astype(np.int64)
        changed = x ^ y
        bits = {str(1 << k): int(np.count_nonzero(changed & (1 << k))) for k in range(8 * a.itemsize)}
        return {
            "pixels": int(np.count_nonzero(changed)),
            "total": total,
            "bits": {bit: n for bit, n in bits.items() if n},
        }
    x, y = a.astype(np.float64), b.astype(np.float64)
    nan_x, nan_y = np.isnan(x), np.isnan(y)
    differ = (x != y) & ~(nan_x & nan_y)
    both = np.isfinite(x) & np.isfinite(y)
    delta = (y - x)[both & differ]
    found: Difference = {
        "pixels": int(np.count_nonzero(differ)),
        "total": total,
        "nan": int(np.count_nonzero(nan_x ^ nan_y)),
        "max_abs": None,
        "mean": None,
        "rms": None,
    }
    if delta.size:
        everywhere = (y - x)[both]  # the mean and rms over every pixel finite in both
        found["max_abs"] = _finite(float(np.max(np.abs(delta))))
        found["mean"] = _finite(float(np.mean(everywhere)))
        found["rms"] = _finite(float(np.sqrt(np.mean(everywhere**2))))
    return found


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def difference_text(found: Difference | None) -> str:
    """A difference in words."""
    if not found:
        return "differs"
    if "shape" in found:
        recorded, remade = ("x".join(map(str, reversed(s))) or "no data" for s in found["shape"])
        return f"differs in shape: recorded {recorded}, re-made {remade}"
    text = f"{found.get('pixels', 0):,} of {found.get('total', 0):,} pixels differ"
    parts = []
    if "bits" in found:
        parts += [f"bit {bit}: {count:,}" for bit, count in found["bits"].items()]
    if found.get("max_abs") is not None:
        parts.append(f"max |Δ| {found['max_abs']:.6g}")
    if found.get("mean") is not None:
        parts.append(f"mean Δ {found['mean']:+.6g}")
    if found.get("rms") is not None:
        parts.append(f"rms {found['rms']:.6g}")
    if found.get("nan"):
        parts.append(f"{found['nan']:,} NaN in one file only")
    return text + (f" ({', '.join(parts)})" if parts else "")
