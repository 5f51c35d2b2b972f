"""Calibrating one light with the optional steps: overscan and trim, uncertainty, bad pixels, cosmic rays.

The per-frame work of ``ccdcal process`` when a light's :class:`~ccdcal.lights.task.OptionalSteps` has
something to do (the fused 16-bit path of :mod:`ccdcal.lights.worker` is taken otherwise). In order:

1. the raw pixels in float64, overscan subtracted and trimmed (:mod:`ccdcal.kernels.overscan`);
2. the masters, checked to have been built from inputs prepared the same way (their OVSCMETH, OVSCSEC
   and TRIMSECT cards) and to have the trimmed shape;
3. ``(light − bias − dark × scale) / flat`` by the same kernel as the fused path
   (:func:`ccdcal.kernels.light.calibrate_image`), flat pixels below ``flat_min`` flagged (MASK bit 1),
   below ``flat_low`` too (bit 16), and the raw samples at or above the saturation level, found before
   the overscan and trimmed with the image (bit 8);
4. the bad-pixel mask ORed into MASK (bit 2);
5. the standard deviation, created and propagated as ccdproc does (:mod:`ccdcal.kernels.uncertainty`);
6. L.A.Cosmic on the calibrated image, cleaned pixels flagged (MASK bit 4);
7. the file: float32 image, MASK (when a pixel is flagged), UNCERT (with ``--uncertainty``), the raw
   header with the trim applied to its WCS, and cards and HISTORY for each step.

The MASK reads back as ``CCDData.mask`` (any bit set) and UNCERT as its ``StdDevUncertainty``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ccdcal.files.calibrated import output_cards, write_calibrated
from ccdcal.files.cardtext import card_name
from ccdcal.kernels.cosmic import clean_cosmic_rays
from ccdcal.kernels.light import LOW_FLAT_BIT, SATURATED_BIT, be_words, calibrate_image, clamp_flat
from ccdcal.kernels.overscan import (
    NO_OVERSCAN,
    OverscanPlan,
    apply_overscan,
    describe,
    shown,
    signature_of_header,
    trimmed_header_changes,
)
from ccdcal.kernels.saturation import saturated
from ccdcal.kernels.uncertainty import deviation, propagate
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
    cached,
    image_level,
    level_warning,
    master_bytes,
    master_pixels,
    prepared_flat,
)
from ccdcal.lights.task import FrameResult, FrameTask, MasterUse

#: MASK bits: flat below flat_min (clamped), bad pixel of the bpm master, cosmic ray cleaned; saturated in
#: the raw frame and low flat response are :mod:`ccdcal.kernels.light`'s.
FLAT_BIT, BPM_BIT, COSMIC_BIT = 1, 2, 4


def calibrate_with_steps(task: FrameTask, raw: RawFrame) -> FrameResult:
    """Calibrate one light with its optional steps into a temporary file (see the module docstring).

    Raises
    ------
    FitsFormatError, ValueError
        A master prepared differently, of another shape, or unreadable (the caller records the light
        ``failed`` with the message).
    """
    steps = task.optional
    assert steps is not None
    plan: OverscanPlan = steps.overscan or NO_OVERSCAN
    values = _values(raw)
    saturation = light_saturation(task, raw.header)
    raw_saturated = saturated(values, saturation.level)  # the raw values, before the overscan
    prepared, overscan_level = apply_overscan(values, plan)
    if plan.trim is not None:  # the MASK is of the output: the trimmed area
        raw_saturated = raw_saturated[plan.trim.slices]
    shape = (int(prepared.shape[0]), int(prepared.shape[1]))
    for use in (task.bias, task.dark, task.flat, steps.bpm):
        _check_preparation(use, plan)
    bias, dark = master_pixels(task.bias, shape), master_pixels(task.dark, shape)
    flat = None if task.flat is None else prepared_flat(task.flat, task.flat_min, task.flat_low, shape)
    image = calibrate_image(
        prepared, bias, dark, task.dark_scale, inv_flat=flat.inverse if flat is not None else None
    )
    mask = np.zeros(shape, dtype=np.uint8) if flat is None else np.array(flat.bits, dtype=np.uint8)
    mask |= raw_saturated.astype(np.uint8) * np.uint8(SATURATED_BIT)
    details: dict[str, Any] = {}  # the saturation record first, once its pixels are counted (below)
    cards: list[tuple[str, Any, str]] = []
    before: list[str] = []
    after: list[str] = []
    if plan.applies:
        details["overscan"] = {
            "status": "applied",
            "mode": steps.overscan_mode,
            **plan.signature(),
            "axis": plan.axis,
            "level": overscan_level,
        }
        cards += describe(plan, overscan_level)
        before += _overscan_history(plan, overscan_level)
    if steps.bpm is not None:
        bad = master_pixels(steps.bpm, shape)
        assert bad is not None
        flagged = bad != 0
        mask |= flagged.astype(np.uint8) * np.uint8(BPM_BIT)
        n_bad = int(np.count_nonzero(flagged))
        details["bpm"] = {"flagged": n_bad}
        cards += [
            ("BPMCOR", steps.bpm.name, "bad-pixel mask ORed into MASK (bit 2)"),
            ("NBADPIX", n_bad, "pixels flagged by the bad-pixel mask"),
        ]
        bpm_name = card_name(steps.bpm.name)
        after.append(f"bad pixels: {bpm_name} sha256 {steps.bpm.sha256}: {n_bad} flagged in MASK")
    sigma = None
    if steps.noise is not None:
        sigma = _uncertainty(task, prepared, bias, dark, shape)
        details["uncertainty"] = {"status": "applied", **steps.noise.as_json(), "masters": _with_sigma(task)}
        cards += [
            ("UNCGAIN", steps.noise.gain, f"[e-/ADU] gain of UNCERT ({steps.noise.gain_source})"),
            ("UNCRDNS", steps.noise.readnoise, f"[e-] read noise of UNCERT ({steps.noise.readnoise_source})"),
        ]
        after += _uncertainty_history(task, steps.noise)
    if steps.cosmic is not None:
        gain, readnoise, source = steps.cosmic_noise or (1.0, 6.5, "ccdproc defaults")
        known = (mask & ~np.uint8(LOW_FLAT_BIT)) != 0  # a vignetted pixel may still hold a cosmic ray
        image, cosmic = clean_cosmic_rays(image, known, steps.cosmic, gain, readnoise)
        mask |= cosmic.astype(np.uint8) * np.uint8(COSMIC_BIT)
        n_cosmic = int(np.count_nonzero(cosmic))
        details["cosmic_rays"] = {
            "status": "applied",
            "method": "ccdproc.cosmicray_lacosmic",
            **steps.cosmic.as_json(),
            "gain": gain,
            "readnoise": readnoise,
            "noise_source": source,
            "cleaned": n_cosmic,
        }
        cards += [
            ("CRCLEAN", n_cosmic, "cosmic-ray pixels cleaned, flagged in MASK (bit 4)"),
            ("CRSIGCLP", steps.cosmic.sigclip, "L.A.Cosmic sigclip"),
            ("CROBJLIM", steps.cosmic.objlim, "L.A.Cosmic objlim"),
        ]
        after.append(
            f"cosmic rays: L.A.Cosmic (ccdproc.cosmicray_lacosmic, astroscrappy) sigclip "
            f"{steps.cosmic.sigclip:g} sigfrac {steps.cosmic.sigfrac:g} objlim {steps.cosmic.objlim:g} "
            f"niter {steps.cosmic.niter} gain {gain:g} readnoise {readnoise:g} ({source}): "
            f"{n_cosmic} pixels cleaned ({steps.cosmic.cleantype}) and flagged in MASK"
        )
    header = raw.header.copy()
    before += trimmed_header_changes(header, plan)
    words = buffer(shape[0] * shape[1])
    total = be_words(image, words)
    counts = mask_counts(mask)
    details = {"saturation": saturation_record(saturation, counts["bits"]["8"]), **details, "mask": counts}
    all_cards = step_cards(task, counts, header, saturation) + cards
    text = output_cards(header, shape, all_cards, history_lines(task, counts, saturation, (before, after)))
    output = Path(task.output)
    flagged_any = counts["flagged"] > 0
    temporary, digest = write_calibrated(
        output.parent,
        output.name,
        text,
        words,
        total,
        mask if flagged_any else None,
        sync=False,
        uncertainty=sigma,
        mask_cards=MASK_CARDS if flagged_any else (),
    )
    warning = level_warning(task.bias, bias, image_level(prepared))
    if warning:
        details["warnings"] = [warning]
    return FrameResult(
        task.frame_id,
        str(temporary),
        digest,
        None,
        flat.clamped if flat is not None else 0,
        details=details,
        warnings=(warning,) if warning else (),
    )


def _values(raw: RawFrame) -> np.ndarray:
    """The raw pixels in float64, whichever way they were read."""
    if raw.values is not None:
        return np.asarray(raw.values, dtype=np.float64)
    assert raw.words is not None
    stored = raw.words.byteswap()
    if raw.signed:
        values = stored.view(np.int16).astype(np.float64)
    else:
        values = (stored ^ np.uint16(0x8000)).astype(np.float64)
    return values.reshape(raw.shape)


# -- masters -----------------------------------------------------------------------------------------------


def _extras(use: MasterUse) -> tuple[dict[str, Any], np.ndarray | None]:
    """A master's preparation (its OVSCMETH/OVSCSEC/TRIMSECT cards) and its UNCERT image, if any
    (read once per worker, from a file whose sha256 is the catalog's)."""

    def make() -> tuple[dict[str, Any], np.ndarray | None]:
        content = master_bytes(use)
        with fits.open(io.BytesIO(content), memmap=False) as hdul:
            signature = signature_of_header(hdul[0].header)
            sigma = None
            if "UNCERT" in hdul:
                sigma = np.ascontiguousarray(hdul["UNCERT"].data, dtype=np.float32)
        return signature, sigma

    extras: tuple[dict[str, Any], np.ndarray | None] = cached(("extras", use.path, use.sha256), make)
    return extras


def _check_preparation(use: MasterUse | None, plan: OverscanPlan) -> None:
    """Refuse a master whose inputs were not overscan-corrected and trimmed as this light is."""
    if use is None:
        return
    master, _ = _extras(use)
    light = plan.signature()
    if master != light:
        again = (
            "build it again with `ccdcal masters --bpm`"
            if use.role == "bpm"
            else "build the masters with the same --overscan (`ccdcal process` rebuilds them)"
        )
        raise ValueError(
            f"the {use.role} master {use.name} was built from frames prepared with overscan "
            f"{shown(master)}, and this light is prepared with {shown(light)}: {again}"
        )


def _sigma(use: MasterUse | None, shape: tuple[int, int]) -> np.ndarray | None:
    if use is None:
        return None
    sigma = _extras(use)[1]
    if sigma is not None and sigma.shape != shape:
        raise ValueError(f"the {use.role} master {use.name}'s UNCERT extension has another shape")
    return sigma


def _with_sigma(task: FrameTask) -> dict[str, bool]:
    """Per master applied: whether it carried an uncertainty."""
    return {u.role: _extras(u)[1] is not None for u in (task.bias, task.dark, task.flat) if u is not None}


# -- uncertainty ---------------------------------------------------------------------------------------


def _uncertainty(
    task: FrameTask,
    prepared: np.ndarray,
    bias: np.ndarray | None,
    dark: np.ndarray | None,
    shape: tuple[int, int],
) -> np.ndarray:
    steps = task.optional
    assert steps is not None
    assert steps.noise is not None
    signal = prepared if bias is None else prepared - bias.astype(np.float64)
    raw_sigma = deviation(signal, steps.noise.gain, steps.noise.readnoise)
    numerator = signal if dark is None else signal - dark.astype(np.float64) * task.dark_scale
    flat = None
    if task.flat is not None:
        pixels = master_pixels(task.flat, shape)
        assert pixels is not None
        flat = clamp_flat(pixels, task.flat_min)[0]
    sigma = propagate(
        raw_sigma,
        numerator,
        bias_sigma=_sigma(task.bias, shape),
        dark_sigma=_sigma(task.dark, shape),
        dark_scale=task.dark_scale,
        flat=flat,
        flat_sigma=_sigma(task.flat, shape),
    )
    return sigma.astype(np.float32)


def _uncertainty_history(task: FrameTask, noise: Any) -> list[str]:
    """The HISTORY of the uncertainty: how it was created, the masters whose UNCERT it carries, and the
    masters written without one by an earlier ccdcal, whose term is left out (docs/design.md, Science)."""
    with_sigma = _with_sigma(task)
    carried = [role for role, has in with_sigma.items() if has]
    lines = [
        f"uncertainty: UNCERT extension (standard deviation, ADU): ccdproc create_deviation with gain "
        f"{noise.gain:g} e-/ADU ({noise.gain_source}) and read noise {noise.readnoise:g} e- "
        f"({noise.readnoise_source}) on the light minus bias"
    ]
    if carried:
        lines.append(f"uncertainty: propagated with the {', '.join(carried)} masters' UNCERT (NDData rules)")
    for use in (u for u in (task.bias, task.dark, task.flat) if u is not None and not with_sigma[u.role]):
        lines.append(
            f"uncertainty: the {use.role} master {card_name(use.name)} has no UNCERT (written by an earlier "
            "ccdcal): its term is left out; `ccdcal masters --uncertainty` builds it again with one"
        )
    return lines


def _overscan_history(plan: OverscanPlan, level: float | None) -> list[str]:
    lines = []
    if plan.method != "none" and plan.biassec is not None:
        how = "row-wise median" if plan.method == "median" else f"{plan.method} fit of the row-wise median"
        if plan.axis == 0:
            how = how.replace("row", "column")
        lines.append(f"overscan subtracted: {how} of {plan.biassec.text}, level {level:.6g}")
    if plan.trim is not None:
        lines.append(f"trimmed to {plan.trim.text}")
    return lines
