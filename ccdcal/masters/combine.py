"""A master's combine as a job that runs here or, band of rows by band of rows, on Dask workers.

A :class:`CombineJob` holds everything the combine of a group needs, and nothing large: the files to
combine, the clipping parameters, the per-frame scale, and the masters subtracted from every frame as
:class:`MasterFile` references (path and sha256) rather than as images. Whoever runs the job reads from
those masters only the rows it combines, after checking that the file still has the catalog's sha256.

- Without ``--scheduler`` the job runs here on the whole image (:meth:`CombineJob.combine`), exactly as
  before: :func:`ccdcal.kernels.combine.combine_files` in row blocks within ``--mem-limit``.
- With ``--scheduler`` (:func:`run_combine`) the image is cut into bands of rows
  (:func:`ccdcal.kernels.bands.plan_bands`: a few per worker, each within ``--mem-limit``), each band is a
  task (:func:`combine_band`: the same :meth:`CombineJob.combine` on ``rows=band``) and the coordinator puts
  the bands together (:class:`ccdcal.kernels.bands.Stitcher`). Each pixel is combined on its own samples,
  so the result is the local one bit for bit. A flat's per-frame levels (the median each flat is divided
  by) are computed by the workers too (:func:`flat_levels`), in chunks of frames.

The coordinator then writes the master file and its catalog rows (:mod:`ccdcal.masters.build`). A worker that
dies is survived as for the calibration (:mod:`ccdcal.runtime.cluster`): its bands are computed again.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from astropy.io import fits

from ccdcal.errors import CcdcalError, FitsFormatError
from ccdcal.files.fitsio import read_image, sha256_file
from ccdcal.kernels.bands import Stitcher, plan_bands
from ccdcal.kernels.combine import ClipParams, CombineResult, combine_files
from ccdcal.kernels.fitsblocks import FitsStack
from ccdcal.kernels.flat import finite_median, flat_level, normalise_to_median, precalibration_offset
from ccdcal.kernels.framestats import FrameMeasure
from ccdcal.kernels.prepare import Prepared, prepared_inputs
from ccdcal.runtime.cluster import Cluster, ClusterOnDemand

if TYPE_CHECKING:  # for the types only: the Dask workers that import this module need no catalog
    from ccdcal.catalog.models import Master
    from ccdcal.masters.groups import GroupPlan, MasterOptions

__all__ = [
    "CombineJob",
    "Combined",
    "FlatMeasure",
    "MasterFile",
    "combine_band",
    "combine_group",
    "flat_levels",
    "flat_measures",
    "measure_flats",
    "run_combine",
    "run_flat_levels",
    "run_flat_measures",
]

_T = TypeVar("_T")

#: Bands of rows per worker: enough to balance uneven workers and to lose little when one dies.
BANDS_PER_WORKER = 4
#: Chunks of flats per worker for their levels.
LEVEL_CHUNKS_PER_WORKER = 2

# Files whose sha256 this process checked: path -> (sha256, size, mtime_ns) when checked.
_CHECKED: dict[str, tuple[str, int, int]] = {}


def check_sha256(path: Path, sha256: str) -> None:
    """Raise unless the file's sha256 is ``sha256`` (hashed once a process while size and mtime hold).

    Raises
    ------
    FitsFormatError
        When the file is missing or its content changed since the catalog recorded it.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FitsFormatError("file not found (run `ccdcal audit`)", str(path)) from None
    stamp = (sha256, stat.st_size, stat.st_mtime_ns)
    if _CHECKED.get(str(path)) == stamp:
        return
    found = sha256_file(path)
    if found != sha256:
        raise FitsFormatError(
            f"changed since the catalog recorded it (sha256 {found[:12]}…, catalog {sha256[:12]}…): "
            "restore it, or `ccdcal mark-bad` it and build the masters again",
            str(path),
        )
    _CHECKED[str(path)] = stamp


@dataclass(frozen=True)
class MasterFile:
    """A master subtracted from a combine's inputs: its file and the sha256 the catalog holds for it."""

    path: str
    sha256: str

    @classmethod
    def of(cls, master: Master | None) -> MasterFile | None:
        """The reference to a catalog master (``None`` for ``None``)."""
        return None if master is None else cls(master.path, master.sha256)

    def read(self, rows: tuple[int, int] | None = None) -> np.ndarray:
        """The master's pixels in float64 (only ``rows[0]:rows[1]`` when given), after a sha256 check.

        Raises
        ------
        FitsFormatError
            When the file is missing, changed or unreadable.
        """
        path = Path(self.path)
        check_sha256(path, self.sha256)
        if rows is None:
            return read_image(path, 0, np.float64)

        try:
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                return np.asarray(hdul[0].section[rows[0] : rows[1], :], dtype=np.float64)
        except (OSError, ValueError, IndexError, TypeError) as exc:
            raise FitsFormatError(f"cannot read the pixels: {exc}", str(path)) from exc


