"""Reading the 2-D image HDUs of several FITS files together, in row blocks within a memory budget.

:class:`FitsStack` describes each file's image HDU from its header (no data read), checks that the
images share one shape, and then reads them block by block: rows ``r0:r1`` of every file into an
(n, rows, nx) buffer, the next block read by a background thread while the caller works on the current
one (two buffers), over all the rows or over a band of them (a combine split across workers).
:func:`plan_rows` chooses the block height within the caller's memory budget.

Uncompressed image HDUs of plain FITS files are read straight from the data unit with ``os.preadv``,
as stored (big-endian bits in an unsigned buffer); the :class:`ccdcal.kernels.clipblock.Decoding` built
here tells the kernel how astropy would turn them into numbers (BSCALE/BZERO in float32 or float64,
BLANK → NaN, pseudo-unsigned integers exact). Tile-compressed HDUs, gzipped files, unsigned or scaled
64-bit data and mixed BITPIX go through astropy's ``section`` instead, as native numbers. Either way the
numbers are those of ``astropy.io.fits.getdata``.
"""

from __future__ import annotations

import concurrent.futures
import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from astropy.io import fits

from ccdcal.errors import FitsFormatError, UsageError
from ccdcal.kernels.clipblock import Decoding
from ccdcal.kernels.clipkernel import BE_FLOAT, BE_INT

__all__ = ["FitsStack", "StackInput", "describe", "plan_rows"]

# Block buffer aimed at (within the memory budget): big enough for long reads and many parallel
# kernel tiles, small enough to keep the peak memory low (4 to 64 MiB measured equally fast), and at
# least a few rows so that wide stacks are not read in tiny pieces.
_TARGET_BLOCK_BYTES = 4 * 2**20
_MIN_BLOCK_ROWS = 16


@dataclass
class StackInput:
    """One input image: where its data are and how astropy would turn them into numbers."""

    path: Path
    shape: tuple[int, int]
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None  # BLANK as astropy applies it (None: not applied)
    in_f32: bool  # astropy's scaled result is float32
    data_offset: int | None  # byte offset of an uncompressed, unscaled-or-decodable data unit, else None
    hdul: Any = None  # astropy HDUList for frames read through astropy
    fd: int | None = None


def _is_plain_fits(path: Path) -> bool:
    """Whether the file starts as an uncompressed FITS file does."""
    with open(path, "rb") as handle:
        return handle.read(9) == b"SIMPLE  ="


