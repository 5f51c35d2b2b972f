"""Which masters calibrate a light, and why: the rules of :mod:`ccdcal.catalog.selection`, per step.

For each step (bias, dark, flat) of one light, in order (:func:`match_light`):

1. skipped on purpose (``--no-dark``, ``--no-flat``; ``--no-bias``: the darks hold the bias);
2. pinned (``--bias/--dark/--flat FILE``): that master, whatever its status;
3. not available: the catalog holds no frame and no master of the kind for the light's camera set-up
   (:func:`~ccdcal.catalog.queries.kind_available`; an LN2-cooled CCD has no darks);
4. otherwise the SQL match of DESIGN.md (same camera keys, |ΔT| within the tolerance, dark exposure or
   nearest scaled dark, flat filter; nearest temperature, nearest time, newest). Nothing matching is
   ``missing`` — the light is not calibrated — unless ``--allow-missing`` names the kind
   (``allowed_missing``). The reason names the failed key and the nearest candidate:
   ``no dark at 300 s, -10 °C ±2 (nearest: 120 s at -10.2 °C)``.

Every step keeps the numbers behind its choice (ΔT, Δt, scale, pinned) for ``calibration_masters``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Frame, Master
from ccdcal.catalog.queries import (
    MATCH_KEYS,
    SETUP_KEYS,
    MatchRules,
    kind_available,
    unusable_masters,
    usable,
)
from ccdcal.catalog.selection import best_masters, select_master
from ccdcal.impact import unusable_reason
from ccdcal.naming import number_text

#: The calibration steps, in the order they are matched and applied.
ROLES = ("bias", "dark", "flat")

#: Step statuses recorded in ``calibrations.steps`` (``missing`` leaves the light uncalibrated).
APPLIED, NOT_AVAILABLE, SKIPPED, ALLOWED_MISSING, MISSING = (
    "applied",
    "not_available",
    "skipped",
    "allowed_missing",
    "missing",
)


@dataclass(frozen=True)
class MasterInfo:
    """What calibration needs of a ``masters`` row (a plain, picklable copy)."""

    id: int
    kind: str
    path: str
    sha256: str
    version: int
    status: str
    is_bad: bool
    exptime: float | None
    filter: str | None
    ccd_temp_mean: float | None
    date_obs_mean: dt.datetime | None
    includes_bias: bool
    naxis1: int | None
    naxis2: int | None

    @classmethod
    def of(cls, master: Master) -> MasterInfo:
        """Copy the row's values."""
        return cls(
            id=master.id,
            kind=master.kind,
            path=master.path,
            sha256=master.sha256,
            version=master.version,
            status=master.status,
            is_bad=master.is_bad,
            exptime=master.exptime,
            filter=master.filter,
            ccd_temp_mean=master.ccd_temp_mean,
            date_obs_mean=master.date_obs_mean,
            includes_bias=master.includes_bias,
            naxis1=master.naxis1,
            naxis2=master.naxis2,
        )

    @property
    def name(self) -> str:
        """The file name."""
        return Path(self.path).name


@dataclass
class Step:
    """One step of one light's calibration: what was decided and why."""

    role: str
    status: str
    reason: str
    master: MasterInfo | None = None
    delta_temp: float | None = None
    delta_time: float | None = None
    scale: float | None = None
    pinned: bool = False

    def as_json(self) -> dict[str, Any]:
        """The step as stored in ``calibrations.steps``."""
        data: dict[str, Any] = {"status": self.status, "reason": self.reason}
        if self.master is not None:
            data |= {
                "master_id": self.master.id,
                "path": self.master.path,
                "sha256": self.master.sha256,
                "delta_temp": self.delta_temp,
                "delta_time": self.delta_time,
                "scale": self.scale,
                "pinned": self.pinned,
            }
        return data


@dataclass(frozen=True)
class MatchOptions:
    """The choices that decide a light's steps.

    Attributes
    ----------
    rules : MatchRules
        Temperature and exposure tolerances, dark scaling.
    no_bias : bool
        Calibrate without a master bias: darks that contain the bias, at the light's exposure only.
    skip : frozenset of str
        Steps skipped on purpose (``--no-dark``, ``--no-flat``).
    allow_missing : frozenset of str
        Steps whose missing master does not stop the calibration.
    pins : mapping of str to MasterInfo
        Masters imposed per role (``--bias/--dark/--flat FILE``).
    """

    rules: MatchRules = field(default_factory=MatchRules)
    no_bias: bool = False
    skip: frozenset[str] = frozenset()
    allow_missing: frozenset[str] = frozenset()
    pins: Mapping[str, MasterInfo] = field(default_factory=dict)