@dataclass(frozen=True)
class CombineJob:
    """A group's combine, small enough to send to a worker: files, parameters, scales, master references.

    Each sample combined is ``(frame - offset) * scale`` with ``offset = bias + dark * dark_scale``
    (:func:`ccdcal.kernels.flat.precalibration_offset`), as :func:`ccdcal.kernels.combine.combine_files`
    takes it.

    Attributes
    ----------
    paths : tuple of str
        The files combined (shared file system).
    hdu : int
        Their image HDU.
    params : ClipParams
        The clipping parameters.
    mem_limit : int
        Bytes one combine (the whole image here, or one band on a worker) may hold.
    bias, dark : MasterFile or None
        Masters subtracted from every frame.
    dark_scales : tuple of float
        Per frame, the factor of the dark (empty: 0 for every frame).
    scale : tuple of float or None
        Per frame, the factor applied after the subtraction (``1 / level`` of a flat).
    saturation : tuple of (float or None)
        Per frame, its saturation level: samples at or above it are left out (empty: none; inputs
        prepared by :func:`~ccdcal.kernels.prepare.prepared_inputs` have theirs NaN already).
    """

    paths: tuple[str, ...]
    hdu: int
    params: ClipParams
    mem_limit: int
    bias: MasterFile | None = None
    dark: MasterFile | None = None
    dark_scales: tuple[float, ...] = ()
    scale: tuple[float, ...] | None = None
    saturation: tuple[float | None, ...] = ()
    #: Gather the frame-QA samples in the combine's pass (:mod:`ccdcal.kernels.framestats`).
    measure: bool = False

    def offsets(
        self, rows: tuple[int, int] | None = None, frames: Sequence[int] | None = None
    ) -> list[np.ndarray | float] | None:
        """Each frame's offset (of the band ``rows``), one image per distinct dark scale; ``None``: none.

        Parameters
        ----------
        rows : tuple of int, optional
            The band of rows (default: the whole image).
        frames : sequence of int, optional
            The frames whose offsets are wanted (default: all).
        """
        if self.bias is None and self.dark is None:
            return None
        indices = range(len(self.paths)) if frames is None else frames
        scales = [self.dark_scales[i] if self.dark_scales else 0.0 for i in indices]
        bias = self.bias.read(rows) if self.bias else None
        dark = self.dark.read(rows) if self.dark else None
        by_scale = {s: precalibration_offset(bias, dark, s) for s in set(scales)}  # shared, held once
        return [by_scale[s] for s in scales]

    def offset_images(self) -> int:
        """How many offset images (float64, of the band's size) :meth:`combine` holds at most."""
        if self.bias is None and self.dark is None:
            return 0
        return len(set(self.dark_scales or (0.0,))) + (self.bias is not None) + (self.dark is not None)

    def combine(self, rows: tuple[int, int] | None = None) -> CombineResult:
        """The combine of the whole image, or of the band ``rows`` (:func:`combine_files`)."""
        return combine_files(
            [Path(p) for p in self.paths],
            hdu=self.hdu,
            params=self.params,
            mem_limit=self.mem_limit,
            scale=self.scale,
            offset=self.offsets(rows),
            rows=rows,
            saturation=self.saturation or None,
            measure=self.measure,
        )

    def flat_levels(self, frames: Sequence[int]) -> list[float]:
        """The level of each of ``frames`` (:func:`ccdcal.kernels.flat.flat_level` after the offset, its
        saturated pixels left out).

        Raises
        ------
        ValueError
            Naming the file whose level is not that of a flat.
        """
        return self._each_flat(self._flat_level, frames)

    def flat_measures(self, frames: Sequence[int]) -> list[FlatMeasure]:
        """The level and the frame-QA statistics of each of ``frames`` (:meth:`_flat_measure`), one
        thread a core as :meth:`flat_levels`; a frame whose level is not that of a flat gets NaN and why."""
        return self._each_flat(self._flat_measure, frames)

    def _each_flat(self, work: Callable[[int, np.ndarray | float], _T], frames: Sequence[int]) -> list[_T]:
        """``work(index, offset)`` for each of ``frames``, in order, one thread a core."""
        offsets = self.offsets(None, frames) or [0.0] * len(frames)
        threads = min(len(frames), os.cpu_count() or 1)
        if threads < 2:
            return [work(i, offset) for i, offset in zip(frames, offsets, strict=True)]
        # The reading (numpy's scaling) and the medians (numba, nogil; numpy) release the GIL.
        with ThreadPoolExecutor(threads, thread_name_prefix="ccdcal-flat") as pool:
            futures = [pool.submit(work, i, o) for i, o in zip(frames, offsets, strict=True)]
            try:
                return [future.result() for future in futures]
            finally:
                for future in futures:
                    future.cancel()

    def _flat_measure(self, index: int, offset: np.ndarray | float) -> FlatMeasure:
        """Frame ``index``'s level after ``offset`` (NaN, with the reason, when it is not a flat's) and its
        grid statistics, from one read of the file."""
        # Imported here for start-up time, as the combine's kernel is.
        from ccdcal.kernels.framestats import Decoded, FrameSamples, pixel_noise

        path = Path(self.paths[index])
        saturation = self.saturation[index] if self.saturation else None
        data = read_image(path, self.hdu, None)
        samples = FrameSamples.start(data.shape, [saturation], 1)
        samples.add(0, data[None], Decoded.native(1))
        noise = pixel_noise(data, samples.grid, offset)
        try:
            level, error = flat_level(data, offset, saturation), None
            signal = level
        except ValueError as exc:  # not a flat's level: the frame QA says why, with the median found
            level, error = math.nan, str(exc)
            signal = finite_median(np.subtract(data, offset, dtype=np.float64))
        return FlatMeasure(level, error, samples.measures()[0], noise, signal)

    def _flat_level(self, index: int, offset: np.ndarray | float) -> float:
        """The level of frame ``index`` after ``offset`` (see :meth:`flat_levels`)."""
        path = Path(self.paths[index])
        try:
            level = self.saturation[index] if self.saturation else None
            # As astropy scales them (uint16 for most raw flats): flat_level subtracts in float64.
            return flat_level(read_image(path, self.hdu, None), offset, level)
        except ValueError as exc:
            raise ValueError(f"{path.name}: {exc}") from None


