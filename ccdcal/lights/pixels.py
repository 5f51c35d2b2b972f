"""The pixels a worker reads: the raw light (checked against the catalog), the masters (checked against their
sha256 and kept per worker process), reusable per-frame buffers, and a light's level against its bias.

A primary-HDU 16-bit image (the usual camera file, BZERO 32768) is read as it is stored, its big-endian
words handed to the fused kernel (:func:`ccdcal.kernels.light.calibrate_be16_words`); any other layout
(compressed, float, 32-bit, image in an extension) is read with astropy, from the file's bytes read once.
Either way every byte is hashed (sha256) as it is read: the worker compares the hash with the catalog's,
so a file rewritten with its size and mtime kept is never calibrated under the old file's hash. Masters
are read once per worker process (threads share them), checked against their catalog sha256, and kept
(:func:`load_master`, called for each master before the frames). Nothing here touches the catalog.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ccdcal.errors import CcdcalError, FitsFormatError
from ccdcal.kernels.light import clamp_flat, flat_bits, flat_reciprocal
from ccdcal.lights.task import MASTERS_KEPT, FrameTask, MasterUse, masters_to_preload

_BLOCK = 2880
_GZIP_MAGIC = b"\x1f\x8b"
#: Bytes of pixels read and hashed at a time (hashed while they are in the processor's cache).
_HASH_CHUNK = 1 << 20
_MAX_HEADER_BLOCKS = 2000
#: Bytes outside ASCII read as ``?``, as ``astropy.io.fits`` reads them.
_ASCII_ONLY = bytes(range(128)) + b"?" * 128
#: Masters (and clamped flats) a worker keeps in memory.
_CACHE_SIZE = MASTERS_KEPT

# -- a light far below its bias ---------------------------------------------------------------------------

#: Pixels sampled (evenly spaced) for a frame's level: a median of a few thousand pixels costs nothing
#: next to the calibration pass.
_LEVEL_SAMPLES = 8191
#: A light is far below its bias when its level is below the bias's median by more than this many times
#: the bias's dispersion, and by more than :data:`LEVEL_MARGIN_ADU`.
LEVEL_SIGMAS = 10.0
LEVEL_MARGIN_ADU = 10.0


def sample_level(raw: RawFrame) -> float:
    """The median of the pixels of a few evenly spaced rows of a raw light (its level, in ADU).

    Whole rows, not pixels spread over the frame: a few contiguous runs of memory rather than thousands of
    scattered reads, each of which would miss the cache.
    """
    if raw.words is not None:
        height, width = raw.shape
        rows = np.unique(np.linspace(0, height - 1, min(height, -(-_LEVEL_SAMPLES // width))).astype(int))
        sample = raw.words.reshape(raw.shape)[rows].reshape(-1).byteswap()
        values = sample.view(np.int16).astype(np.float64) if raw.signed else (sample ^ 0x8000).astype(float)
        return float(np.median(values))
    assert raw.values is not None
    return image_level(raw.values)


def image_level(image: np.ndarray) -> float:
    """The median of evenly spaced finite pixels of an image."""
    flat = np.asarray(image).reshape(-1)
    sample = np.asarray(flat[:: max(1, flat.size // _LEVEL_SAMPLES)], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    return float(np.median(sample)) if sample.size else float("nan")


def bias_level(use: MasterUse, pixels: np.ndarray) -> tuple[float, float]:
    def make() -> tuple[float, float]:
        # Imported here to keep start-up fast: astropy.stats loads only when a light is checked against its
        # bias.
        from astropy.stats import mad_std

        flat = pixels.reshape(-1)
        sample = np.asarray(flat[:: max(1, flat.size // (8 * _LEVEL_SAMPLES))], dtype=np.float64)
        sample = sample[np.isfinite(sample)]
        if not sample.size:
            return float("nan"), float("nan")
        return float(np.median(sample)), float(mad_std(sample))

    level: tuple[float, float] = cached(("level", use.path, use.sha256), make)
    return level


def level_warning(use: MasterUse | None, pixels: np.ndarray | None, level: float) -> str | None:
    """A warning when a light's ``level`` is far below its master bias's (see :data:`LEVEL_SIGMAS`).

    A light holds the bias plus signal: one far below it was already bias- or dark-subtracted, as
    CCDSoft's auto-dark does to frames whose headers still look raw.
    """
    if use is None or pixels is None or not np.isfinite(level):
        return None
    bias, spread = bias_level(use, pixels)
    margin = max(LEVEL_SIGMAS * spread, LEVEL_MARGIN_ADU)
    if not (np.isfinite(bias) and level < bias - margin):
        return None
    return (
        f"the light's level {level:.6g} ADU is far below its master bias {use.name} ({bias:.6g} ADU, "
        f"by more than {LEVEL_SIGMAS:g} x its dispersion {spread:.3g}): it may already be bias- or "
        "dark-subtracted (a capture program's auto-dark)"
    )


# -- the raw light ---------------------------------------------------------------------------------------


@dataclass
class RawFrame:
    """A raw light's header and pixels: the stored 16-bit words (fast path) or decoded values, and the
    sha256 of the file's bytes as read (its provenance: the pixels come from exactly those bytes)."""

    header: fits.Header
    shape: tuple[int, int]
    words: np.ndarray | None = None
    signed: bool = False
    values: np.ndarray | None = None
    #: The sha256 of every byte of the file as it was read.
    sha256: str | None = None


