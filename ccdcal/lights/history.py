"""The provenance a calibrated light carries in its header: BIASCOR/DARKCOR/FLATCOR and the other cards of
the steps applied, MJD-OBS when the raw header lacks it, and the HISTORY lines naming every master by file
name and sha256 (as IRAF's ccdproc did). Used by both worker paths."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ccdcal.files.cardtext import card_name
from ccdcal.kernels.light import mask_bit_counts
from ccdcal.kernels.saturation import HEADER_KEYS, Saturation, resolve_saturation
from ccdcal.lights.records import MaskCounts, SaturationRecord
from ccdcal.lights.task import FrameTask

#: The bits of the MASK extension ccdcal sets (docs/design.md, Science): value, meaning.
MASK_BITS: tuple[tuple[int, str], ...] = (
    (1, "flat below FLATMIN, clamped"),
    (2, "bad pixel of the bpm master"),
    (4, "cosmic ray, cleaned (L.A.Cosmic)"),
    (8, "saturated in the raw frame (SATLEVEL)"),
    (16, "low flat response, below FLATLOW (vignetted)"),
)


def mask_bit_keyword(bit: int) -> str:
    """The MASK extension's card describing ``bit``: ``MASKBIT1`` ... ``MASKBIT8``, ``MASKBT16`` (a keyword
    has at most 8 characters)."""
    keyword = f"MASKBIT{bit}"
    return keyword if len(keyword) <= 8 else f"MASKBT{bit}"


#: The MASK extension's cards: the meaning of each bit.
MASK_CARDS = tuple(
    (mask_bit_keyword(bit), meaning, f"meaning of MASK value bit {bit}") for bit, meaning in MASK_BITS
)


def mask_counts(mask: np.ndarray | None) -> MaskCounts:
    """How many pixels a MASK flags, in all and bit by bit (every bit of :data:`MASK_BITS`; all 0 for
    ``None``, no MASK)."""
    if mask is None:
        return {"flagged": 0, "bits": {str(bit): 0 for bit, _ in MASK_BITS}}
    flagged, per_bit = mask_bit_counts(mask)
    return {"flagged": flagged, "bits": {str(bit): per_bit[bit] for bit, _ in MASK_BITS}}


def mask_cards(counts: MaskCounts) -> list[tuple[str, Any, str]]:
    """NMASKED (every flagged pixel) and one NMASKn card per bit of :data:`MASK_BITS`."""
    cards: list[tuple[str, Any, str]] = [("NMASKED", counts["flagged"], "pixels flagged in MASK (any bit)")]
    for bit, meaning in MASK_BITS:
        cards.append(
            (f"NMASK{bit}", counts["bits"][str(bit)], f"pixels with MASK bit {bit} ({meaning})"[:60])
        )
    return cards


def light_saturation(task: FrameTask, raw: fits.Header) -> Saturation:
    """A light's saturation level (:func:`~ccdcal.kernels.saturation.resolve_saturation`): ``--saturation``,
    else its raw header's (as stored: BITPIX, BZERO and BSCALE of the data unit), else its data type's."""
    cards = {key: raw[key] for key in HEADER_KEYS if key in raw}
    usable = {key: value for key, value in cards.items() if not isinstance(value, fits.card.Undefined)}
    return resolve_saturation(usable, task.saturation)


def step_cards(
    task: FrameTask, counts: MaskCounts, raw: fits.Header, saturation: Saturation
) -> list[tuple[str, Any, str]]:
    """The cards of the master steps applied (BIASCOR, DARKCOR, DARKSCAL, FLATCOR, FLATMIN, FLATLOW), after
    MJD-OBS when the raw header lacks it, then the saturation level (SATLEVEL, when known) and the MASK's
    counts (:func:`mask_cards`)."""
    mjd = mjd_card(raw)
    cards: list[tuple[str, Any, str]] = [mjd] if mjd else []
    if task.bias is not None:
        cards.append(("BIASCOR", card_name(task.bias.name), "master bias subtracted"))
    if task.dark is not None:
        cards.append(("DARKCOR", card_name(task.dark.name), "master dark subtracted"))
        cards.append(("DARKSCAL", float(task.dark_scale), "dark scale factor t_light / t_dark"))
    if task.flat is not None:
        flat_name = card_name(task.flat.name)
        cards.append(("FLATCOR", flat_name, "divided by the master flat as stored (median 1)"))
        cards.append(("FLATMIN", float(task.flat_min), "flat pixels below it clamped to it"))
        cards.append(("FLATLOW", float(task.flat_low), "flat pixels below it: low response, MASK bit 16"))
    if saturation.level is not None:
        source = f"raw ADU; saturated at or above: MASK bit 8 ({saturation.source})"
        cards.append(("SATLEVEL", float(saturation.level), source[:60]))
    return cards + mask_cards(counts)


_MJD_ZERO = dt.datetime(1858, 11, 17)


def mjd_card(header: fits.Header) -> tuple[str, Any, str] | None:
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


def history_lines(
    task: FrameTask,
    counts: MaskCounts,
    saturation: Saturation,
    steps: tuple[list[str], list[str]] = ([], []),
) -> list[str]:
    """HISTORY lines: the raw file, its ``saturation`` level, ``steps[0]`` (done before the masters), each
    master, ``steps[1]``; ``counts``: the MASK's (:func:`mask_counts`).

    File names are written as :func:`~ccdcal.files.cardtext.card_name` writes them, so that
    ``ccdcal provenance --from-header`` reads each back exactly.
    """
    bits = counts["bits"]
    masked, saturated, low = bits.get("1", 0), bits.get("8", 0), bits.get("16", 0)
    lines = [f"ccdcal: calibrated from {card_name(Path(task.path).name)} sha256 {task.sha256}"]
    if saturation.level is not None:
        lines.append(
            f"saturation level {saturation.describe()}: {saturated} raw pixels at or above it "
            "flagged in MASK (bit 8)"
        )
    else:
        lines.append(f"saturation level: {saturation.describe()}: no pixel flagged (--saturation sets one)")
    lines += steps[0]
    if task.bias is not None:
        lines.append(f"bias subtracted: {card_name(task.bias.name)} sha256 {task.bias.sha256}")
    if task.dark is not None:
        lines.append(f"dark subtracted: {card_name(task.dark.name)} sha256 {task.dark.sha256}")
        lines.append(f"dark scaled by t_light / t_dark = {task.dark_scale:.8g}")
    if task.flat is not None:
        lines.append(f"flat divided: {card_name(task.flat.name)} sha256 {task.flat.sha256}")
        lines.append(
            f"flat divided as stored (median 1, norm 1); {masked} pixels below {task.flat_min:g} "
            "clamped to it" + (" and flagged in the MASK extension" if masked else "")
        )
        lines.append(
            f"low flat response: {low} pixels where the flat is below {task.flat_low:g} flagged in MASK "
            "(bit 16)"
        )
    lines.extend(task.notes)
    lines.extend(steps[1])
    if task.bias is None and task.dark is None and task.flat is None and not steps[0]:
        lines.append("no calibration step applied (--write-uncalibrated): the pixels are the raw frame's")
    lines.append("pixels: (light - bias - dark x scale) / flat, float32")
    return lines


def saturation_record(saturation: Saturation, flagged: int) -> SaturationRecord:
    """The ``saturation`` record of ``calibrations.steps``: the level, its source and the pixels ``flagged``
    (bit 8); ``not_available`` with the reason when no level is known."""
    record: SaturationRecord = {
        "status": "applied",
        "level": saturation.level,
        "source": saturation.source,
        "detail": saturation.detail,
        "option": saturation.option,
        "flagged": flagged,
    }
    if saturation.level is None:
        why = f" ({saturation.detail})" if saturation.detail else ""
        record["status"] = "not_available"
        record["reason"] = f"no saturation level known{why}: pass --saturation"
    return record
