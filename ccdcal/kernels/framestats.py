"""Per-frame statistics of a master's inputs, gathered while the combine reads them (frame QA).

The frame QA (:mod:`ccdcal.masters.frameqa`) judges each calibration frame by a few numbers: its level and
noise, those of its difference from the group's median frame, the change of its level across the
detector, its saturated share and, for a flat, its level after the bias. They are measured on a regular
grid of about :data:`TARGET_SAMPLES` pixels of each frame (every ``step``-th row and column,
:class:`SampleGrid`), taken from the blocks the combine reads anyway (:func:`ccdcal.kernels.combine.
combine_files`), so no frame is read twice. A grid of 65,536 pixels gives a median to within
``1.25 noise / 256``, far finer than any rule's threshold, for a few milliseconds a frame.

The grid depends only on the image's shape and takes absolute rows and columns, so bands of rows sampled
apart (Dask workers) and put together give the same samples as one pass (:meth:`FrameSamples.merged`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CELLS",
    "TAIL_SIGMA",
    "TARGET_SAMPLES",
    "Decoded",
    "FrameMeasure",
    "FrameSamples",
    "SampleGrid",
    "decode_samples",
    "measure",
    "pixel_noise",
    "plane_gradient",
    "robust",
    "spread",
]

#: About this many pixels of each frame are sampled.
TARGET_SAMPLES = 65536
#: The gradient is fitted to the medians of CELLS x CELLS cells of the detector.
CELLS = 8
#: A difference sample more than this many ``diff_noise`` above ``diff_level`` is in the tail (a star, a
#: cosmic ray, a hot pixel that the group's other frames lack).
TAIL_SIGMA = 10.0
#: The noise is the standard deviation of the values within this many of it from the median ...
CLIP_SIGMA = 4.0
#: ... found again this many times from its first estimate (``mad_std``).
CLIP_PASSES = 2
#: ``mad_std``'s factor, as astropy's.
MAD_TO_STD = 1.482602218505602

# The big-endian view of the combine's unsigned block buffers (ccdcal.kernels.fitsblocks), by item size.
_BE_INT: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(">i2"),
    4: np.dtype(">i4"),
    8: np.dtype(">i8"),
}
_BE_FLOAT: dict[int, np.dtype] = {4: np.dtype(">f4"), 8: np.dtype(">f8")}


@dataclass(frozen=True)
class Decoded:
    """How a combine's block holds each frame's samples (:class:`ccdcal.kernels.clipblock.Decoding`'s
    numbers): ``kind`` 0 native, 1 big-endian integers, 2 big-endian floats; per frame BSCALE, BZERO and
    BLANK (``use_blank`` false: none)."""

    kind: int
    bscale: np.ndarray
    bzero: np.ndarray
    blank: np.ndarray
    use_blank: np.ndarray

    @classmethod
    def native(cls, n: int) -> Decoded:
        """Native numbers used as they are, for ``n`` frames."""
        return cls(0, np.ones(n), np.zeros(n), np.zeros(n), np.zeros(n, np.bool_))

    def decode(self, frame: int, stored: np.ndarray) -> np.ndarray:
        """The values of some stored samples of ``frame`` (:func:`decode_samples`)."""
        blank = float(self.blank[frame]) if self.use_blank[frame] else None
        return decode_samples(stored, self.kind, float(self.bscale[frame]), float(self.bzero[frame]), blank)


@dataclass(frozen=True)
class SampleGrid:
    """The pixels sampled in an image of ``shape``: rows and columns ``step // 2``, then every ``step``-th.

    Attributes
    ----------
    shape : tuple of int
        (ny, nx) of the whole image.
    step : int
        Rows and columns between two samples (1: every pixel).
    """

    shape: tuple[int, int]
    step: int

    @classmethod
    def for_shape(cls, shape: tuple[int, int], target: int = TARGET_SAMPLES) -> SampleGrid:
        """The grid of about ``target`` pixels of an image of ``shape``."""
        ny, nx = shape
        step = max(1, int(math.sqrt(ny * nx / max(target, 1))))
        return cls((int(ny), int(nx)), step)

    def rows(self, first: int, stop: int) -> np.ndarray:
        """The sampled image rows in ``first:stop`` (absolute indices)."""
        start = self.step // 2
        lowest = start + max(0, -(-(first - start) // self.step)) * self.step
        return np.arange(lowest, stop, self.step, dtype=np.int64)

    @property
    def cols(self) -> np.ndarray:
        """The sampled columns."""
        return np.arange(self.step // 2, self.shape[1], self.step, dtype=np.int64)


def decode_samples(
    stored: np.ndarray, kind: int, bscale: float, bzero: float, blank: float | None
) -> np.ndarray:
    """The values astropy's ``getdata`` gives for some stored samples of one frame, in float64.

    Parameters
    ----------
    stored : numpy.ndarray
        Samples as the combine's block holds them: native numbers (``kind`` 0) or big-endian FITS bits
        in an unsigned buffer (1: integers, 2: IEEE floats; :mod:`ccdcal.kernels.clipkernel`).
    kind : int
        ``NATIVE`` (0), ``BE_INT`` (1) or ``BE_FLOAT`` (2).
    bscale, bzero : float
        The frame's scaling (applied to integers).
    blank : float or None
        The integer value that means "no data" (NaN), if any.
    """
    size = stored.dtype.itemsize
    if kind == 0:
        return np.asarray(stored, dtype=np.float64)
    if kind == 2:  # BSCALE and BZERO apply to floats too (a float32 bias written with BZERO 32768)
        return np.asarray(stored.view(_BE_FLOAT[size]), dtype=np.float64) * bscale + bzero
    words = stored.view(_BE_INT[size])
    values: np.ndarray = words.astype(np.float64) * bscale + bzero
    if blank is not None:
        values[words == blank] = np.nan
    return values


def robust(values: np.ndarray) -> tuple[float, float, int]:
    """Median, noise and number of the finite ``values`` (NaN, NaN, 0 when none): :func:`spread`'s
    first, third and fourth numbers."""
    median, noise, _, count = spread(values)
    return median, noise, count


def spread(values: np.ndarray) -> tuple[float, float, float, int]:
    """Median, noise, ``mad_std`` and number of the finite ``values`` (NaN, NaN, NaN, 0 when none).

    The noise is the standard deviation of the values within :data:`CLIP_SIGMA` of the median, the
    bounds set from ``mad_std`` and then twice from the standard deviation itself: as robust to a few
    wild values (cosmic rays, stars) as ``mad_std``, and not quantised as ``mad_std`` is on integer data
    (whose median absolute deviation takes whole or half values only).
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan, math.nan, 0
    median = float(np.median(finite))
    deviation = np.abs(finite - median)
    mad = noise = float(np.median(deviation)) * MAD_TO_STD
    if noise == 0.0:
        noise = float(deviation.mean()) * math.sqrt(math.pi / 2)  # mostly one value: the mean deviation
    for _ in range(CLIP_PASSES):
        kept = finite[deviation <= CLIP_SIGMA * noise]
        if kept.size < 2:
            break
        noise = float(kept.std())
    return median, noise, mad, int(finite.size)


