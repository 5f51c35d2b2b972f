"""Calibrating one light: read its pixels and its masters, apply the fused kernel, write the output file.

:func:`calibrate_frame` is the per-frame work of ``ccdcal process``; it runs in worker processes
(``--jobs``) and never touches the catalog: it gets a :class:`FrameTask` (paths, hashes, scale) and
returns a :class:`FrameResult` (a temporary output file and its sha256, or the reason it failed). The
coordinator renames the file to its final name in the transaction that registers it.

The raw file is only read. A primary-HDU 16-bit image (the usual camera file, BZERO 32768) is read as
it is stored and calibrated straight into the big-endian float32 words of the output
(:func:`ccdcal.steps.light.calibrate_be16_words`); any other layout (compressed, float, 32-bit, image in
an extension) is read with astropy and goes through :func:`ccdcal.steps.light.calibrate_image`.
Masters are read once per worker process, checked against their catalog sha256, and kept.

A task with optional steps (:class:`LightSteps`: overscan and trim, uncertainty, cosmic rays, bad-pixel
mask) goes through :func:`ccdcal.calibrate_steps.calibrate_with_steps` instead; without them the fused
path above is the only one taken. Either way a light whose level is far below its master bias's is
reported (:func:`level_warning`): it was probably calibrated already (a capture program's auto-dark).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ccdcal.calfits import output_cards, write_calibrated
from ccdcal.errors import CcdcalError, FitsFormatError
from ccdcal.steps.light import be_words, calibrate_be16_words, calibrate_image, clamp_flat, flat_reciprocal

_BLOCK = 2880
_MAX_HEADER_BLOCKS = 2000
#: Bytes outside ASCII read as ``?``, as ``astropy.io.fits`` reads them.
_ASCII_ONLY = bytes(range(128)) + b"?" * 128
#: Masters (and clamped flats) a worker keeps in memory.
_CACHE_SIZE = 8


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
class LightSteps:
    """The optional steps of one light (``None`` fields are not applied).

    Attributes
    ----------
    overscan : OverscanPlan or None
        Overscan subtracted and image trimmed (:mod:`ccdcal.steps.overscan`), resolved from the header.
    overscan_mode : str
        The ``--overscan`` option it was resolved under.
    noise : NoiseModel or None
        Gain and read noise: an UNCERT extension is written (:mod:`ccdcal.steps.uncertainty`).
    cosmic : CosmicParams or None
        L.A.Cosmic is run on the calibrated light (:mod:`ccdcal.steps.cosmic`).
    cosmic_noise : tuple of (float, float, str) or None
        Gain, read noise and their source, for L.A.Cosmic.
    bpm : MasterUse or None
        Bad-pixel mask ORed into MASK.
    """

    overscan: Any = None
    overscan_mode: str = "auto"
    noise: Any = None
    cosmic: Any = None
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
        Flat pixels below it are clamped and flagged in the MASK extension.
    notes : tuple of str
        HISTORY lines for the steps not applied, with their reasons.
    steps : LightSteps or None
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
    flat_min: float = 0.01
    notes: tuple[str, ...] = field(default_factory=tuple)
    steps: LightSteps | None = None


@dataclass(frozen=True)
class FrameResult:
    """What a worker did: a temporary file and its sha256, or the reason the light failed.

    ``details`` holds, per optional step, what was done (merged into ``calibrations.steps``);
    ``warnings`` what looked wrong (a light far below its bias).
    """

    frame_id: int
    temporary: str | None = None
    sha256: str | None = None
    error: str | None = None
    masked: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def calibrate_frame(task: FrameTask) -> FrameResult:
    """Calibrate one light into a temporary file beside ``task.output``.

    Never raises for a problem with the files: an unreadable or changed raw file, a missing or
    changed master, or a shape mismatch gives a result with ``error`` set (the light is recorded
    ``failed``; the others go on).
    """
    start = time.perf_counter()
    try:
        done = _calibrate(task)
    except Exception as exc:  # one bad frame must not stop the others: it is recorded with the reason
        seconds = time.perf_counter() - start
        return FrameResult(task.frame_id, error=_reason(exc), seconds=seconds, details=planned(task))
    return replace(done, seconds=time.perf_counter() - start)


def planned(task: FrameTask) -> dict[str, Any]:
    """The optional steps a task asked for, as ``calibrations.steps`` records them with status
    ``planned``: what a failed calibration was attempted with (a rerun with the same plan is not retried)."""
    steps = task.steps
    if steps is None or not steps.any:
        return {}
    records: dict[str, Any] = {}
    if steps.overscan is not None and steps.overscan.applies:
        records["overscan"] = {"status": "planned", "mode": steps.overscan_mode, **steps.overscan.signature()}
    if steps.noise is not None:
        records["uncertainty"] = {"status": "planned", **steps.noise.as_json()}
    if steps.cosmic is not None:
        gain, readnoise = (steps.cosmic_noise or (None, None, ""))[:2]
        records["cosmic_rays"] = {
            "status": "planned",
            **steps.cosmic.as_json(),
            "gain": gain,
            "readnoise": readnoise,
        }
    return records


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename}: file not found"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    if isinstance(exc, CcdcalError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # not foreseen: the type helps a bug report


def _calibrate(task: FrameTask) -> FrameResult:
    raw = read_raw(task)
    if task.steps is not None and task.steps.any:
        from ccdcal.calibrate_steps import calibrate_with_steps

        return calibrate_with_steps(task, raw)
    bias = _master(task.bias, raw.shape)
    dark = _master(task.dark, raw.shape)
    inv_flat, mask, masked = (
        (None, None, 0) if task.flat is None else _flat(task.flat, task.flat_min, raw.shape)
    )
    words = _buffer(raw.shape[0] * raw.shape[1])
    if raw.words is not None:
        total = calibrate_be16_words(raw.words, raw.signed, bias, dark, task.dark_scale, inv_flat, words)
    else:
        assert raw.values is not None
        image = calibrate_image(raw.values, bias, dark, task.dark_scale, inv_flat=inv_flat)
        total = be_words(image, words)
    cards = output_cards(raw.header, raw.shape, _cards(task, masked, raw.header), _history(task, masked))
    output = Path(task.output)
    mask_image = mask if masked else None
    # Not synced here: the coordinator syncs each file while the next one is computed (ccdcal.register).
    temporary, digest = write_calibrated(
        output.parent, output.name, cards, words, total, mask_image, sync=False
    )
    warning = level_warning(task.bias, bias, sample_level(raw))
    details = {"warnings": [warning]} if warning else {}
    return FrameResult(
        task.frame_id, str(temporary), digest, None, masked, details=details, warnings=_tuple(warning)
    )


def _tuple(warning: str | None) -> tuple[str, ...]:
    return (warning,) if warning else ()


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


def _bias_level(use: MasterUse, pixels: np.ndarray) -> tuple[float, float]:
    def make() -> tuple[float, float]:
        from astropy.stats import mad_std

        flat = pixels.reshape(-1)
        sample = np.asarray(flat[:: max(1, flat.size // (8 * _LEVEL_SAMPLES))], dtype=np.float64)
        sample = sample[np.isfinite(sample)]
        if not sample.size:
            return float("nan"), float("nan")
        return float(np.median(sample)), float(mad_std(sample))

    level: tuple[float, float] = _cached(("level", use.path, use.sha256), make)
    return level


def level_warning(use: MasterUse | None, pixels: np.ndarray | None, level: float) -> str | None:
    """A warning when a light's ``level`` is far below its master bias's (see :data:`LEVEL_SIGMAS`).

    A light holds the bias plus signal: one far below it was already bias- or dark-subtracted, as
    CCDSoft's auto-dark does to frames whose headers still look raw.
    """
    if use is None or pixels is None or not np.isfinite(level):
        return None
    bias, spread = _bias_level(use, pixels)
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
    """A raw light's header and pixels: the stored 16-bit words (fast path) or decoded values."""

    header: fits.Header
    shape: tuple[int, int]
    words: np.ndarray | None = None
    signed: bool = False
    values: np.ndarray | None = None