@dataclass
class LightMatch:
    """The steps chosen for one light."""

    frame_id: int
    steps: dict[str, Step]

    @property
    def missing(self) -> list[Step]:
        """Steps without a master that stop the calibration."""
        return [s for s in self.steps.values() if s.status == MISSING]

    @property
    def reason(self) -> str | None:
        """Why the light cannot be calibrated (``None``: it can)."""
        if self.steps and all(s.status == NOT_AVAILABLE for s in self.steps.values()):
            return "nothing to calibrate it with: " + "; ".join(s.reason for s in self.steps.values())
        return "; ".join(s.reason for s in self.missing) or None

    def applied(self, role: str) -> MasterInfo | None:
        """The master applied in a step, if any."""
        step = self.steps.get(role)
        return step.master if step is not None and step.status == APPLIED else None


def target_of(light: Frame) -> dict[str, Any]:
    """A light's values as a matching target (its id, camera keys, temperature, time, exposure, filter)."""
    keys = {"id", *MATCH_KEYS, *SETUP_KEYS, "ccd_temp", "date_obs", "exptime", "filter"}
    return {key: getattr(light, key) for key in keys}


class Choices:
    """The masters chosen for lights, by :func:`~ccdcal.catalog.selection.select_master`'s rules.

    With ``batch`` (a plan of every usable light), the first question about a kind and variant (rules,
    dark with or without the bias) is answered for every usable light at once, by one set-based select
    (:func:`~ccdcal.catalog.selection.best_masters`): planning 100,000 lights is a few queries, not a few
    per light. Without it, or for a target that is not a usable light, one select answers one target.
    """

    def __init__(self, session: Session, *, batch: bool = False) -> None:
        self.session = session
        self.batch = batch
        self.available: dict[Any, bool] = {}
        self._lights: set[int] | None = None
        self._best: dict[Any, dict[int, int]] = {}
        self._info: dict[int, tuple[Master, MasterInfo]] = {}

    def select(self, kind: str, target: dict[str, Any], rules: MatchRules, **flags: bool) -> Master | None:
        """The best master of ``kind`` for ``target`` (``None``: nothing matches)."""
        frame_id = target.get("id")
        if not self.batch or frame_id is None or frame_id not in self._usable_lights():
            return select_master(self.session, kind, target, rules, **flags)
        key = (kind, rules, tuple(sorted(flags.items())))
        if key not in self._best:
            self._best[key] = best_masters(self.session, kind, usable("light"), rules, **flags)
        master_id = self._best[key].get(frame_id)
        return None if master_id is None else self._row(master_id)[0]

    def info(self, master: Master) -> MasterInfo:
        """The master's :class:`MasterInfo`, made once per master."""
        return self._row(master.id, master)[1]

    def _row(self, master_id: int, master: Master | None = None) -> tuple[Master, MasterInfo]:
        if master_id not in self._info:
            row = master if master is not None else self.session.get(Master, master_id)
            assert row is not None
            self._info[master_id] = (row, MasterInfo.of(row))
        return self._info[master_id]

    def _usable_lights(self) -> set[int]:
        if self._lights is None:
            self._lights = set(self.session.scalars(select(Frame.id).where(usable("light"))))
        return self._lights


def match_light(
    session: Session,
    light: Frame,
    options: MatchOptions,
    available: dict[Any, bool] | None = None,
    choices: Choices | None = None,
) -> LightMatch:
    """Decide each step of one light (see the module's description).

    Parameters
    ----------
    session : Session
        An open catalog session.
    light : Frame
        The light's ``frames`` row.
    options : MatchOptions
        Tolerances, skipped, allowed-missing and pinned steps.
    available : dict, optional
        A cache of :func:`~ccdcal.catalog.queries.kind_available` per kind and camera set-up, shared
        by the lights of one plan.
    choices : Choices, optional
        Shared by the lights of one plan (made with ``batch=True``: one select per kind for them all).

    Returns
    -------
    LightMatch
        One :class:`Step` per role.
    """
    target = target_of(light)
    choices = choices if choices is not None else Choices(session)
    cache = available if available is not None else choices.available
    steps: dict[str, Step] = {}
    steps["bias"] = _step(choices, "bias", target, options, _bias_query, cache)
    with_bias = steps["bias"].status in (APPLIED, MISSING)  # a missing bias stops the light anyway
    steps["dark"] = _step(choices, "dark", target, options, _dark_query(with_bias, options), cache)
    steps["flat"] = _step(choices, "flat", target, options, _flat_query, cache)
    return LightMatch(light.id, steps)