def plane_gradient(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> float:
    """The change of a frame's level across the detector: a plane fitted to the medians of its
    :data:`CELLS` x :data:`CELLS` cells of samples, ``|d/dx| nx + |d/dy| ny`` (NaN with fewer than 3 cells).

    The samples are cut into cells of equal numbers of rows and columns (the last few rows and columns
    of samples beyond a multiple of :data:`CELLS` left out), so the medians are one call.

    Parameters
    ----------
    values : numpy.ndarray
        (len(rows), len(cols)) samples of one frame.
    rows, cols : numpy.ndarray
        Their image rows (increasing) and columns.
    shape : tuple of int
        (ny, nx) of the whole image.
    """
    ny, nx = shape
    cells_y, cells_x = min(CELLS, rows.size), min(CELLS, cols.size)
    if cells_y * cells_x < 3:
        return math.nan
    height, width = rows.size // cells_y, cols.size // cells_x
    cut = values[: cells_y * height, : cells_x * width]
    blocks = cut.reshape(cells_y, height, cells_x, width).transpose(0, 2, 1, 3).reshape(cells_y * cells_x, -1)
    finite = np.isfinite(blocks)
    if finite.all():
        medians = np.median(blocks, axis=1)
    else:  # cell by cell (no warning to silence: the frames are measured on threads), NaN-only cells NaN
        medians = np.array(
            [np.median(b[f]) if f.any() else np.nan for b, f in zip(blocks, finite, strict=True)]
        )
    ys = np.repeat(rows[: cells_y * height].reshape(cells_y, height).mean(axis=1), cells_x)
    xs = np.tile(cols[: cells_x * width].reshape(cells_x, width).mean(axis=1), cells_y)
    good = np.isfinite(medians)
    if np.count_nonzero(good) < 3:
        return math.nan
    design = np.column_stack([np.ones(int(good.sum())), xs[good], ys[good]])
    coef, *_ = np.linalg.lstsq(design, medians[good].astype(np.float64), rcond=None)
    return float(abs(coef[1]) * nx + abs(coef[2]) * ny)


@dataclass(frozen=True)
class FrameMeasure:
    """One frame's statistics (``frame_stats``; NaN where a number could not be measured)."""

    samples: int
    level: float
    noise: float
    diff_level: float
    diff_noise: float
    gradient: float
    saturated_fraction: float
    tail_fraction: float


@dataclass
class FrameSamples:
    """The grid samples of ``n`` frames gathered block by block: their values and their differences
    from the combined image, in ADU.

    Attributes
    ----------
    grid : SampleGrid
        The pixels sampled.
    n : int
        Number of frames.
    saturation : numpy.ndarray
        Per frame, its saturation level (``inf``: none).
    """

    grid: SampleGrid
    n: int
    saturation: np.ndarray
    _rows: list[np.ndarray] = field(default_factory=list)
    _values: list[np.ndarray] = field(default_factory=list)
    _diffs: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def start(cls, shape: tuple[int, int], saturation: Sequence[float | None] | None, n: int) -> FrameSamples:
        """Empty samples of ``n`` frames of ``shape`` with their saturation levels."""
        levels = np.full(n, np.inf)
        for i, level in enumerate(saturation or ()):
            if level is not None:
                levels[i] = float(level)
        return cls(SampleGrid.for_shape(shape), n, levels)

    def add(
        self,
        first: int,
        block: np.ndarray,
        decoding: Decoded,
        combined: np.ndarray | None = None,
        offsets: Sequence[np.ndarray | float] | None = None,
        scales: np.ndarray | None = None,
    ) -> None:
        """Add the grid samples of the rows from ``first``.

        Parameters
        ----------
        first : int
            Image row of ``block[:, 0]``.
        block : numpy.ndarray
            (n, rows, nx) stored samples of the frames' rows, as the combine reads them.
        decoding : Decoded
            How they become astropy's values (:class:`Decoded`).
        combined : numpy.ndarray, optional
            (rows, nx) the combined image of these rows: the differences are then recorded.
        offsets : sequence of (numpy.ndarray or float), optional
            Per frame, the offset the combine subtracted: (rows, nx) or a number.
        scales : numpy.ndarray, optional
            (n,) factors the combine multiplied by after the offset: a sample combined was
            ``(value - offset) * scale``, so its difference in ADU is ``value - offset - combined / scale``.
        """
        rows = self.grid.rows(first, first + block.shape[1])
        if rows.size == 0:
            return
        step = self.grid.step
        # The grid is regular: its rows and columns of the block are slices, read in place (no copy).
        local = slice(int(rows[0]) - first, int(rows[-1]) - first + 1, step)
        cols = slice(step // 2, None, step)
        stored = block[:, local, cols]
        values = np.empty(stored.shape, np.float64)
        for i in range(self.n):
            values[i] = decoding.decode(i, stored[i])
        self._rows.append(rows)
        self._values.append(values.astype(np.float32))
        if combined is None:
            return
        reference = combined[local, cols].astype(np.float64)
        for i in range(self.n):
            offset = offsets[i] if offsets is not None else 0.0
            if isinstance(offset, np.ndarray):
                values[i] -= offset[local, cols]
            else:
                values[i] -= offset
            values[i] -= reference if scales is None else reference / scales[i]
        self._diffs.append(values.astype(np.float32))

    def merged(self, others: Sequence[FrameSamples]) -> FrameSamples:
        """These samples and ``others`` (bands of the same frames) as one, in row order."""
        parts = [self, *others]
        rows = [r for p in parts for r in p._rows]
        values = [v for p in parts for v in p._values]
        diffs = [d for p in parts for d in p._diffs]
        order = sorted(range(len(rows)), key=lambda i: int(rows[i][0]))
        merged = FrameSamples(self.grid, self.n, self.saturation)
        merged._rows = [rows[i] for i in order]
        merged._values = [values[i] for i in order]
        merged._diffs = [diffs[i] for i in order] if len(diffs) == len(rows) else []
        return merged

    def measures(self) -> list[FrameMeasure]:
        """Each frame's statistics (:func:`measure`), the frames on a thread a core."""
        if not self._rows:
            return [measure(np.empty((0, 0)), None, np.empty(0), self.grid, math.inf) for _ in range(self.n)]
        rows = np.concatenate(self._rows)
        values = np.concatenate(self._values, axis=1)
        diffs = np.concatenate(self._diffs, axis=1) if len(self._diffs) == len(self._rows) else None

        def one(i: int) -> FrameMeasure:
            found = None if diffs is None else diffs[i]
            return measure(values[i], found, rows, self.grid, float(self.saturation[i]))

        threads = min(self.n, os.cpu_count() or 1)
        if threads < 2:
            return [one(i) for i in range(self.n)]
        # numpy's medians and sorts release the GIL: one thread a core.
        with ThreadPoolExecutor(threads, thread_name_prefix="ccdcal-frame-stats") as pool:
            return list(pool.map(one, range(self.n)))


def measure(
    values: np.ndarray, diffs: np.ndarray | None, rows: np.ndarray, grid: SampleGrid, saturation: float
) -> FrameMeasure:
    """One frame's statistics from its grid samples.

    Parameters
    ----------
    values : numpy.ndarray
        (len(rows), len(grid.cols)) the frame's values.
    diffs : numpy.ndarray or None
        The same pixels' difference from the group's combined frame (ADU), if measured.
    rows : numpy.ndarray
        The samples' image rows.
    grid : SampleGrid
        The grid.
    saturation : float
        The frame's saturation level (``inf``: none).

    Returns
    -------
    FrameMeasure
        Level and noise (median and ``mad_std`` of the finite values below saturation), those of the
        differences, the gradient (:func:`plane_gradient`), the saturated share of the sampled pixels and
        the share of differences above ``diff_level + TAIL_SIGMA diff_noise``.
    """
    flat = values.ravel()
    count = flat.size
    saturated = int(np.count_nonzero(flat >= saturation)) if math.isfinite(saturation) else 0
    usable = np.where(flat >= saturation, np.nan, flat) if saturated else flat
    level, noise, kept = robust(usable)
    gradient = plane_gradient(values, rows, grid.cols, grid.shape) if kept else math.nan
    diff_level = diff_noise = tail = math.nan
    if diffs is not None and diffs.size:
        diff_level, diff_noise, mad, finite = spread(diffs.ravel())
        if finite and math.isfinite(diff_noise):
            # Above the wider of the two noises: a difference of two structures (an infrared array's
            # bias) has a narrow core and wide wings, which mad_std sees.
            above = np.count_nonzero(diffs > diff_level + TAIL_SIGMA * max(diff_noise, mad))
            tail = float(above) / finite
    return FrameMeasure(
        samples=count,
        level=level,
        noise=noise,
        diff_level=diff_level,
        diff_noise=diff_noise,
        gradient=gradient,
        saturated_fraction=saturated / count if count else math.nan,
        tail_fraction=tail,
    )


def pixel_noise(image: np.ndarray, grid: SampleGrid, offset: np.ndarray | float = 0.0) -> float:
    """The pixel-to-pixel noise of ``image - offset`` on a grid: the noise (:func:`robust`) of the
    differences between each grid pixel and its right-hand neighbour, divided by ``√2`` — shot and read
    noise, without the smooth illumination or the bias structure that the plain noise of a flat holds
    (NaN: none).

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) image.
    grid : SampleGrid
        The pixels used (with their neighbours).
    offset : numpy.ndarray or float
        Subtracted first (an image of the same shape, or a number).
    """
    ny, nx = image.shape
    if nx < 2 or ny == 0:
        return math.nan
    rows = slice(grid.step // 2, None, grid.step)
    left = slice(grid.step // 2, nx - 1, grid.step)
    right = slice(grid.step // 2 + 1, nx, grid.step)

    def taken(columns: slice) -> np.ndarray:
        values = np.asarray(image[rows, columns], dtype=np.float64)
        return values - offset[rows, columns] if isinstance(offset, np.ndarray) else values - offset

    differences = taken(right) - taken(left)
    return robust(differences.ravel())[1] / math.sqrt(2.0)