# -- the tasks (run by Dask workers) ---------------------------------------------------------------------


def combine_band(job: CombineJob, rows: tuple[int, int]) -> CombineResult | Exception:
    """Task: the combine of one band of rows, or the error about the inputs (returned, not retried)."""
    try:
        return job.combine(rows)
    except (CcdcalError, ValueError) as exc:
        return exc


def flat_measures(job: CombineJob, frames: list[int]) -> tuple[list[int], list[FlatMeasure]] | Exception:
    """Task: some flats' levels and statistics, or the error about the inputs (returned, not retried)."""
    try:
        return frames, job.flat_measures(frames)
    except (CcdcalError, ValueError) as exc:
        return exc


def flat_levels(job: CombineJob, frames: list[int]) -> tuple[list[int], list[float]] | Exception:
    """Task: some flats and their levels, or the error about the inputs (returned, not retried)."""
    try:
        return frames, job.flat_levels(frames)
    except (CcdcalError, ValueError) as exc:
        return exc


def _gathered(cluster: Cluster, task: Callable[..., Any], job: CombineJob, parts: list[Any]) -> Iterator[Any]:
    """``task(job, part)`` for every part on the cluster, as the results come (an error raised here)."""
    futures = {cluster.executor.submit(task, job, part) for part in parts}
    try:
        for future in as_completed(futures):
            futures.discard(future)
            outcome = future.result()
            if isinstance(outcome, Exception):
                raise outcome
            yield outcome
    finally:
        for future in futures:
            future.cancel()


def image_shape(job: CombineJob) -> tuple[int, int]:
    """(ny, nx) of the first file's image (the combine checks that every file has it)."""
    with FitsStack([Path(job.paths[0])], job.hdu) as stack:
        return stack.describe()


