"""A combine split into bands of rows, and put together again.

:func:`plan_bands` cuts an image into bands of rows, each small enough for
:func:`ccdcal.kernels.combine.combine_files` with ``rows=band`` within a memory budget (a Dask worker's);
:class:`Stitcher` copies the band results into the whole image as they come, in any order. Each pixel is
combined on its own samples, so the result equals the combine of the whole image bit for bit, its
rejected fraction, uncertainty and non-finite count included.
"""

from __future__ import annotations

import itertools

import numpy as np

from ccdcal.kernels.combine import RESULT_BYTES, ClipParams, CombineResult, rejected_fraction
from ccdcal.kernels.framestats import FrameSamples

__all__ = ["Stitcher", "plan_bands"]


def plan_bands(
    n: int, shape: tuple[int, int], mem_limit: int, *, parts: int = 1, offset_images: int = 0
) -> list[tuple[int, int]]:
    """Bands of rows ``(r0, r1)`` covering an image, each to be combined on its own within ``mem_limit``.

    Parameters
    ----------
    n : int
        Number of frames.
    shape : tuple of int
        (ny, nx) of the images.
    mem_limit : int
        Bytes one band's combine may hold (``mem_limit`` of
        :func:`ccdcal.kernels.combine.combine_files`).
    parts : int
        Bands wanted at least (e.g. a few per worker); fewer when the image has fewer rows.
    offset_images : int
        Offset images of the band's size (float64) held beside the combine by whoever runs it.

    Returns
    -------
    list of tuple of int
        Consecutive bands of near-equal height: at least ``parts``, more when a band of
        ``ny / parts`` rows, its result and offset images would leave less than two blocks of 16 rows
        (8-byte samples) of ``mem_limit`` for reading.
    """
    ny, nx = shape
    row_bytes = n * nx * 8 + nx * 2  # a row of block buffer (samples at most 8 bytes) and counts
    reading = 2 * min(ny, 16) * row_bytes  # two blocks of 16 rows (fitsblocks' smallest wanted)
    held = nx * (RESULT_BYTES + 8 * offset_images)  # a band row of results and offsets
    tallest = max(1, (int(mem_limit) - reading) // held)
    count = min(ny, max(int(parts), 1, -(-ny // tallest)))
    edges = [ny * i // count for i in range(count + 1)]
    return list(itertools.pairwise(edges))


class Stitcher:
    """The whole combine put together from band results (``combine_files(..., rows=band)``).

    Parameters
    ----------
    shape : tuple of int
        (ny, nx) of the whole image.
    n : int
        Number of frames combined.
    params : ClipParams
        The clipping parameters of every band.
    """

    def __init__(self, shape: tuple[int, int], n: int, params: ClipParams) -> None:
        self.image = np.empty(shape, np.float32)
        self.rejected = np.empty(shape, np.uint16)
        self.uncertainty = np.empty(shape, np.float32)
        self.n = n
        self.params = params
        self.n_nonfinite = 0
        self.n_saturated = 0
        self.block_rows = 0
        self.n_blocks = 0
        self._filled = np.zeros(shape[0], np.bool_)
        self._samples: list[FrameSamples] = []

    def add(self, band: CombineResult) -> None:
        """Copy one band's result into place (the band may then be dropped).

        Raises
        ------
        ValueError
            When the band does not fit the image, overlaps one added before, or was combined from
            another number of frames or with other parameters.
        """
        r0, r1 = band.first_row, band.first_row + band.image.shape[0]
        if band.image.shape[1:] != self.image.shape[1:] or not 0 <= r0 < r1 <= self.image.shape[0]:
            raise ValueError(
                f"a band of shape {band.image.shape} at row {r0} does not fit the image {self.image.shape}"
            )
        if self._filled[r0:r1].any():
            raise ValueError(f"the band of rows {r0}:{r1} overlaps a band already added")
        if band.n_inputs != self.n or band.params != self.params:
            raise ValueError(f"the band of rows {r0}:{r1} was combined from other frames or parameters")
        self.image[r0:r1] = band.image
        self.rejected[r0:r1] = band.rejected
        self.uncertainty[r0:r1] = band.uncertainty
        self._filled[r0:r1] = True
        self.n_nonfinite += band.n_nonfinite
        self.n_saturated += band.n_saturated
        self.block_rows = max(self.block_rows, band.block_rows)
        self.n_blocks += band.n_blocks
        if band.samples is not None:
            self._samples.append(band.samples)

    def result(self) -> CombineResult:
        """The whole combine, as ``combine_files`` without ``rows`` returns it.

        Raises
        ------
        ValueError
            When rows are missing.
        """
        missing = np.flatnonzero(~self._filled)
        if missing.size:
            raise ValueError(f"{missing.size} rows have no band, from row {missing[0]}")
        return CombineResult(
            image=self.image,
            rejected=self.rejected,
            rejected_fraction=rejected_fraction(self.rejected, self.n),
            uncertainty=self.uncertainty,
            n_inputs=self.n,
            n_nonfinite=self.n_nonfinite,
            n_saturated=self.n_saturated,
            block_rows=self.block_rows,
            n_blocks=self.n_blocks,
            params=self.params,
            samples=self._samples[0].merged(self._samples[1:]) if self._samples else None,
        )
