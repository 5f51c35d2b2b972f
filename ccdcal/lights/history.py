"""The provenance a calibrated light carries in its header: BIASCOR/DARKCOR/FLATCOR and the other cards of
the steps applied, MJD-OBS when the raw header lacks it, and the HISTORY lines naming every master by file
name and sha256 (as IRAF's ccdproc did). Used by both worker paths."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from astropy.io import fits

from ccdcal.files.cardtext import card_name
from ccdcal.lights.task import FrameTask


def step_cards(task: FrameTask, masked: int, raw: fits.Header) -> list[tuple[str, Any, str]]:
    """The cards of the master steps applied (BIASCOR, DARKCOR, DARKSCAL, FLATCOR, FLATMIN, NMASKED), after
    MJD-OBS when the raw header lacks it."""
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
        cards.append(("NMASKED", masked, "flat pixels clamped, flagged in MASK"))
    return cards


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


def history_lines(task: FrameTask, masked: int, steps: tuple[list[str], list[str]] = ([], [])) -> list[str]:
    """HISTORY lines: the raw file, ``steps[0]`` (done before the masters), each master, ``steps[1]``.

    File names are written as :func:`~ccdcal.files.cardtext.card_name` writes them, so that
    ``ccdcal provenance --from-header`` reads each back exactly.
    """
    lines = [f"ccdcal: calibrated from {card_name(Path(task.path).name)} sha256 {task.sha256}", *steps[0]]
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
    lines.extend(task.notes)
    lines.extend(steps[1])
    lines.append("pixels: (light - bias - dark x scale) / flat, float32")
    return lines