def run_combine(job: CombineJob, cluster: Cluster | None) -> CombineResult:
    """The whole combine: here, or in bands of rows on the cluster's workers, put together here.

    Raises
    ------
    FitsFormatError, UsageError, ValueError
        As :func:`ccdcal.kernels.combine.combine_files` (from the worker that met it).
    """
    if cluster is None:
        return job.combine()
    shape = image_shape(job)
    n = len(job.paths)
    parts = cluster.workers * BANDS_PER_WORKER
    bands = plan_bands(n, shape, job.mem_limit, parts=parts, offset_images=job.offset_images())
    stitcher = Stitcher(shape, n, job.params)
    for band in _gathered(cluster, combine_band, job, bands):
        stitcher.add(band)
    return stitcher.result()


def run_flat_levels(job: CombineJob, cluster: Cluster | None) -> list[float]:
    """Every flat's level: here, or on the cluster's workers in chunks of frames."""
    n = len(job.paths)
    if cluster is None:
        return job.flat_levels(range(n))
    count = min(n, cluster.workers * LEVEL_CHUNKS_PER_WORKER)
    chunks = [list(range(n * i // count, n * (i + 1) // count)) for i in range(count)]
    levels: dict[int, float] = {}
    for chunk, values in _gathered(cluster, flat_levels, job, chunks):
        levels.update(zip(chunk, values, strict=True))
    return [levels[i] for i in range(n)]


def run_flat_measures(job: CombineJob, cluster: Cluster | None) -> list[FlatMeasure]:
    """Every flat's level and statistics: here, or on the cluster's workers in chunks of frames."""
    n = len(job.paths)
    if cluster is None:
        return job.flat_measures(range(n))
    count = min(n, cluster.workers * LEVEL_CHUNKS_PER_WORKER)
    chunks = [list(range(n * i // count, n * (i + 1) // count)) for i in range(count)]
    found: dict[int, FlatMeasure] = {}
    for chunk, values in _gathered(cluster, flat_measures, job, chunks):
        found.update(zip(chunk, values, strict=True))
    return [found[i] for i in range(n)]


# -- a group ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlatMeasure:
    """A flat's level after the bias and dark (NaN when it is not a flat's, ``error`` saying why) and its
    grid statistics (:mod:`ccdcal.kernels.framestats`), from the flat-level pass."""

    level: float
    error: str | None
    stats: FrameMeasure
    #: The flat's pixel-to-pixel noise after the bias and dark
    #: (:func:`~ccdcal.kernels.framestats.pixel_noise`).
    noise: float
    #: Its median after them: the level, or what stands instead of one (zero, negative, saturated).
    signal: float


@dataclass
class Combined:
    """A group's combined master before QA and writing: the float32 image and its uncertainty (both
    divided by the image's median for a flat)."""

    image: np.ndarray
    rejected_fraction: float
    uncertainty: np.ndarray
    flat_levels: list[float] = field(default_factory=list)
    overscan_levels: list[float | None] = field(default_factory=list)
    #: Saturated samples left out of the combine.
    saturated: int = 0
    #: Each input's frame-QA statistics and differences from the combine (``measure``), else empty.
    measures: list[FrameMeasure] = field(default_factory=list)


def combine_group(
    plan: GroupPlan,
    options: MasterOptions,
    cluster: ClusterOnDemand | None = None,
    *,
    levels: Sequence[float] | None = None,
    measure: bool = False,
) -> Combined:
    """Pre-calibrate (as the combine's per-frame offsets and scales) and combine a group's frames.

    The inputs are first prepared as every frame of the reduction is (overscan, trim:
    :func:`ccdcal.kernels.prepare.prepared_inputs`, written beside the masters where the workers see them);
    a flat's frames are each divided by their level, and the combined flat by its median. Each input's
    samples at or above its saturation level (``plan.saturation``, found on the raw values) are left out:
    of the flat's level and of the combine. The combine's uncertainty (``UNCERT``) comes from the same
    pass over the files, for every master.

    Parameters
    ----------
    plan : GroupPlan
        The group, its calibrators and scales (:func:`ccdcal.masters.calibrators.plan_group`).
    options : MasterOptions
        Clipping parameters, ``mem_limit``, the masters folder.
    cluster : ClusterOnDemand, optional
        Where the work goes (``--scheduler``); default here.
    levels : sequence of float, optional
        A flat group's levels, measured already with the same calibrators (:func:`measure_flats`).
    measure : bool
        Gather each input's frame-QA statistics in the combine's pass (``Combined.measures``).

    Raises
    ------
    FitsFormatError, ValueError
        An input or calibrator that cannot be read or used (the group is then skipped).
    """
    raw_paths = [Path(f["path"]) for f in plan.frames]
    saturation = plan.saturation_levels
    with _prepared(plan, options) as prepared:
        if any(prepared.saturated) and plan.kind == "flat":
            _check_saturated_flats(raw_paths, prepared.saturated, prepared.paths, saturation)
        job = _job(plan, options, prepared, measure)
        pool = cluster.get() if cluster is not None else None
        found: list[float] = []
        if plan.kind == "flat":  # each flat is divided by its own level: a first pass over the files
            found = list(levels) if levels is not None else run_flat_levels(job, pool)
            job = replace(job, scale=tuple(1.0 / level for level in found))
        result = run_combine(job, pool)  # its uncertainty computed in the same pass
    image, sigma = result.image, result.uncertainty
    if plan.kind == "flat":
        image, median = normalise_to_median(image)
        sigma = (sigma / np.float64(median)).astype(np.float32)
    saturated = result.n_saturated + sum(prepared.saturated)
    combined = Combined(image, float(result.rejected_fraction), sigma, found, prepared.levels, saturated)
    if result.samples is not None:
        combined.measures = _with_saturated(result.samples.measures(), prepared.saturated, image.size)
    return combined


def _prepared(plan: GroupPlan, options: MasterOptions) -> contextlib.AbstractContextManager[Prepared]:
    """A group's inputs prepared as every frame is (overscan, trim: :func:`prepared_inputs`), written
    beside the masters where the workers see them."""
    return prepared_inputs(
        [Path(f["path"]) for f in plan.frames],
        plan.frames[0]["hdu"] or 0,
        plan.input_steps.overscan if plan.input_steps else None,
        options.masters_dir.expanduser().resolve(),
        [m.path if m else None for m in (plan.bias, plan.dark)],
        plan.saturation_levels,
    )


def _job(plan: GroupPlan, options: MasterOptions, prepared: Prepared, measure: bool = False) -> CombineJob:
    """The combine of a group's prepared inputs (a prepared input has its saturated samples NaN already)."""
    return CombineJob(
        tuple(str(p) for p in prepared.paths),
        prepared.hdu,
        options.params,
        options.mem_limit,
        bias=MasterFile.of(plan.bias),
        dark=MasterFile.of(plan.dark),
        dark_scales=tuple(plan.dark_scales),
        saturation=() if prepared.saturated else plan.saturation_levels,
        measure=measure,
    )


def measure_flats(
    plan: GroupPlan, options: MasterOptions, cluster: ClusterOnDemand | None = None
) -> list[FlatMeasure]:
    """Each flat of a group: its level after the plan's calibrators and its frame-QA statistics, in one
    read (the flat-level pass of :func:`combine_group`, whose levels it can be given); a flat whose
    level is not that of a flat (empty, negative, saturated) gets NaN and the reason instead of an error.

    Raises
    ------
    FitsFormatError, ValueError
        An input or calibrator that cannot be read.
    """
    with _prepared(plan, options) as prepared:
        job = _job(plan, options, prepared)
        found = run_flat_measures(job, cluster.get() if cluster is not None else None)
        pixels = int(np.prod(image_shape(job))) if prepared.saturated else 0
        stats = _with_saturated([f.stats for f in found], prepared.saturated, pixels)
        return [replace(f, stats=s) for f, s in zip(found, stats, strict=True)]


def _with_saturated(measures: list[FrameMeasure], counts: Sequence[int], pixels: int) -> list[FrameMeasure]:
    """The statistics of prepared inputs with their saturated share: preparing wrote their ``counts``
    saturated samples NaN (of ``pixels`` a frame), which the grid no longer sees as saturated."""
    if not counts:
        return measures
    return [
        replace(m, saturated_fraction=count / max(pixels, 1))
        for m, count in zip(measures, counts, strict=True)
    ]


def _check_saturated_flats(
    raw_paths: list[Path], counts: list[int], prepared: list[Path], levels: Sequence[float | None]
) -> None:
    """Refuse a prepared flat most of whose pixels are saturated, as :func:`~ccdcal.kernels.flat.flat_level`
    refuses a raw one."""
    header = fits.getheader(prepared[0])
    pixels = max(int(header["NAXIS1"]) * int(header["NAXIS2"]), 1)
    for path, count, level in zip(raw_paths, counts, levels, strict=True):
        share = count / pixels
        if share > 0.5:
            raise ValueError(f"{path.name}: {share:.0%} of its pixels are saturated (at or above {level:g})")