def read_raw(task: FrameTask) -> RawFrame:
    """Read a raw light, after checking it is still the file the catalog describes.

    Raises
    ------
    FitsFormatError
        When the file changed since it was catalogued, or its pixels cannot be read.
    """
    stat = os.stat(task.path)
    if stat.st_size != task.size or stat.st_mtime != task.mtime:
        raise FitsFormatError("changed since it was catalogued: run `ccdcal ingest` on it again", task.path)
    if task.hdu == 0:
        with open(task.path, "rb") as handle:
            if handle.read(6) == b"SIMPLE":
                handle.seek(0)
                fast = _read_fast(handle, task.path)
                if fast is not None:
                    return fast
    return _read_astropy(task)


def _read_fast(handle: io.BufferedReader, path: str) -> RawFrame | None:
    """A plain 16-bit primary image, read as stored; ``None`` for any other layout."""
    blocks = []
    for _ in range(_MAX_HEADER_BLOCKS):
        block = handle.read(_BLOCK)
        if len(block) < _BLOCK:
            return None
        blocks.append(block)
        if any(block[i : i + 8] == b"END     " for i in range(0, _BLOCK, 80)):
            break
    else:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        text = b"".join(blocks).translate(_ASCII_ONLY).decode("ascii")  # as fits.open reads it
        header = fits.Header.fromstring(text)
        structure = [header.get(k) for k in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BSCALE", "BZERO")]
    bitpix, naxis, naxis1, naxis2, bscale, bzero = structure
    if bitpix != 16 or naxis != 2 or bscale not in (None, 1) or bzero not in (None, 0, 32768):
        return None
    if "BLANK" in header or not (isinstance(naxis1, int) and isinstance(naxis2, int)):
        return None
    count = naxis1 * naxis2
    words = _buffer(count, np.uint16, "raw")
    got = handle.readinto(words.data.cast("B"))
    if got != words.nbytes:
        raise FitsFormatError(f"truncated: {got // 2} of {count} pixels", path)
    return RawFrame(header, (naxis2, naxis1), words=words, signed=not bzero)


def _read_astropy(task: FrameTask) -> RawFrame:
    try:
        with warnings.catch_warnings():  # astropy's notes on odd headers: the cards are checked later
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(task.path, memmap=False) as hdul:
                hdu = hdul[task.hdu]
                data = hdu.data
                header = hdu.header.copy()
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise FitsFormatError(f"cannot read the pixels: {exc}", task.path) from exc
    if data is None or data.ndim != 2:
        raise FitsFormatError(f"HDU {task.hdu} holds no 2-D image", task.path)
    values = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
    return RawFrame(header, (int(data.shape[0]), int(data.shape[1])), values=values)


# -- masters (cached per worker) -------------------------------------------------------------------------

_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
#: A Dask worker may calibrate several frames at once in threads: the cache is shared, behind a lock.
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = make()  # outside the lock: two threads may both read a new master; the second is dropped
    with _CACHE_LOCK:
        value = _CACHE.setdefault(key, value)
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def _master(use: MasterUse | None, shape: tuple[int, int] | None) -> np.ndarray | None:
    """A master's pixels (cached), checked against the light's ``shape`` (``None``: not checked)."""
    if use is None:
        return None
    pixels: np.ndarray = _cached(("master", use.path, use.sha256), lambda: _read_master(use))
    if shape is not None and pixels.shape != shape:
        raise ValueError(
            f"the {use.role} master {use.name} is {pixels.shape[1]}x{pixels.shape[0]} pixels, "
            f"the light {shape[1]}x{shape[0]}"
        )
    return pixels


def _flat(use: MasterUse, flat_min: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """The reciprocal of the clamped flat, the MASK and the number of clamped pixels (kept per worker)."""
    flat = _master(use, shape)
    assert flat is not None

    def make() -> tuple[np.ndarray, np.ndarray, int]:
        clamped, mask, masked = clamp_flat(flat, flat_min)
        return flat_reciprocal(clamped), mask, masked

    prepared: tuple[np.ndarray, np.ndarray, int] = _cached(("flat", use.path, use.sha256, flat_min), make)
    return prepared


def preload(tasks: Iterable[FrameTask]) -> int:
    """Read (and check) the masters of ``tasks`` into this process's cache, as many as it holds.

    Called by the coordinator before worker processes are forked: they inherit the pixels (shared
    copy-on-write, never written) instead of each reading and hashing every master again. A master that
    cannot be read is left to the workers, which record the failure against each light. Returns the
    number of masters loaded.
    """
    seen: dict[tuple[str, str, float | None], tuple[MasterUse, float | None]] = {}
    room = _CACHE_SIZE  # entries: a master's pixels, and its prepared flat or bias level
    for task in tasks:
        if task.steps is not None and task.steps.any:
            continue  # overscan and trimming may change the shape the masters are checked against
        for use, flat_min in ((task.bias, None), (task.dark, None), (task.flat, task.flat_min)):
            if use is None:
                continue
            key = (use.path, use.sha256, flat_min)
            entries = 1 if use.role == "dark" else 2
            if key not in seen and entries <= room:
                seen[key] = (use, flat_min)
                room -= entries
    loaded = 0
    for use, flat_min in seen.values():
        try:
            pixels = _master(use, None)
            assert pixels is not None
            if flat_min is not None:
                _flat(use, flat_min, pixels.shape)
            elif use.role == "bias":
                _bias_level(use, pixels)
        except (CcdcalError, OSError, ValueError):
            continue
        loaded += 1
    return loaded


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


def _buffer(size: int, dtype: type = np.uint32, role: str = "output") -> np.ndarray:
    """An array of ``size`` elements for one frame (``role``: "output" words or "raw" pixels), reused
    by the next frame of this thread."""
    buffers: dict[str, np.ndarray] = _BUFFERS.__dict__
    array = buffers.get(role)
    if array is None or array.size != size or array.dtype != dtype:
        array = buffers[role] = np.empty(size, dtype=dtype)
    return array


# -- provenance in the header ----------------------------------------------------------------------------


def _cards(task: FrameTask, masked: int, raw: fits.Header) -> list[tuple[str, Any, str]]:
    mjd = _mjd_card(raw)
    cards: list[tuple[str, Any, str]] = [mjd] if mjd else []
    if task.bias is not None:
        cards.append(("BIASCOR", task.bias.name, "master bias subtracted"))
    if task.dark is not None:
        cards.append(("DARKCOR", task.dark.name, "master dark subtracted"))
        cards.append(("DARKSCAL", float(task.dark_scale), "dark scale factor t_light / t_dark"))
    if task.flat is not None:
        cards.append(("FLATCOR", task.flat.name, "divided by the master flat as stored (median 1)"))
        cards.append(("FLATMIN", float(task.flat_min), "flat pixels below it clamped to it"))
        cards.append(("NMASKED", masked, "flat pixels clamped, flagged in MASK"))
    return cards


_MJD_ZERO = dt.datetime(1858, 11, 17)


def _mjd_card(header: fits.Header) -> tuple[str, Any, str] | None:
    """MJD-OBS from a DATE-OBS with a time, when the header has none (WCS readers would derive it, with a
    warning)."""
    date_obs = header.get("DATE-OBS")
    if "MJD-OBS" in header or not isinstance(date_obs, str) or "T" not in date_obs:
        return None
    try:
        when = dt.datetime.fromisoformat(date_obs.strip())
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return ("MJD-OBS", round((when - _MJD_ZERO).total_seconds() / 86400.0, 8), "[d] MJD of DATE-OBS")


def _history(task: FrameTask, masked: int, steps: tuple[list[str], list[str]] = ([], [])) -> list[str]:
    """HISTORY lines: the raw file, ``steps[0]`` (done before the masters), each master, ``steps[1]``."""
    lines = [f"ccdcal: calibrated from {Path(task.path).name} sha256 {task.sha256}", *steps[0]]
    if task.bias is not None:
        lines.append(f"bias subtracted: {task.bias.name} sha256 {task.bias.sha256}")
    if task.dark is not None:
        lines.append(f"dark subtracted: {task.dark.name} sha256 {task.dark.sha256}")
        lines.append(f"dark scaled by t_light / t_dark = {task.dark_scale:.8g}")
    if task.flat is not None:
        lines.append(f"flat divided: {task.flat.name} sha256 {task.flat.sha256}")
        lines.append(
            f"flat divided as stored (median 1, norm 1); {masked} pixels below {task.flat_min:g} "
            "clamped to it" + (" and flagged in the MASK extension" if masked else "")
        )
    lines.extend(task.notes)
    lines.extend(steps[1])
    lines.append("pixels: (light - bias - dark x scale) / flat, float32")
    return lines