Query = Any  # (choices, target, rules) -> (Master | None, description of what was wanted)


def _step(
    choices: Choices,
    role: str,
    target: dict[str, Any],
    options: MatchOptions,
    query: Query,
    available: dict[Any, bool],
) -> Step:
    if role in options.skip or (role == "bias" and options.no_bias):
        why = "--no-bias: the darks contain the bias" if role == "bias" else f"--no-{role}"
        return Step(role, SKIPPED, why)
    if role in options.pins:
        return _pinned(role, options.pins[role], target, options)
    session = choices.session
    setup = (role, *(target.get(k) for k in SETUP_KEYS))
    if setup not in available:
        available[setup] = kind_available(session, role, target)
    if not available[setup]:
        return Step(
            role, NOT_AVAILABLE, f"no {role} frames in the catalog for this camera ({_setup(target)})"
        )
    master, wanted = query(choices, target, options.rules)
    if master is None:
        reason = f"{wanted} ({nearest(session, role, target, options.rules)})"
        if role in options.allow_missing:
            return Step(role, ALLOWED_MISSING, f"{reason}; allowed by --allow-missing {role}")
        return Step(role, MISSING, reason)
    info = choices.info(master)
    step = Step(role, APPLIED, "", info, *_deltas(info, target))
    if role == "dark":
        step.scale = _scale(info, target)
    step.reason = _matched_text(step)
    return step


def _bias_query(choices: Choices, target: dict[str, Any], rules: MatchRules) -> tuple[Master | None, str]:
    return choices.select("bias", target, rules), f"no bias at {_wanted_temp(target, rules)}"


def _flat_query(choices: Choices, target: dict[str, Any], rules: MatchRules) -> tuple[Master | None, str]:
    wanted = f"no flat in filter {_text(target.get('filter'))}, {_wanted_temp(target, rules)}"
    return choices.select("flat", target, rules), wanted


def _dark_query(bias_applied: bool, options: MatchOptions) -> Query:
    """The dark's select: bias-subtracted darks after a bias, else darks that hold the bias, unscaled."""

    def query(choices: Choices, target: dict[str, Any], rules: MatchRules) -> tuple[Master | None, str]:
        if target.get("exptime") is None:
            return None, "no exposure time in the light's header (EXPTIME absent, not a number or negative)"
        exposure = f"{_text(target.get('exptime'))} s, {_wanted_temp(target, rules)}"
        if bias_applied:
            wanted = f"no dark {'to scale to' if rules.dark_scale else 'at'} {exposure}"
            return choices.select("dark", target, rules, exclude_with_bias=True), wanted
        exact = replace(rules, dark_scale=False)
        master = choices.select("dark", target, exact, only_with_bias=True)
        if master is None and not options.no_bias:  # bias allowed missing: a bias-subtracted dark will do
            master = choices.select("dark", target, rules, exclude_with_bias=True)
        return master, f"no dark containing the bias at {exposure}"

    return query


def _pinned(role: str, master: MasterInfo, target: dict[str, Any], options: MatchOptions) -> Step:
    """A pinned master: applied whatever its status, unless it cannot serve this light at all."""
    shape = (master.naxis1, master.naxis2)
    light_shape = (target.get("naxis1"), target.get("naxis2"))
    if shape != light_shape:
        return Step(
            role,
            MISSING,
            f"pinned {role} {master.name} is {_shape(shape)} pixels, the light {_shape(light_shape)}",
        )
    step = Step(role, APPLIED, f"pinned with --{role}", master, *_deltas(master, target), pinned=True)
    if role == "dark":
        exptime, dark_time = target.get("exptime"), master.exptime
        same = exptime is not None and dark_time is not None and _same_exposure(exptime, dark_time, options)
        if not same and (master.includes_bias or not options.rules.dark_scale):
            why = "it contains the bias" if master.includes_bias else "add --dark-scale to scale it"
            return Step(
                role,
                MISSING,
                f"pinned dark {master.name} is {_text(dark_time)} s, the light {_text(exptime)} s: {why}",
            )
        step.scale = _scale(master, target)
    return step


def _same_exposure(exptime: float, dark_time: float, options: MatchOptions) -> bool:
    return abs(exptime - dark_time) <= options.rules.exptime_tolerance * max(abs(exptime), 1e-9)


