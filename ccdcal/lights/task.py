"""The worker contract of ``ccdcal process``: what a worker is given for one light and what it returns.

The coordinator (:mod:`ccdcal.lights.coordinator`) turns each planned light into a :class:`FrameTask` —
paths, sha256s, masters, scales, the optional steps — and a worker
(:func:`ccdcal.lights.worker.calibrate_frame`, in this process, a forked one or on a Dask worker) returns a
:class:`FrameResult`. Both are plain, frozen, picklable values: nothing here touches the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdcal.kernels.cosmic import CosmicParams
from ccdcal.kernels.options import FLAT_LOW, FLAT_MIN
from ccdcal.kernels.overscan import OverscanPlan
from ccdcal.kernels.uncertainty import NoiseModel


@dataclass(frozen=True)
class MasterUse:
    """A master applied to a light: its catalog id, file and sha256 (checked before use)."""

    role: str
    id: int
    path: str
    sha256: str

    @property
    def name(self) -> str:
        """The file name."""
        return Path(self.path).name


@dataclass(frozen=True)
class OptionalSteps:
    """The optional steps planned for one light (``None`` fields are not applied).

    Attributes
    ----------
    overscan : OverscanPlan or None
        Overscan subtracted and image trimmed (:mod:`ccdcal.kernels.overscan`), resolved from the header.
    overscan_mode : str
        The ``--overscan`` option it was resolved under.
    noise : NoiseModel or None
        Gain and read noise: an UNCERT extension is written (:mod:`ccdcal.kernels.uncertainty`).
    cosmic : CosmicParams or None
        L.A.Cosmic is run on the calibrated light (:mod:`ccdcal.kernels.cosmic`).
    cosmic_noise : tuple of (float, float, str) or None
        Gain, read noise and their source, for L.A.Cosmic.
    bpm : MasterUse or None
        Bad-pixel mask ORed into MASK.
    """

    overscan: OverscanPlan | None = None
    overscan_mode: str = "auto"
    noise: NoiseModel | None = None
    cosmic: CosmicParams | None = None
    cosmic_noise: tuple[float, float, str] | None = None
    bpm: MasterUse | None = None

    @property
    def any(self) -> bool:
        """Whether any step applies."""
        plan = self.overscan
        return (plan is not None and plan.applies) or any(
            x is not None for x in (self.noise, self.cosmic, self.bpm)
        )


@dataclass(frozen=True)
class FrameTask:
    """Everything a worker needs to calibrate one light (no catalog access).

    Attributes
    ----------
    frame_id, path, hdu, size, mtime, sha256
        The raw light as catalogued (a file whose size or mtime differ has changed since).
    output : str
        Final path of the calibrated file (the worker writes a temporary file beside it).
    bias, dark, flat : MasterUse or None
        Masters applied.
    dark_scale : float
        ``t_light / t_dark``.
    flat_min : float
        Flat pixels below it are clamped and flagged in the MASK extension (bit 1).
    flat_low : float
        Flat pixels below it are flagged as a low response (bit 16).
    saturation : float or None
        ``--saturation``: the light's saturation level; ``None``: its header's, else its data type's
        (:func:`ccdcal.kernels.saturation.resolve_saturation`, on the raw header the worker reads). Raw
        samples at or above it are flagged (bit 8).
    notes : tuple of str
        HISTORY lines for the steps not applied, with their reasons.
    optional : OptionalSteps or None
        The optional steps (``None``: the fused path only).
    """

    frame_id: int
    path: str
    hdu: int
    size: int
    mtime: float
    sha256: str | None
    output: str
    bias: MasterUse | None = None
    dark: MasterUse | None = None
    dark_scale: float = 1.0
    flat: MasterUse | None = None
    flat_min: float = FLAT_MIN
    flat_low: float = FLAT_LOW
    saturation: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    optional: OptionalSteps | None = None


#: The reason of a light whose raw file's bytes, as a worker read them, are not the catalog's (rewritten
#: with its size and mtime kept, as ``cp -p`` or ``rsync -t`` of another version leaves it): its output is
#: not kept, and the coordinator marks the frame changed so that ingest reads it again.
RAW_CHANGED = "raw file changed since it was catalogued (its sha256 differs); run `ccdcal ingest` on it again"


@dataclass(frozen=True)
class FrameResult:
    """What a worker did: a temporary file and its sha256, or the reason the light failed.

    ``raw_sha256`` is the sha256 of the raw file's bytes as the worker read them (what the output was
    calibrated from; ``None`` when it was not read). ``details`` holds, per optional step, what was done
    (merged into ``calibrations.steps``); ``warnings`` what looked wrong (a light far below its bias).
    """

    frame_id: int
    temporary: str | None = None
    sha256: str | None = None
    error: str | None = None
    masked: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    raw_sha256: str | None = None


#: Masters (with their prepared flats and bias levels) a worker keeps in memory.
MASTERS_KEPT = 8

#: A master to preload, with the thresholds of the flat prepared from it (``None``: not a flat).
Preload = tuple[MasterUse, tuple[float, float] | None]


def masters_to_preload(tasks: Iterable[FrameTask]) -> list[Preload]:
    """The masters of ``tasks`` a worker keeps (:data:`MASTERS_KEPT` entries: a master's pixels, and its
    prepared flat or bias level), in the order the tasks first use them: a worker loads each of them
    (:func:`ccdcal.lights.pixels.load_master`) before the frames."""
    seen: dict[tuple[str, str, tuple[float, float] | None], Preload] = {}
    room = MASTERS_KEPT
    for task in tasks:
        if task.optional is not None and task.optional.any:
            continue  # overscan and trimming may change the shape the masters are checked against
        flat = (task.flat_min, task.flat_low)
        for use, thresholds in ((task.bias, None), (task.dark, None), (task.flat, flat)):
            if use is None:
                continue
            key = (use.path, use.sha256, thresholds)
            entries = 1 if use.role == "dark" else 2
            if key not in seen and entries <= room:
                seen[key] = (use, thresholds)
                room -= entries
    return list(seen.values())


def work_order(tasks: list[FrameTask]) -> list[FrameTask | Preload]:
    """``tasks`` with the masters to preload (:func:`masters_to_preload`), each just before the first task
    that uses it: worker threads read the masters of the first frames while the others are still read."""
    order: list[FrameTask | Preload] = []
    preload = {
        (use.path, use.sha256, thresholds): (use, thresholds) for use, thresholds in masters_to_preload(tasks)
    }
    for task in tasks:
        flat = (task.flat_min, task.flat_low)
        for use, thresholds in ((task.bias, None), (task.dark, None), (task.flat, flat)):
            if use is not None:
                one = preload.pop((use.path, use.sha256, thresholds), None)
                if one is not None:
                    order.append(one)
        order.append(task)
    return order