def describe(path: Path, hdu: int) -> StackInput:
    """Open one file's image HDU header (no data read) and decide how to read it.

    Parameters
    ----------
    path : pathlib.Path
        The FITS file.
    hdu : int
        HDU index of the image.

    Returns
    -------
    StackInput
        With ``data_offset`` set (file closed) when the data unit can be read directly and decoded as
        astropy would; else with ``data_offset`` None and the file left open in ``hdul`` (tile-compressed
        HDU, not a plain FITS file such as a gzipped one, non-numeric scaling, scaled or BLANK'ed
        64-bit integers, BITPIX 8 pseudo-unsigned with BLANK).

    Raises
    ------
    ccdcal.errors.FitsFormatError
        The file is missing or unreadable, has no HDU ``hdu``, that HDU is not a 2-D image, or the file
        is shorter than its data unit.
    """

    try:
        plain = _is_plain_fits(path)
        with warnings.catch_warnings():
            # A short file is reported below with the bytes missing, as a FitsFormatError.
            warnings.filterwarnings("ignore", message="File may have been truncated")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
    except FileNotFoundError as exc:
        raise FitsFormatError("file not found", str(path)) from exc
    except (OSError, ValueError, TypeError) as exc:
        raise FitsFormatError(f"not a readable FITS file ({exc})", str(path)) from exc
    try:
        try:
            unit = hdul[hdu]
        except (IndexError, KeyError) as exc:
            raise FitsFormatError(f"has no HDU {hdu}", str(path)) from exc
        if not isinstance(unit, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            raise FitsFormatError(f"HDU {hdu} is not an image", str(path))
        shape = tuple(int(v) for v in unit.shape)
        if len(shape) != 2:
            raise FitsFormatError(f"HDU {hdu} is not a 2-D image (shape {shape})", str(path))
        shape2 = (shape[0], shape[1])
        header = unit.header
        bitpix = int(header["BITPIX"])
        bscale = header.get("BSCALE", 1)
        bzero = header.get("BZERO", 0)
        blank_card = header.get("BLANK")
        through_astropy = StackInput(path, shape2, bitpix, 1.0, 0.0, None, False, None, hdul=hdul)
        if isinstance(unit, fits.CompImageHDU) or not plain:
            return through_astropy
        if not (isinstance(bscale, numbers.Real) and isinstance(bzero, numbers.Real)):
            return through_astropy
        # astropy's reading rules (io/fits/hdu/image.py, _dtype_for_bitpix/_scale_data):
        # pseudo-unsigned integers are exact; other scaled or BLANK'ed integers become float32
        # (BITPIX 8, 16) or float64 (32, 64), scaled in that type; BLANK (when truthy) -> NaN.
        pseudo = bscale == 1 and (
            (bitpix == 8 and bzero == -128) or (bitpix in (16, 32, 64) and bzero == 1 << (bitpix - 1))
        )
        scaled = not (bzero == 0 and bscale == 1)
        valid_blank = (
            isinstance(blank_card, (int, np.integer)) and not isinstance(blank_card, bool) and bitpix > 0
        )
        if bitpix == 64 and (scaled or valid_blank):
            return through_astropy  # uint64 and int64 beyond 2**53 would round differently
        if valid_blank and bitpix == 8 and pseudo:
            return through_astropy  # astropy's int8 conversion with BLANK: leave it to astropy
        blank = int(blank_card) if valid_blank and blank_card and not pseudo else None
        in_f32 = bitpix == -32 or (bitpix in (8, 16) and not pseudo and (scaled or valid_blank))
        info = hdul.fileinfo(hdu)
        offset = int(info["datLoc"])
        nbytes = shape2[0] * shape2[1] * abs(bitpix) // 8
        size = os.path.getsize(path)
        if offset + nbytes > size:
            raise FitsFormatError(
                f"truncated: the data unit needs {offset + nbytes} bytes, the file has {size}",
                str(path),
            )
        hdul.close()
        return StackInput(path, shape2, bitpix, float(bscale), float(bzero), blank, in_f32, offset)
    except BaseException:
        hdul.close()
        raise


_UNSIGNED = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _read_exact(fd: int, view: memoryview, offset: int, path: Path) -> None:
    """Fill ``view`` with the bytes of ``fd`` from ``offset`` (FitsFormatError naming ``path`` at EOF)."""
    done = 0
    total = len(view)
    while done < total:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise FitsFormatError("truncated data unit", str(path))
        done += got


def plan_rows(n: int, shape: tuple[int, int], itemsize: int, mem_limit: int, fixed: int) -> int:
    """Image rows per block: the block buffers (two) and non-finite counts within the budget.

    Parameters
    ----------
    n : int
        Number of frames.
    shape : tuple of int
        (ny, nx) of the images.
    itemsize : int
        Bytes of a stored sample in the block buffer.
    mem_limit : int
        Bytes the caller may hold at once.
    fixed : int
        Bytes of ``mem_limit`` already spent (result images, copied offsets).

    Returns
    -------
    int
        Rows per block, 1 to ``ny``: about ``_TARGET_BLOCK_BYTES`` of samples (at least
        ``_MIN_BLOCK_ROWS`` rows) when the budget allows.

    Raises
    ------
    ccdcal.errors.UsageError
        When ``mem_limit`` cannot hold ``fixed`` plus two rows of every frame.
    """
    ny, nx = shape
    row_bytes = n * nx * itemsize + nx * 2  # samples + non-finite counts
    budget = int(mem_limit) - fixed
    if budget < 2 * row_bytes:
        raise UsageError(
            f"mem_limit={mem_limit} bytes is too small for {n} images of {ny}x{nx}: at least "
            f"{fixed + 2 * row_bytes} bytes are needed"
        )
    target = max(_MIN_BLOCK_ROWS, _TARGET_BLOCK_BYTES // row_bytes)
    return max(1, min(ny, budget // (2 * row_bytes), target))


class FitsStack:
    """The image HDU ``hdu`` of several FITS files, read together in row blocks.

    Use as a context manager: :meth:`close` (on exit) closes every file, also after an error.
    Call :meth:`describe`, then :meth:`open_data`, then iterate :meth:`blocks`.

    Parameters
    ----------
    paths : sequence of path
        The FITS files.
    hdu : int
        HDU index of the image in every file (non-negative).
    """

    def __init__(self, paths: Sequence[Path], hdu: int) -> None:
        self.paths = [Path(p) for p in paths]
        self.hdu = hdu
        self.frames: list[StackInput] = []
        self.raw = False  # read the data units directly (else through astropy's section)
        self.dtype: np.dtype[Any] = np.dtype(np.float64)  # dtype of the block buffers

    def __enter__(self) -> FitsStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def describe(self) -> tuple[int, int]:
        """Read every file's header and check that the images share one non-empty shape.

        Returns
        -------
        tuple of int
            (ny, nx) of the images.

        Raises
        ------
        ccdcal.errors.FitsFormatError
            A file that is unreadable, has no such HDU, not a 2-D image, truncated, an empty image, or
            whose shape differs from the first file's (the message names the file and both shapes).
        """
        for path in self.paths:
            frame = describe(path, self.hdu)
            self.frames.append(frame)
            first = self.frames[0]
            if frame.shape != first.shape:
                raise FitsFormatError(
                    f"image shape {frame.shape} differs from {first.path}'s {first.shape}", str(path)
                )
        ny, nx = self.frames[0].shape
        if ny == 0 or nx == 0:
            raise FitsFormatError(
                f"HDU {self.hdu} holds an empty image (shape {(ny, nx)})", str(self.paths[0])
            )
        return ny, nx

    def open_data(self) -> Decoding:
        """Open the data for reading: choose direct reads or astropy, and the block buffer dtype.

        Data units are read directly when every file allows it and all share one BITPIX; otherwise
        every file is read through astropy (buffer dtype: the files' common type, float64 when it is
        not a real number type of at most 8 bytes).

        Returns
        -------
        Decoding
            How the kernel turns the buffer's samples into astropy's numbers (identity for astropy).
        """
        frames = self.frames
        n = len(frames)
        self.raw = all(f.data_offset is not None for f in frames) and len({f.bitpix for f in frames}) == 1
        if self.raw:
            bitpix = frames[0].bitpix
            self.dtype = np.dtype(_UNSIGNED[abs(bitpix)])
            decoding = Decoding(
                BE_FLOAT if bitpix < 0 else BE_INT,
                np.array([f.bscale for f in frames]),
                np.array([f.bzero for f in frames]),
                np.array([f.in_f32 for f in frames], np.bool_),
                np.array([0.0 if f.blank is None else float(f.blank) for f in frames]),
                np.array([f.blank is not None for f in frames], np.bool_),
            )
            for f in frames:
                f.fd = os.open(f.path, os.O_RDONLY)
            return decoding

        dtypes = []
        for f in frames:
            if f.hdul is None:
                f.hdul = fits.open(f.path, memmap=False, lazy_load_hdus=True)
            dtypes.append(f.hdul[self.hdu].section[0:1, 0:1].dtype)
        dtype = np.dtype(np.result_type(*dtypes)).newbyteorder("=")
        if dtype.kind not in "iuf" or (dtype.kind == "f" and dtype.itemsize > 8):
            dtype = np.dtype(np.float64)
        self.dtype = dtype
        return Decoding.identity(n)

    def blocks(self, rows: int, span: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Read the images (or the band ``span`` of rows) in blocks of ``rows`` rows, the next one in the
        background.

        A block is valid until the next one is asked for (two buffers take turns). Close the iterator
        (``contextlib.closing``) before :meth:`close` when the loop may stop early, so that the
        background read is waited for before the files are closed.

        Parameters
        ----------
        rows : int
            Rows per block (:func:`plan_rows`).
        span : tuple of int, optional
            Read only the image rows ``span[0]:span[1]`` (default: all of them).

        Yields
        ------
        r0 : int
            First image row of the block.
        block : numpy.ndarray
            C-contiguous (n, r, nx) stored samples of rows ``r0:r0 + r`` (the last block may be short).

        Raises
        ------
        ccdcal.errors.UsageError
            When ``span`` is not a non-empty band of the images' rows.
        """
        frames = self.frames
        n = len(frames)
        ny, nx = frames[0].shape
        first, stop = span if span is not None else (0, ny)
        if not 0 <= first < stop <= ny:
            raise UsageError(f"rows {first}:{stop} are not a band of the images' {ny} rows")
        starts = list(range(first, stop, rows))
        nbuf = 2 if len(starts) > 1 else 1
        buffers = [np.empty((n, min(rows, stop - first), nx), self.dtype) for _ in range(nbuf)]

        def read_block(which: int, r0: int) -> np.ndarray:
            r1 = min(stop, r0 + rows)
            # A C-contiguous (n, r1 - r0, nx) view of the buffer, also for a short last block.
            block = buffers[which].reshape(-1)[: n * (r1 - r0) * nx].reshape(n, r1 - r0, nx)
            for i, f in enumerate(frames):
                if self.raw:
                    assert f.fd is not None
                    assert f.data_offset is not None
                    start = f.data_offset + r0 * nx * self.dtype.itemsize
                    _read_exact(f.fd, memoryview(block[i]).cast("B"), start, f.path)
                else:
                    block[i] = f.hdul[self.hdu].section[r0:r1, :]
            return block

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read_block, 0, first)
            for b, r0 in enumerate(starts):
                block = pending.result()
                if b + 1 < len(starts):
                    pending = pool.submit(read_block, (b + 1) % nbuf, starts[b + 1])
                yield r0, block

    def close(self) -> None:
        """Close every file opened (descriptors and astropy HDU lists)."""
        for f in self.frames:
            if f.fd is not None:
                os.close(f.fd)
                f.fd = None
            if f.hdul is not None:
                f.hdul.close()