def _deltas(master: MasterInfo, target: dict[str, Any]) -> tuple[float | None, float | None]:
    """(ΔT, Δt): master minus light, in °C and seconds (``None`` when either value is unknown)."""
    temp, when = target.get("ccd_temp"), target.get("date_obs")
    delta_temp = (
        master.ccd_temp_mean - temp if master.ccd_temp_mean is not None and temp is not None else None
    )
    delta_time = (
        (master.date_obs_mean - when).total_seconds()
        if master.date_obs_mean is not None and when is not None
        else None
    )
    return delta_temp, delta_time


def _scale(dark: MasterInfo, target: dict[str, Any]) -> float:
    """``t_light / t_dark`` for a bias-subtracted dark; 1 for one holding the bias or without exposures."""
    exptime = target.get("exptime")
    if dark.includes_bias or not exptime or not dark.exptime:
        return 1.0
    return float(exptime) / float(dark.exptime)


def _matched_text(step: Step) -> str:
    parts = []
    if step.delta_temp is not None:
        parts.append(f"ΔT {step.delta_temp:+.2f} °C")
    if step.delta_time is not None:
        parts.append(f"Δt {step.delta_time / 3600:+.2f} h")
    if step.scale is not None and step.scale != 1.0:
        parts.append(f"scaled x{step.scale:.6g}")
    return "nearest match" + (f": {', '.join(parts)}" if parts else "")


# -- why nothing matched --------------------------------------------------------------------------------


def nearest(session: Session, kind: str, target: Mapping[str, Any], rules: MatchRules) -> str:
    """``nearest: 120 s at -10.2 °C``: the usable master of ``kind`` closest to matching ``target``.

    Candidates are the current masters of the same camera set-up that may be used (not marked bad, no
    bad input or calibrator); those with the same camera keys come first (else the first differing key is
    named). They are ranked by how many of the criteria (temperature, exposure for darks, filter for
    flats) they fail, then by exposure distance, then by temperature distance. A master that would match
    but may not be used is named with the reason (``master_dark_60s.fits is marked bad (stripes)``).
    """
    query = select(Master).where(
        Master.kind == kind,
        Master.status == "current",
        *(getattr(Master, k).is_not_distinct_from(target.get(k)) for k in SETUP_KEYS),
    )
    unusable = set(session.scalars(unusable_masters()))
    every = list(session.scalars(query))
    candidates = [m for m in every if m.id not in unusable and not m.is_bad]

    def distance(master: Master) -> tuple[Any, ...]:
        return _distance(master, kind, target, rules)

    blocked = [
        m for m in every if m not in candidates and not _camera_difference(m, target) and distance(m)[0] == 0
    ]
    why = f"; {unusable_reason(session, min(blocked, key=distance))}" if blocked else ""
    if not candidates:
        return f"no usable {kind} master for this camera{why}"
    same_camera = [m for m in candidates if not _camera_difference(m, target)]
    best = min(same_camera or candidates, key=distance)
    described = _describe(best, kind)
    difference = _camera_difference(best, target)
    return f"nearest: {difference + ', ' if difference else ''}{described}{why}"


def _camera_difference(master: Master, target: Mapping[str, Any]) -> str:
    for key in MATCH_KEYS:
        value = getattr(master, key)
        if value != target.get(key):
            label = {"readout_mode": "readout mode", "xbinning": "x binning", "ybinning": "y binning"}
            return f"{label.get(key, key)} {_text(value)}"
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
    temp = f"{_temp(master.ccd_temp_mean)} °C" if master.ccd_temp_mean is not None else "no temperature"
    if kind == "dark":
        return f"{_text(master.exptime)} s at {temp}"
    if kind == "flat":
        return f"filter {_text(master.filter)} at {temp}"
    return temp


def _wanted_temp(target: Mapping[str, Any], rules: MatchRules) -> str:
    temp = target.get("ccd_temp")
    if temp is None:
        return "unknown temperature"
    return f"{_temp(temp)} °C ±{number_text(rules.temp_tolerance)}"


def _temp(value: float) -> str:
    """A temperature for messages: at most two decimals, no trailing zeros (``-10.2``, ``-102.25``)."""
    return f"{round(value, 2):g}"


def _text(value: Any) -> str:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return number_text(value)
    return str(value)


def _shape(shape: tuple[Any, Any]) -> str:
    return f"{_text(shape[0])}x{_text(shape[1])}"


def _setup(target: Mapping[str, Any]) -> str:
    """``ZWO ASI294MM Pro b2x2 80x64``: the camera set-up of a light, for messages."""
    binning = f"b{_text(target.get('xbinning'))}x{_text(target.get('ybinning'))}"
    parts = [binning, _shape((target.get("naxis1"), target.get("naxis2")))]
    if target.get("instrument"):
        parts.insert(0, str(target["instrument"]))
    return " ".join(parts)
