"""Which masters calibrate a light, and why: the rules of :mod:`ccdcal.catalog.selection`, per step.

For each step (bias, dark, flat) of one light, in order (:func:`match_light`):

1. skipped on purpose (``--no-dark``, ``--no-flat``; ``--no-bias``: the darks hold the bias);
2. pinned (``--bias/--dark/--flat FILE``): that master, whatever its status;
3. not available: the catalog holds no frame and no master of the kind for the light's camera set-up
   (:func:`~ccdcal.catalog.queries.kind_available`; an LN2-cooled CCD has no darks);
4. otherwise the SQL match of docs/design.md (same camera keys, |ΔT| within the tolerance, dark exposure or
   nearest scaled dark, flat filter; nearest temperature, nearest time, newest). Nothing matching is
   ``missing`` — the light is not calibrated — unless ``--allow-missing`` names the kind
   (``allowed_missing``). The reason names the failed key and the nearest candidate
   (:mod:`ccdcal.lights.nearest`): ``no dark at 300 s, -10 °C ±2 (nearest: 120 s at -10.2 °C)``.

Each step is decided first (a :class:`Decision`: status, reason, master), then made a :class:`Step` with
the numbers behind the choice (ΔT, Δt, scale, pinned) for ``calibration_masters`` when it is needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Row
from sqlalchemy.orm import Session

from ccdcal.catalog.lineage import unusable_reason
from ccdcal.catalog.models import Frame, Master
from ccdcal.catalog.queries import MATCH_KEYS, SETUP_KEYS, MatchRules, kind_available, usable
from ccdcal.catalog.ranking import Targets, rank_masters
from ccdcal.catalog.selection import select_master
from ccdcal.lights.nearest import (
    nearest_among,
    setup_masters,
    setup_text,
    shape_text,
    value_text,
    wanted_temp,
)
from ccdcal.lights.steps import (
    ALLOWED_MISSING,
    APPLIED,
    MISSING,
    NOT_AVAILABLE,
    SKIPPED,
    STEP_LABELS,
    MasterInfo,
    MatchedStep,
    Step,
)


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


#: A light's CCD temperature, DATE-OBS and exposure: what its steps' numbers (ΔT, Δt, scale) come from.
LightValues = tuple[float | None, dt.datetime | None, float | None]


class Decision(NamedTuple):
    """One step of a light as decided, without the light's own numbers (ΔT, Δt, the dark's scale), which
    :meth:`step` adds. A plan of 100,000 lights makes its steps only for the lights it calibrates or shows
    in detail: a dry run makes none."""

    role: str
    status: str
    #: Why; ``None`` for a step applied by the matching rules (its reason is then the light's numbers).
    reason: str | None = None
    master: MasterInfo | None = None
    pinned: bool = False
    #: Added to a matched step's reason (:data:`UNDATED`).
    note: str = ""

    def step(self, values: LightValues) -> Step:
        """The step of the light with these ``values``."""
        master = self.master
        if self.status != APPLIED or master is None:
            return Step(self.role, self.status, self.reason or "")
        delta_temp, delta_time = _deltas(master, values)
        scale = _scale(master, values[2]) if self.role == "dark" else None
        if self.reason is None:
            return MatchedStep(
                self.role, APPLIED, None, master, delta_temp, delta_time, scale, note=self.note
            )
        return Step(self.role, APPLIED, self.reason, master, delta_temp, delta_time, scale, self.pinned)


@dataclass(slots=True)
class LightMatch:
    """The steps chosen for one light: each step's :class:`Decision` and the light's values; the
    :class:`Step` objects (:attr:`steps`) are made when first asked for."""

    frame_id: int
    decisions: tuple[Decision, ...]
    values: LightValues = (None, None, None)
    _steps: dict[str, Step] | None = field(default=None, repr=False, compare=False)

    @property
    def steps(self) -> dict[str, Step]:
        """Each step by role (a step may be added: the bad-pixel mask's)."""
        if self._steps is None:
            self._steps = {d.role: d.step(self.values) for d in self.decisions}
        return self._steps

    @property
    def reason(self) -> str | None:
        """Why the light cannot be calibrated: a master it needs is missing (``None``: it can; whether any
        step applies at all is :func:`ccdcal.lights.plan.uncalibrated_reason`)."""
        statuses = {d.status for d in self.decisions}
        if MISSING not in statuses:
            return None
        return "; ".join(d.reason or "" for d in self.decisions if d.status == MISSING)

    def step(self, role: str) -> Step:
        """One step (made alone when the steps are not made yet)."""
        if self._steps is not None:
            return self._steps[role]
        return next(d for d in self.decisions if d.role == role).step(self.values)

    def applied(self, role: str) -> MasterInfo | None:
        """The master applied in a step, if any."""
        for decision in self.decisions:
            if decision.role == role:
                return decision.master if decision.status == APPLIED else None
        step = self.steps.get(role)
        return step.master if step is not None and step.status == APPLIED else None

    def masters(self) -> dict[str, str]:
        """Per step, the master's file name, or how the step was left out (``n/a``, ``skipped`` ...)."""
        steps: Iterable[Step | Decision] = self._steps.values() if self._steps is not None else self.decisions
        return {
            s.role: s.master.name if s.status == APPLIED and s.master else STEP_LABELS[s.status]
            for s in steps
        }


def target_of(light: Frame) -> dict[str, Any]:
    """A light's values as a matching target (its id, camera keys, temperature, time, exposure, filter)."""
    keys = {"id", *MATCH_KEYS, *SETUP_KEYS, "ccd_temp", "date_obs", "exptime", "filter"}
    return {key: getattr(light, key) for key in keys}


class Choices:
    """The masters chosen for lights, by :func:`~ccdcal.catalog.selection.select_master`'s rules.

    With ``batch`` (a plan of every usable light), the first question about a kind and variant (rules,
    dark with or without the bias) is answered for every usable light at once
    (:func:`~ccdcal.catalog.ranking.rank_masters`: candidates and lights read once, ranked with numpy):
    planning 100,000 lights is a few queries, not a few per light. Without it, or for a target that is
    not a usable light, one select answers one target.

    Parameters
    ----------
    session : Session
        An open catalog session.
    batch : bool
        Answer for every usable light at once.
    targets : Targets, optional
        The usable lights' target columns, when the caller has read them (else read when first needed).
    """

    def __init__(self, session: Session, *, batch: bool = False, targets: Targets | None = None) -> None:
        self.session = session
        self.batch = batch
        self.available: dict[Any, bool] = {}
        self._targets = targets
        self._lights: set[int] | None = None
        self._best: dict[Any, dict[int, int]] = {}
        self._info: dict[int, tuple[Master, MasterInfo]] = {}
        self._nearest: dict[Any, tuple[list[Master], set[int]]] = {}
        self._unusable_reasons: dict[int, str | None] = {}
        self._matched: dict[tuple[str, int], Decision] = {}

    def select(self, kind: str, target: Mapping[str, Any], rules: MatchRules, **flags: bool) -> Master | None:
        """The best master of ``kind`` for ``target`` (``None``: nothing matches)."""
        frame_id = target.get("id")
        if not self.batch or frame_id is None or frame_id not in self._usable_lights():
            return select_master(self.session, kind, target, rules, **flags)
        master_id = self._best_of(kind, rules, tuple(sorted(k for k, on in flags.items() if on))).get(
            frame_id
        )
        return None if master_id is None else self._row(master_id)[0]

    def pick(
        self, kind: str, target: Mapping[str, Any], rules: MatchRules, flag: str = ""
    ) -> MasterInfo | None:
        """:meth:`select`, as the master's :class:`MasterInfo`; ``flag`` names the one flag set, if any
        (``exclude_with_bias``, ``only_with_bias``)."""
        frame_id = target.get("id")
        if self.batch and frame_id in (self._lights if self._lights is not None else self._usable_lights()):
            master_id = self._best_of(kind, rules, (flag,) if flag else ()).get(frame_id)
            return None if master_id is None else self._row(master_id)[1]
        flags = {flag: True} if flag else {}
        master = select_master(self.session, kind, target, rules, **flags)
        return None if master is None else self.info(master)

    def _best_of(self, kind: str, rules: MatchRules, flags: tuple[str, ...]) -> dict[int, int]:
        """Light id → master id for one kind, rules and the flags set, ranked for every usable light when
        first asked."""
        key = (kind, rules, flags)
        best = self._best.get(key)
        if best is None:
            every = self._all_targets()
            best = self._best[key] = rank_masters(
                self.session, kind, every, rules, **dict.fromkeys(flags, True)
            )
        return best

    def matched(self, role: str, master: MasterInfo) -> Decision:
        """The decision to apply ``master`` in the step ``role`` by the matching rules: one object per role
        and master, shared by the lights it serves."""
        key = (role, master.id)
        decision = self._matched.get(key)
        if decision is None:
            decision = self._matched[key] = Decision(role, APPLIED, None, master)
        return decision

    def info(self, master: Master) -> MasterInfo:
        """The master's :class:`MasterInfo`, made once per master."""
        return self._row(master.id, master)[1]

    def nearest(self, kind: str, target: Mapping[str, Any], rules: MatchRules) -> str:
        """:func:`~ccdcal.lights.nearest.nearest`, with the masters of each camera set-up read once."""
        setup = (kind, *(target.get(k) for k in SETUP_KEYS))
        if setup not in self._nearest:
            self._nearest[setup] = setup_masters(self.session, kind, target)
        every, unusable = self._nearest[setup]
        return nearest_among(self.unusable_reason, kind, target, rules, every, unusable)

    def unusable_reason(self, master: Master) -> str | None:
        """:func:`~ccdcal.catalog.lineage.unusable_reason`, once per master."""
        if master.id not in self._unusable_reasons:
            self._unusable_reasons[master.id] = unusable_reason(self.session, master)
        return self._unusable_reasons[master.id]

    def _row(self, master_id: int, master: Master | None = None) -> tuple[Master, MasterInfo]:
        found = self._info.get(master_id)
        if found is None:
            row = master if master is not None else self.session.get(Master, master_id)
            assert row is not None
            found = self._info[master_id] = (row, MasterInfo.of(row))
        return found

    def _all_targets(self) -> Targets:
        if self._targets is None:
            self._targets = Targets.load(self.session, usable("light"))
        return self._targets

    def _usable_lights(self) -> set[int]:
        lights = self._lights
        if lights is None:
            lights = self._lights = set(self._all_targets().columns.ids.tolist())
        return lights


def match_light(
    session: Session,
    light: Any,
    options: MatchOptions,
    available: dict[Any, bool] | None = None,
    choices: Choices | None = None,
    *,
    target: Mapping[str, Any] | None = None,
) -> LightMatch:
    """Decide each step of one light (see the module's description).

    Parameters
    ----------
    session : Session
        An open catalog session.
    light : Frame or Row
        The light's ``frames`` row (an ORM object, or a row of a select with the target columns).
    options : MatchOptions
        Tolerances, skipped, allowed-missing and pinned steps.
    available : dict, optional
        A cache of :func:`~ccdcal.catalog.queries.kind_available` per kind and camera set-up, shared
        by the lights of one plan.
    choices : Choices, optional
        Shared by the lights of one plan (made with ``batch=True``: one select per kind for them all).
    target : mapping, optional
        The light's values by column name, when the caller has them as a dict already.

    Returns
    -------
    LightMatch
        One :class:`Decision` per role, in the order of :data:`ROLES`.
    """
    if target is None:  # a row of a select holds every value of a target; an ORM row is copied
        target = dict(light._mapping) if isinstance(light, Row) else target_of(light)
    choices = choices if choices is not None else Choices(session)
    cache = available if available is not None else choices.available
    setup = tuple(map(target.get, SETUP_KEYS))
    bias = _step(choices, "bias", target, setup, options, _bias_query, cache)
    with_bias = bias.status in (APPLIED, MISSING)  # a missing bias stops the light anyway
    dark_query = _dark_query if with_bias else _dark_with_bias_query
    dark = _step(choices, "dark", target, setup, options, dark_query, cache)
    flat = _step(choices, "flat", target, setup, options, _flat_query, cache)
    values = (target.get("ccd_temp"), target.get("date_obs"), target.get("exptime"))
    return LightMatch(target["id"], (bias, dark, flat), values)


#: (choices, target, options) -> (the master, or None and a description of what was wanted)
Query = Callable[[Choices, Mapping[str, Any], MatchOptions], tuple[MasterInfo | None, str]]


def _step(
    choices: Choices,
    role: str,
    target: Mapping[str, Any],
    setup: tuple[Any, ...],
    options: MatchOptions,
    query: Query,
    available: dict[Any, bool],
) -> Decision:
    if role in options.skip or (role == "bias" and options.no_bias):
        why = "--no-bias: the darks contain the bias" if role == "bias" else f"--no-{role}"
        return Decision(role, SKIPPED, why)
    if role in options.pins:
        return _pinned(role, options.pins[role], target, options)
    known = available.get((role, setup))
    if known is None:
        known = available[(role, setup)] = kind_available(choices.session, role, target)
    if not known:
        return Decision(
            role, NOT_AVAILABLE, f"no {role} frames in the catalog for this camera ({setup_text(target)})"
        )
    info, wanted = query(choices, target, options)
    if info is None:
        reason = f"{wanted} ({choices.nearest(role, target, options.rules)})"
        if role in options.allow_missing:
            return Decision(role, ALLOWED_MISSING, f"{reason}; allowed by --allow-missing {role}")
        return Decision(role, MISSING, reason)
    decision = choices.matched(role, info)
    rules = options.rules
    if target.get("date_obs") is None and (
        rules.max_age.of(role) is not None or (rules.validity and (info.valid_from or info.valid_to))
    ):
        return decision._replace(note=UNDATED)
    return decision


#: The end of the reason of a step matched for a light without a date, where a date rule would apply.
UNDATED = "; the light has no DATE-OBS: matched without its validity range and max age"


def _bias_query(
    choices: Choices, target: Mapping[str, Any], options: MatchOptions
) -> tuple[MasterInfo | None, str]:
    master = choices.pick("bias", target, options.rules)
    return master, "" if master is not None else f"no bias at {wanted_temp(target, options.rules)}"


def _flat_query(
    choices: Choices, target: Mapping[str, Any], options: MatchOptions
) -> tuple[MasterInfo | None, str]:
    master = choices.pick("flat", target, options.rules)
    if master is not None:
        return master, ""
    return None, f"no flat in filter {value_text(target.get('filter'))}, {wanted_temp(target, options.rules)}"


def _dark_query(
    choices: Choices, target: Mapping[str, Any], options: MatchOptions
) -> tuple[MasterInfo | None, str]:
    """The dark after a bias: bias-subtracted darks (scaled with ``--dark-scale``)."""
    if target.get("exptime") is None:
        return None, _NO_EXPTIME
    rules = options.rules
    master = choices.pick("dark", target, rules, "exclude_with_bias")
    if master is not None:
        return master, ""
    return None, f"no dark {'to scale to' if rules.dark_scale else 'at'} {_exposure(target, rules)}"


def _dark_with_bias_query(
    choices: Choices, target: Mapping[str, Any], options: MatchOptions
) -> tuple[MasterInfo | None, str]:
    """The dark without a bias: darks that hold the bias, unscaled; when the bias is allowed missing, a
    bias-subtracted dark will do."""
    if target.get("exptime") is None:
        return None, _NO_EXPTIME
    rules = options.rules
    master = choices.pick("dark", target, _unscaled(rules), "only_with_bias")
    if master is None and not options.no_bias:
        master = choices.pick("dark", target, rules, "exclude_with_bias")
    if master is not None:
        return master, ""
    return None, f"no dark containing the bias at {_exposure(target, rules)}"


_NO_EXPTIME = "no exposure time in the light's header (EXPTIME absent, not a number or negative)"


@lru_cache(maxsize=64)
def _unscaled(rules: MatchRules) -> MatchRules:
    """The rules without dark scaling."""
    return replace(rules, dark_scale=False)


def _exposure(target: Mapping[str, Any], rules: MatchRules) -> str:
    return f"{value_text(target.get('exptime'))} s, {wanted_temp(target, rules)}"


def _pinned(role: str, master: MasterInfo, target: Mapping[str, Any], options: MatchOptions) -> Decision:
    """A pinned master: applied whatever its status, unless it cannot serve this light at all (another
    image size or camera key: the light is not calibrated, with the reason)."""
    shape = (master.naxis1, master.naxis2)
    light_shape = (target.get("naxis1"), target.get("naxis2"))
    if shape != light_shape:
        return Decision(
            role,
            MISSING,
            f"pinned {role} {master.name} is {shape_text(shape)} pixels, the light {shape_text(light_shape)}",
        )
    for key in MATCH_KEYS:  # the camera keys, as matching requires them (NULL matches NULL only)
        if getattr(master, key) != target.get(key):
            return Decision(
                role,
                MISSING,
                f"pinned {role} {master.name} has {key} {value_text(getattr(master, key))}, the light "
                f"{value_text(target.get(key))}: pin a master of this camera set-up",
            )
    if role == "dark":
        exptime, dark_time = target.get("exptime"), master.exptime
        same = exptime is not None and dark_time is not None and _same_exposure(exptime, dark_time, options)
        if not same and (master.includes_bias or not options.rules.dark_scale):
            why = "it contains the bias" if master.includes_bias else "add --dark-scale to scale it"
            return Decision(
                role,
                MISSING,
                f"pinned dark {master.name} is {value_text(dark_time)} s, "
                f"the light {value_text(exptime)} s: {why}",
            )
    return Decision(role, APPLIED, f"pinned with --{role}", master, pinned=True)


def _same_exposure(exptime: float, dark_time: float, options: MatchOptions) -> bool:
    return abs(exptime - dark_time) <= options.rules.exptime_tolerance * max(abs(exptime), 1e-9)


def _deltas(master: MasterInfo, values: LightValues) -> tuple[float | None, float | None]:
    """(ΔT, Δt): master minus light, in °C and seconds (``None`` when either value is unknown)."""
    temp, when, _ = values
    delta_temp = (
        master.ccd_temp_mean - temp if master.ccd_temp_mean is not None and temp is not None else None
    )
    delta_time = (
        (master.date_obs_mean - when).total_seconds()
        if master.date_obs_mean is not None and when is not None
        else None
    )
    return delta_temp, delta_time


def _scale(dark: MasterInfo, exptime: float | None) -> float:
    """``t_light / t_dark`` for a bias-subtracted dark; 1 for one holding the bias or without exposures."""
    if dark.includes_bias or not exptime or not dark.exptime:
        return 1.0
    return float(exptime) / float(dark.exptime)