def read_raw(task: FrameTask) -> RawFrame:
    """Read a raw light, after checking that its size and mtime are the catalog's; the file is read
    once, and every byte read is hashed (:attr:`RawFrame.sha256`), so the caller can check the content
    against the catalog's sha256 without reading the file again.

    Raises
    ------
    FitsFormatError
        When the file changed size or mtime since it was catalogued, or its pixels cannot be read.
    """
    stat = os.stat(task.path)
    if stat.st_size != task.size or stat.st_mtime != task.mtime:
        raise FitsFormatError("changed since it was catalogued: run `ccdcal ingest` on it again", task.path)
    with open(task.path, "rb") as handle:
        head = b""
        if task.hdu == 0:
            head = handle.read(6)
            if head == b"SIMPLE":
                fast, head = _read_fast(handle, head, task.path)
                if fast is not None:
                    return fast
        content = head + handle.read()  # the rest of the file, after what the fast path read
    return _read_astropy(task, content)


def _read_fast(handle: io.BufferedReader, start: bytes, path: str) -> tuple[RawFrame | None, bytes]:
    """A plain 16-bit primary image, read as stored: the frame (hashing the header, the pixels and the
    rest of the file), or ``None`` for any other layout with the bytes read so far (``start`` first)."""
    blocks = [start + handle.read(_BLOCK - len(start))]
    while True:
        block = blocks[-1]
        if len(block) < _BLOCK:
            return None, b"".join(blocks)
        if any(block[i : i + 8] == b"END     " for i in range(0, _BLOCK, 80)):
            break
        if len(blocks) >= _MAX_HEADER_BLOCKS:
            return None, b"".join(blocks)
        blocks.append(handle.read(_BLOCK))
    raw_header = b"".join(blocks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        text = raw_header.translate(_ASCII_ONLY).decode("ascii")  # as fits.open reads it
        header = fits.Header.fromstring(text)
        structure = [header.get(k) for k in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BSCALE", "BZERO")]
    bitpix, naxis, naxis1, naxis2, bscale, bzero = structure
    if bitpix != 16 or naxis != 2 or bscale not in (None, 1) or bzero not in (None, 0, 32768):
        return None, raw_header
    if "BLANK" in header or not (isinstance(naxis1, int) and isinstance(naxis2, int)):
        return None, raw_header
    count = naxis1 * naxis2
    words = buffer(count, np.uint16, "raw")
    stored = words.data.cast("B")
    digest = hashlib.sha256(raw_header)
    got = 0
    while got < words.nbytes:  # hashed chunk by chunk as read, while each is in the processor's cache
        chunk = stored[got : got + _HASH_CHUNK]
        read = handle.readinto(chunk)
        if not read:
            raise FitsFormatError(f"truncated: {got // 2} of {count} pixels", path)
        digest.update(chunk[:read])
        got += read
    digest.update(handle.read())  # the padding, any extension: the catalog hashed the whole file
    raw = RawFrame(header, (naxis2, naxis1), words=words, signed=not bzero, sha256=digest.hexdigest())
    return raw, raw_header


def _read_astropy(task: FrameTask, content: bytes) -> RawFrame:
    """Any other layout (compressed, float, 32-bit, an extension), from the file's ``content``."""
    digest = hashlib.sha256(content).hexdigest()
    try:
        if content[:2] == _GZIP_MAGIC:  # astropy detects a gzipped file by its name, not in memory
            content = gzip.decompress(content)
        with warnings.catch_warnings():  # astropy's notes on odd headers: the cards are checked later
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(io.BytesIO(content), memmap=False) as hdul:
                hdu = hdul[task.hdu]
                header = hdu.header.copy()  # before the data: astropy drops BZERO/BSCALE once it scales them
                data = hdu.data
    except (OSError, EOFError, ValueError, IndexError, TypeError) as exc:
        raise FitsFormatError(f"cannot read the pixels: {exc}", task.path) from exc
    if data is None or data.ndim != 2:
        raise FitsFormatError(f"HDU {task.hdu} holds no 2-D image", task.path)
    values = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
    return RawFrame(header, (int(data.shape[0]), int(data.shape[1])), values=values, sha256=digest)


# -- masters (cached per worker) -------------------------------------------------------------------------

_CACHE: OrderedDict[tuple[Any, ...], object] = OrderedDict()
#: A Dask worker may calibrate several frames at once in threads: the cache is shared, behind a lock.
_CACHE_LOCK = threading.Lock()
#: The keys a thread is making, each with the event it sets when done.
_MAKING: dict[tuple[Any, ...], threading.Event] = {}


_T = TypeVar("_T")


def cached(key: tuple[Any, ...], make: Callable[[], _T]) -> _T:
    """The value kept under ``key`` in this process's cache of :data:`_CACHE_SIZE` entries, made by
    ``make`` when absent (least recently used dropped first). Made once: a thread that needs a value
    another thread is making waits for it (worker threads share the masters they read)."""
    while True:
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return cast(_T, _CACHE[key])
            making = _MAKING.get(key)
            mine = making is None
            if making is None:
                making = _MAKING[key] = threading.Event()
        if mine:
            break
        making.wait()  # made (or failed, and then tried again here) by another thread
    try:
        value = make()  # outside the lock: other threads read other masters meanwhile
        with _CACHE_LOCK:
            kept = cast(_T, _CACHE.setdefault(key, value))  # a key always holds what its maker makes
            _CACHE.move_to_end(key)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    finally:
        with _CACHE_LOCK:
            del _MAKING[key]
        making.set()
    return kept


def master_pixels(use: MasterUse | None, shape: tuple[int, int] | None) -> np.ndarray | None:
    """A master's pixels (cached), checked against the light's ``shape`` (``None``: not checked)."""
    if use is None:
        return None
    pixels: np.ndarray = cached(("master", use.path, use.sha256), lambda: _read_master(use))
    if shape is not None and pixels.shape != shape:
        raise ValueError(
            f"the {use.role} master {use.name} is {pixels.shape[1]}x{pixels.shape[0]} pixels, "
            f"the light {shape[1]}x{shape[0]}"
        )
    return pixels


@dataclass(frozen=True)
class PreparedFlat:
    """A flat as the lights use it (kept per worker): the reciprocal of the clamped flat, its MASK bits
    (:func:`~ccdcal.kernels.light.flat_bits`: 1 clamped, 16 low response) and how many pixels carry each."""

    inverse: np.ndarray
    bits: np.ndarray
    clamped: int
    low: int


def prepared_flat(use: MasterUse, flat_min: float, flat_low: float, shape: tuple[int, int]) -> PreparedFlat:
    """The flat of ``use`` prepared for ``flat_min`` and ``flat_low`` (:class:`PreparedFlat`, cached)."""
    flat = master_pixels(use, shape)
    assert flat is not None

    def make() -> PreparedFlat:
        clamped, _, _ = clamp_flat(flat, flat_min)
        bits, n_clamped, n_low = flat_bits(flat, flat_min, flat_low)
        return PreparedFlat(flat_reciprocal(clamped), bits, n_clamped, n_low)

    key = ("flat", use.path, use.sha256, flat_min, flat_low)
    prepared: PreparedFlat = cached(key, make)
    return prepared


def preload(tasks: Iterable[FrameTask]) -> int:
    """Read (and check) the masters of ``tasks`` into this process's cache, as many as it holds
    (:func:`masters_to_preload`, :func:`load_master`). Returns the number of masters loaded."""
    return sum(load_master(*one) for one in masters_to_preload(tasks))


def load_master(use: MasterUse, thresholds: tuple[float, float] | None) -> bool:
    """Read (and check) one master into this process's cache, with its prepared flat (``thresholds``:
    ``flat_min`` and ``flat_low``) or its bias level. A master that cannot be read is left to the frames,
    which record the failure against each light: returns whether it was loaded."""
    try:
        pixels = master_pixels(use, None)
        assert pixels is not None
        if thresholds is not None:
            prepared_flat(use, *thresholds, pixels.shape)
        elif use.role == "bias":
            bias_level(use, pixels)
    except (CcdcalError, OSError, ValueError):
        return False
    return True


def _read_master(use: MasterUse) -> np.ndarray:
    """A master's pixels (float32), from a file whose sha256 is the one in the catalog."""
    content = master_bytes(use)
    try:
        with fits.open(io.BytesIO(content), memmap=False) as hdul:
            return np.ascontiguousarray(hdul[0].data, dtype=np.float32)
    except (OSError, ValueError, TypeError) as exc:
        raise FitsFormatError(f"cannot read the {use.role} master's pixels: {exc}", use.path) from exc


def master_bytes(use: MasterUse) -> bytes:
    """A master file's content, checked against the sha256 the catalog recorded for it."""
    try:
        content = Path(use.path).read_bytes()
    except FileNotFoundError:
        raise FitsFormatError(
            f"the {use.role} master is missing; run `ccdcal process` again to rebuild it", use.path
        ) from None
    if hashlib.sha256(content).hexdigest() != use.sha256:
        raise FitsFormatError(
            f"the {use.role} master changed since it was built (sha256 differs from the catalog's); "
            "check it with `ccdcal audit`",
            use.path,
        )
    return content


#: Per-frame arrays reused from frame to frame, one set per thread (a Dask worker may run several frames
#: at once in threads). A fresh array of many megabytes costs a page fault per page on first touch.
_BUFFERS = threading.local()


def buffer(size: int, dtype: type = np.uint32, role: str = "output") -> np.ndarray:
    """An array of ``size`` elements for one frame (``role``: "output" words or "raw" pixels), reused
    by the next frame of this thread."""
    buffers: dict[str, np.ndarray] = _BUFFERS.__dict__
    array = buffers.get(role)
    if array is None or array.size != size or array.dtype != dtype:
        array = buffers[role] = np.empty(size, dtype=dtype)
    return array
