"""Calibrating one light: read its pixels and its masters, apply the fused kernel, write the output file.

:func:`calibrate_frame` is the per-frame work of ``ccdcal process``; it runs in worker processes
(``--jobs``, or Dask workers) and never touches the catalog: it gets a :class:`~ccdcal.lights.task.FrameTask`
(paths, hashes, scale) and returns a :class:`~ccdcal.lights.task.FrameResult` (a temporary output file and
its sha256, or the reason it failed). The coordinator renames the file to its final name in the
transaction that registers it.

The raw file is only read (:mod:`ccdcal.lights.pixels`). A 16-bit primary image is calibrated straight
from its stored words into the big-endian float32 words of the output
(:func:`ccdcal.kernels.light.calibrate_be16_words`); any other layout goes through
:func:`ccdcal.kernels.light.calibrate_image`.

A task with optional steps (:class:`~ccdcal.lights.task.OptionalSteps`: overscan and trim, uncertainty,
cosmic rays, bad-pixel mask) goes through :func:`ccdcal.lights.worker_steps.calibrate_with_steps` instead;
without them the fused path above is the only one taken. Either way a light whose level is far below its
master bias's is reported (:func:`~ccdcal.lights.pixels.level_warning`): it was probably calibrated
already (a capture program's auto-dark).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ccdcal.errors import CcdcalError
from ccdcal.files.calibrated import output_cards, write_calibrated
from ccdcal.kernels.light import be_words, calibrate_be16_words, calibrate_image, flagged
from ccdcal.lights.history import (
    MASK_CARDS,
    history_lines,
    light_saturation,
    mask_counts,
    saturation_record,
    step_cards,
)
from ccdcal.lights.pixels import (
    RawFrame,
    buffer,
    level_warning,
    master_pixels,
    prepared_flat,
    read_raw,
    sample_level,
)
from ccdcal.lights.task import RAW_CHANGED, FrameResult, FrameTask
from ccdcal.lights.worker_steps import calibrate_with_steps


def calibrate_frame(task: FrameTask) -> FrameResult:
    """Calibrate one light into a temporary file beside ``task.output``.

    Never raises for a problem with the files: an unreadable or changed raw file, a missing or
    changed master, or a shape mismatch gives a result with ``error`` set (the light is recorded
    ``failed``; the others go on). ``raw_sha256`` is the sha256 of the raw bytes read, checked against
    ``task.sha256``: when they differ the output is removed and the error is :data:`RAW_CHANGED`.
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
    ``planned``: what a failed calibration was attempted with (a rerun with the same plan is not retried),
    and its saturation level."""
    steps = task.optional
    records: dict[str, Any] = {"saturation": {"status": "planned", "option": task.saturation}}
    if steps is None or not steps.any:
        return records
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
    """Read the raw light once (hashing its bytes meanwhile), calibrate it, then check the hash: an
    output made from bytes that are not the catalog's is removed and the light fails (:data:`RAW_CHANGED`)."""
    raw = read_raw(task)
    try:
        if task.optional is not None and task.optional.any:
            done = calibrate_with_steps(task, raw)
        else:
            done = _fused(task, raw)
    except Exception:
        if _changed(task, raw.sha256):  # another file's pixels: that is the reason, not the symptom
            return _raw_changed(task, raw.sha256)
        raise
    found = raw.sha256
    if _changed(task, found):
        if done.temporary:
            Path(done.temporary).unlink(missing_ok=True)
        return _raw_changed(task, found)
    return replace(done, raw_sha256=found)


def _changed(task: FrameTask, found: str | None) -> bool:
    return task.sha256 is not None and found is not None and found != task.sha256


def _raw_changed(task: FrameTask, found: str | None) -> FrameResult:
    return FrameResult(task.frame_id, error=RAW_CHANGED, details=planned(task), raw_sha256=found)


def _fused(task: FrameTask, raw: RawFrame) -> FrameResult:
    """The fused path: 16-bit words (or decoded values) to the output's float32 words and their MASK in
    one pass (the MASK: the flat's bits, and bit 8 where the raw sample is saturated)."""
    bias = master_pixels(task.bias, raw.shape)
    dark = master_pixels(task.dark, raw.shape)
    flat = None if task.flat is None else prepared_flat(task.flat, task.flat_min, task.flat_low, raw.shape)
    inv_flat, bits = (None, None) if flat is None else (flat.inverse, flat.bits)
    size = raw.shape[0] * raw.shape[1]
    words = buffer(size)
    mask = buffer(size, np.uint8, "mask")
    saturation = light_saturation(task, raw.header)
    level = saturation.level
    if raw.words is not None:
        total = calibrate_be16_words(
            raw.words,
            raw.signed,
            bias,
            dark,
            task.dark_scale,
            inv_flat,
            words,
            mask=mask,
            bits=bits,
            saturation=level,
        )
    else:
        assert raw.values is not None
        image = calibrate_image(raw.values, bias, dark, task.dark_scale, inv_flat=inv_flat)
        total = be_words(image, words)
        flagged(raw.values, bits, level, out=mask)
    counts = mask_counts(mask)
    cards = output_cards(
        raw.header,
        raw.shape,
        step_cards(task, counts, raw.header, saturation),
        history_lines(task, counts, saturation),
    )
    output = Path(task.output)
    masked = flat.clamped if flat is not None else 0
    mask_image = mask.reshape(raw.shape) if counts["flagged"] else None
    # Not synced here: the coordinator syncs each file while the next one is computed
    # (ccdcal.lights.coordinator).
    temporary, digest = write_calibrated(
        output.parent,
        output.name,
        cards,
        words,
        total,
        mask_image,
        sync=False,
        mask_cards=MASK_CARDS if mask_image is not None else (),
    )
    warning = level_warning(task.bias, bias, sample_level(raw))
    details: dict[str, Any] = {
        "saturation": saturation_record(saturation, counts["bits"]["8"]),
        "mask": counts,
    }
    if warning:
        details["warnings"] = [warning]
    return FrameResult(
        task.frame_id, str(temporary), digest, None, masked, details=details, warnings=_tuple(warning)
    )


def _tuple(warning: str | None) -> tuple[str, ...]:
    return (warning,) if warning else ()
