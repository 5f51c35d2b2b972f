"""Why nothing matched: the usable master nearest to matching a light, named in the reason
(``no dark at 300 s, -10 °C ±2 (nearest: 120 s at -10.2 °C)``), and the words of the matching reasons.

:func:`nearest` reads the current masters of the light's camera set-up; a plan of many lights reads them
once per set-up (:func:`setup_masters`, :func:`nearest_among`, through
:class:`ccdcal.lights.matching.Choices`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.lineage import unusable_reason
from ccdcal.catalog.models import Master
from ccdcal.catalog.queries import MATCH_KEYS, SETUP_KEYS, MatchRules, duration_text, unusable_masters
from ccdcal.files.naming import number_text


def nearest(session: Session, kind: str, target: Mapping[str, Any], rules: MatchRules) -> str:
    """``nearest: 120 s at -10.2 °C``: the usable master of ``kind`` closest to matching ``target``.

    Candidates are the current masters of the same camera set-up that may be used (not marked bad, no
    bad input or calibrator); those with the same camera keys come first (else the first differing key is
    named). They are ranked by how many of the criteria (temperature, exposure for darks, filter for
    flats) they fail, then by exposure distance, then by temperature distance. A master that would match
    but may not be used is named with the reason (``master_dark_60s.fits is marked bad (stripes)``).
    """
    every, unusable = setup_masters(session, kind, target)
    return nearest_among(
        lambda master: unusable_reason(session, master), kind, target, rules, every, unusable
    )


def setup_masters(session: Session, kind: str, target: Mapping[str, Any]) -> tuple[list[Master], set[int]]:
    """The current masters of ``kind`` of the target's camera set-up, and the ids of unusable masters."""
    query = select(Master).where(
        Master.kind == kind,
        Master.status == "current",
        *(getattr(Master, k).is_not_distinct_from(target.get(k)) for k in SETUP_KEYS),
    )
    unusable = set(session.scalars(unusable_masters()))
    return list(session.scalars(query)), unusable


def nearest_among(
    why_unusable: Callable[[Master], str | None],
    kind: str,
    target: Mapping[str, Any],
    rules: MatchRules,
    every: list[Master],
    unusable: set[int],
) -> str:
    """:func:`nearest` among ``every`` current master of the set-up (``unusable``: ids not to use)."""
    candidates = [m for m in every if m.id not in unusable and not m.is_bad]

    def distance(master: Master) -> tuple[Any, ...]:
        return _distance(master, kind, target, rules)

    def kept(master: Master) -> bool:
        return master.id not in unusable and not master.is_bad

    blocked = [m for m in every if not kept(m) and not _camera_difference(m, target) and distance(m)[0] == 0]
    why = f"; {why_unusable(min(blocked, key=distance))}" if blocked else ""
    if not candidates:
        return f"no usable {kind} master for this camera{why}"
    same_camera = [m for m in candidates if not _camera_difference(m, target)]
    dated = [m for m in same_camera if distance(m)[0] == 0 and dated_rule(m, kind, target, rules)]
    if dated:  # they would match but for the light's date: name the rule
        closest = min(dated, key=lambda m: _time_gap(m, target))
        return f"{dated_rule(closest, kind, target, rules)}{why}"
    best = min(same_camera or candidates, key=distance)
    described = _describe(best, kind)
    difference = _camera_difference(best, target)
    return f"nearest: {difference + ', ' if difference else ''}{described}{why}"


def dated_rule(master: Master, kind: str, target: Mapping[str, Any], rules: MatchRules) -> str:
    """The rule on the light's date that ``master`` fails (``""``: none, or the light has no date):
    ``newest is 12 days old, max age 7 days``, or its validity range."""
    when = target.get("date_obs")
    if when is None:
        return ""
    start, end = master.valid_from, master.valid_to
    if rules.validity and ((start is not None and when < start) or (end is not None and when > end)):
        return (
            f"{Path(master.path).name} is valid {_date_text(start, 'any time')} to "
            f"{_date_text(end, 'any time')}, the light is of {_date_text(when, '')}"
        )
    age = rules.max_age.of(kind)
    if age is None:
        return ""
    if master.date_obs_mean is None:
        return f"the {kind} masters have no DATE-OBS, max age {duration_text(age)}"
    gap = when - master.date_obs_mean
    if abs(gap) <= age:
        return ""
    span = duration_text(gap)
    old = f"newest is {span} old" if gap > dt.timedelta(0) else f"nearest is {span} after the light"
    return f"{old}, max age {duration_text(age)}"


def _time_gap(master: Master, target: Mapping[str, Any]) -> float:
    when, mean = target.get("date_obs"), master.date_obs_mean
    return abs((when - mean).total_seconds()) if when is not None and mean is not None else float("inf")


def _date_text(value: dt.datetime | None, open_end: str) -> str:
    return open_end if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _camera_difference(master: Master, target: Mapping[str, Any]) -> str:
    for key in MATCH_KEYS:
        value = getattr(master, key)
        if value != target.get(key):
            label = {"readout_mode": "readout mode", "xbinning": "x binning", "ybinning": "y binning"}
            return f"{label.get(key, key)} {value_text(value)}"
    return ""


def _distance(master: Master, kind: str, target: Mapping[str, Any], rules: MatchRules) -> tuple[Any, ...]:
    temp, mean = target.get("ccd_temp"), master.ccd_temp_mean
    temp_gap = abs(mean - temp) if temp is not None and mean is not None else float("inf")
    fails = int(not temp_gap <= rules.temp_tolerance) if temp is not None else int(mean is not None)
    exposure_gap = 0.0
    if kind == "dark":
        exptime = target.get("exptime")
        exposure_gap = abs((master.exptime or 0.0) - (exptime or 0.0))
        fails += int(exposure_gap > rules.exptime_tolerance * max(abs(exptime or 0.0), 1e-9))
    if kind == "flat":
        fails += int(master.filter != target.get("filter"))
    return (fails, exposure_gap, temp_gap, -master.id)


def _describe(master: Master, kind: str) -> str:
    temp = f"{temp_text(master.ccd_temp_mean)} °C" if master.ccd_temp_mean is not None else "no temperature"
    if kind == "dark":
        return f"{value_text(master.exptime)} s at {temp}"
    if kind == "flat":
        return f"filter {value_text(master.filter)} at {temp}"
    return temp


def wanted_temp(target: Mapping[str, Any], rules: MatchRules) -> str:
    temp = target.get("ccd_temp")
    if temp is None:
        return "unknown temperature"
    return f"{temp_text(temp)} °C ±{number_text(rules.temp_tolerance)}"


def temp_text(value: float) -> str:
    """A temperature for messages: at most two decimals, no trailing zeros (``-10.2``, ``-102.25``)."""
    return f"{round(value, 2):g}"


def value_text(value: Any) -> str:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return number_text(value)
    return str(value)


def shape_text(shape: tuple[Any, Any]) -> str:
    return f"{value_text(shape[0])}x{value_text(shape[1])}"


def setup_text(target: Mapping[str, Any]) -> str:
    """``ZWO ASI294MM Pro b2x2 80x64``: the camera set-up of a light, for messages."""
    binning = f"b{value_text(target.get('xbinning'))}x{value_text(target.get('ybinning'))}"
    parts = [binning, shape_text((target.get("naxis1"), target.get("naxis2")))]
    if target.get("instrument"):
        parts.insert(0, str(target["instrument"]))
    return " ".join(parts)
