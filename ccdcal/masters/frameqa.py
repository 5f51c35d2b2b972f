"""Frame QA: the rules that set a bad calibration frame aside before it is combined, with the reason.

Each rule is a :class:`Rule` of :data:`RULES`: a name, the kinds it judges, the :class:`QaOptions` field
holding its threshold (``--qa-...``, ``[QA]``) and its check. A check reads one frame's statistics
(``frame_stats``, measured while the frame was read for a combine: :mod:`ccdcal.kernels.framestats`) and
its group's, and returns the numbers and the reason when the frame fails. The group's statistics are
robust (median and ``1.4826 x`` median absolute deviation), so one bad frame does not hide itself; a group
of fewer than :data:`MIN_GROUP` measured frames is not judged on its spread (no majority to stand on).

The rules (docs/design.md, Frame QA):

- ``outlier_level`` (bias, dark): the level strays from the group's by more than ``outlier_sigma`` times
  the group's spread, the spread taken at least :data:`LEVEL_FLOOR` of the frames' noise (frames a tenth
  of their noise apart are not told apart);
- ``outlier_noise`` (bias, dark): the noise of the frame's difference from the group's median frame is
  above the group's by more than ``outlier_sigma`` spreads (at least :data:`NOISE_FLOOR` of it);
- ``light_leak`` (bias, dark): the level changes across the detector (a plane fitted to 8 x 8 cells) more
  than the group's by ``outlier_sigma`` spreads (at least :data:`LEVEL_FLOOR` of the noise);
- ``wrong_type``: a bias or dark whose difference from the group has a bright tail (stars: more than
  ``tail_fraction`` of its pixels ten times its noise above, and :data:`TAIL_FACTOR` times the
  group's), or a flat whose level after the bias is within its pixel-to-pixel noise of zero (a bias or
  a dark, not a flat);
- ``temperature`` (dark, flat): the CCD temperature is off the group's set point (the median temperature
  of its frames: what the cooler held) by more than ``temp_tolerance`` °C;
- ``flat_faint`` (flat): the signal after the bias is below ``flat_min_snr`` times the flat's
  pixel-to-pixel noise (shot and read noise, without the illumination's structure), or below
  ``flat_min_fraction`` of the group's median signal;
- ``flat_bright`` (flat): more than ``flat_max_saturated`` of its pixels are saturated, or its level is
  above ``flat_max_level`` of the saturation level (the non-linear range).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from ccdcal.files.naming import number_text
from ccdcal.limits import (
    QA_FLAT_MAX_LEVEL,
    QA_FLAT_MAX_SATURATED,
    QA_FLAT_MIN_FRACTION,
    QA_FLAT_MIN_SNR,
    QA_OUTLIER_SIGMA,
    QA_TAIL_FRACTION,
    QA_TEMP_TOLERANCE,
)

__all__ = [
    "LEVEL_FLOOR",
    "MIN_GROUP",
    "NOISE_FLOOR",
    "RULES",
    "Failure",
    "FrameFacts",
    "QaOptions",
    "Rule",
    "Verdict",
    "judge",
]

#: The spread of levels and gradients is taken at least this share of the frames' noise.
LEVEL_FLOOR = 0.25
#: The spread of the noises is taken at least this share of the group's noise.
NOISE_FLOOR = 0.1
#: A bias's or dark's tail must also be this many times its group's (cosmic rays and hot pixels are in
#: every frame of a long dark).
TAIL_FACTOR = 5.0
#: Fewer measured frames than this are not judged against their group's spread.
MIN_GROUP = 3
#: ``mad_std``'s factor.
MAD_TO_STD = 1.482602218505602


@dataclass(frozen=True)
class QaOptions:
    """The frame-QA rules' thresholds (``--qa-...``, ``[QA]``) and whether they run (``--no-frame-qa``).

    Raises :class:`~ccdcal.errors.UsageError` naming the option when a threshold is outside its range
    (:mod:`ccdcal.limits`)."""

    #: ``--no-frame-qa`` makes it False: every usable frame is combined, as before frame QA.
    enabled: bool = True
    #: Robust standard deviations of its group a frame's level, noise or gradient may stray.
    outlier_sigma: float = 10.0
    #: °C a dark's or flat's temperature may stray from its group's set point.
    temp_tolerance: float = 2.0
    #: A flat's signal after the bias must be at least this many times its noise.
    flat_min_snr: float = 5.0
    #: ... and at least this share of its group's median signal.
    flat_min_fraction: float = 0.1
    #: Largest share of a flat's pixels that may be saturated.
    flat_max_saturated: float = 0.05
    #: Largest level of a flat as a share of its saturation level (above it: the non-linear range).
    flat_max_level: float = 0.9
    #: Largest share of a bias's or dark's pixels ten times its noise above its group's (stars).
    tail_fraction: float = 0.01

    def __post_init__(self) -> None:
        QA_OUTLIER_SIGMA.check(self.outlier_sigma)
        QA_TEMP_TOLERANCE.check(self.temp_tolerance)
        QA_FLAT_MIN_SNR.check(self.flat_min_snr)
        QA_FLAT_MIN_FRACTION.check(self.flat_min_fraction)
        QA_FLAT_MAX_SATURATED.check(self.flat_max_saturated)
        QA_FLAT_MAX_LEVEL.check(self.flat_max_level)
        QA_TAIL_FRACTION.check(self.tail_fraction)

    def as_dict(self) -> dict[str, float | bool]:
        """JSON-ready form (recorded in the run's arguments and the master's parameters)."""
        return dict(asdict(self))


@dataclass(frozen=True)
class FrameFacts:
    """What the rules know of one frame: its statistics (``frame_stats``; NaN where not measured), its
    temperature and its saturation level.

    Attributes
    ----------
    frame_id : int
        The frame.
    name : str
        Its file name, for messages.
    level, noise : float
        Median and ``mad_std`` of its values.
    diff_noise : float
        ``mad_std`` of its difference from the group's median frame.
    gradient : float
        Change of its level across the detector.
    saturated_fraction : float
        Share of its pixels at or above ``saturation``.
    tail_fraction : float
        Share of its difference ten times its noise above its level.
    signal : float
        A flat's level after the bias and dark (NaN: not a flat, or not measurable).
    signal_noise : float
        A flat's pixel-to-pixel noise after the bias and dark.
    ccd_temp : float
        Its CCD temperature (NaN: unknown).
    saturation : float
        Its saturation level (``inf``: unknown).
    """

    frame_id: int
    name: str
    level: float = math.nan
    noise: float = math.nan
    diff_noise: float = math.nan
    gradient: float = math.nan
    saturated_fraction: float = math.nan
    tail_fraction: float = math.nan
    signal: float = math.nan
    signal_noise: float = math.nan
    ccd_temp: float = math.nan
    saturation: float = math.inf


@dataclass(frozen=True)
class Failure:
    """A rule a frame fails: the rule, the numbers behind it and the reason as one line."""

    rule: str
    numbers: dict[str, float | None]
    reason: str


@dataclass
class Verdict:
    """The rules' verdict on one frame: the rules it fails (none: kept)."""

    frame_id: int
    failures: list[Failure] = field(default_factory=list)

    @property
    def set_aside(self) -> bool:
        """Whether a rule sets the frame aside."""
        return bool(self.failures)


@dataclass(frozen=True)
class Group:
    """The group's robust statistics that the rules compare a frame with (NaN where too few frames)."""

    level: float
    level_spread: float
    diff_noise: float
    diff_noise_spread: float
    gradient: float
    gradient_spread: float
    noise: float
    ccd_temp: float
    signal: float
    tail_fraction: float

    @classmethod
    def of(cls, facts: Sequence[FrameFacts]) -> Group:
        """The group of ``facts``."""
        level, level_spread = _centre(f.level for f in facts)
        diff_noise, diff_spread = _centre(f.diff_noise for f in facts)
        gradient, gradient_spread = _centre(f.gradient for f in facts)
        noise, _ = _centre(f.diff_noise if math.isfinite(f.diff_noise) else f.noise for f in facts)
        ccd_temp, _ = _centre([f.ccd_temp for f in facts], minimum=1)
        signal, _ = _centre([f.signal for f in facts], minimum=1)
        tail, _ = _centre([f.tail_fraction for f in facts])
        return cls(
            level,
            level_spread,
            diff_noise,
            diff_spread,
            gradient,
            gradient_spread,
            noise,
            ccd_temp,
            signal,
            tail,
        )


def _centre(values: Iterable[float], minimum: int = MIN_GROUP) -> tuple[float, float]:
    """Median and ``1.4826 x`` median absolute deviation of the finite values (NaN below ``minimum``)."""
    found = [float(v) for v in values if math.isfinite(v)]
    if len(found) < minimum:
        return math.nan, math.nan
    median = statistics.median(found)
    return median, MAD_TO_STD * statistics.median(abs(v - median) for v in found)


def _n(value: float) -> str:
    """A number for a reason: four significant digits, whole numbers up to 999,999 in full."""
    if not math.isfinite(value):
        return "NaN"
    digits = 6 if abs(value) >= 1000 and float(value).is_integer() else 4
    return number_text(float(f"{value:.{digits}g}"))


def _outlier(value: float, centre: float, spread: float, floor: float, sigma: float) -> float | None:
    """How many spreads ``value`` is above or below ``centre`` when beyond ``sigma`` of them, else None."""
    if not (math.isfinite(value) and math.isfinite(centre)):
        return None
    scale = max(spread, floor) if math.isfinite(spread) else floor
    if not (math.isfinite(scale) and scale > 0):
        return None
    away = abs(value - centre) / scale
    return away if away > sigma else None


def _outlier_level(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    floor = LEVEL_FLOOR * g.noise
    away = _outlier(f.level, g.level, g.level_spread, floor, o.outlier_sigma)
    if away is None:
        return None
    spread = max(g.level_spread, floor)
    return Failure(
        "outlier_level",
        {"level": f.level, "group_level": g.level, "group_spread": spread, "sigma": away},
        f"level {_n(f.level)} ADU, group {_n(g.level)} ± {_n(spread)} ({away:.0f}σ, limit "
        f"{number_text(o.outlier_sigma)}σ)",
    )


def _outlier_noise(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    floor = NOISE_FLOOR * g.diff_noise
    if not (math.isfinite(f.diff_noise) and f.diff_noise > g.diff_noise):
        return None
    away = _outlier(f.diff_noise, g.diff_noise, g.diff_noise_spread, floor, o.outlier_sigma)
    if away is None:
        return None
    spread = max(g.diff_noise_spread, floor)
    return Failure(
        "outlier_noise",
        {"noise": f.diff_noise, "group_noise": g.diff_noise, "group_spread": spread, "sigma": away},
        f"noise {_n(f.diff_noise)} ADU about the group's median frame, group {_n(g.diff_noise)} ± "
        f"{_n(spread)} ({away:.0f}σ, limit {number_text(o.outlier_sigma)}σ)",
    )


def _light_leak(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    floor = LEVEL_FLOOR * g.noise
    if not (math.isfinite(f.gradient) and f.gradient > g.gradient):
        return None
    away = _outlier(f.gradient, g.gradient, g.gradient_spread, floor, o.outlier_sigma)
    if away is None:
        return None
    return Failure(
        "light_leak",
        {"gradient": f.gradient, "group_gradient": g.gradient, "sigma": away},
        f"level changes by {_n(f.gradient)} ADU across the detector, the group's by {_n(g.gradient)} "
        f"({away:.0f}σ, limit {number_text(o.outlier_sigma)}σ): a light leak",
    )


def _wrong_type(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    if not (math.isfinite(f.tail_fraction) and f.tail_fraction > o.tail_fraction):
        return None
    if math.isfinite(g.tail_fraction) and f.tail_fraction <= TAIL_FACTOR * g.tail_fraction:
        return None
    return Failure(
        "wrong_type",
        {"tail_fraction": f.tail_fraction},
        f"{f.tail_fraction:.2%} of its pixels are far above the group's median frame (limit "
        f"{o.tail_fraction:.2%} and {number_text(TAIL_FACTOR)} x the group's {_n(g.tail_fraction * 100)}%): "
        "stars or light, not a frame without light",
    )


def _flat_type(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    if math.isfinite(f.signal) and math.isfinite(f.signal_noise) and f.signal > f.signal_noise:
        return None
    if math.isnan(f.level):
        return None  # not measured
    return Failure(
        "wrong_type",
        {"signal": f.signal if math.isfinite(f.signal) else None, "noise": f.signal_noise},
        f"level after the bias {_n(f.signal)} ADU, not above its pixel-to-pixel noise "
        f"{_n(f.signal_noise)}: a bias or a dark, not a flat",
    )


def _temperature(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    if not (math.isfinite(f.ccd_temp) and math.isfinite(g.ccd_temp)):
        return None
    off = f.ccd_temp - g.ccd_temp
    if abs(off) <= o.temp_tolerance + 1e-9:
        return None
    return Failure(
        "temperature",
        {"ccd_temp": f.ccd_temp, "set_point": g.ccd_temp, "tolerance": o.temp_tolerance},
        f"CCD at {_n(f.ccd_temp)} °C, {off:+.1f} °C off the group's set point {_n(g.ccd_temp)} °C "
        f"(tolerance ±{number_text(o.temp_tolerance)} °C): the cooler had not settled",
    )


def _flat_faint(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    if not (math.isfinite(f.signal) and math.isfinite(f.signal_noise) and f.signal > f.signal_noise):
        return None  # not measured, or wrong_type's
    snr = f.signal / f.signal_noise if f.signal_noise > 0 else math.inf
    share = f.signal / g.signal if math.isfinite(g.signal) and g.signal > 0 else math.inf
    if snr >= o.flat_min_snr and share >= o.flat_min_fraction:
        return None
    return Failure(
        "flat_faint",
        {"signal": f.signal, "noise": f.signal_noise, "snr": snr, "group_signal": g.signal},
        f"signal {_n(f.signal)} ADU after the bias, S/N {_n(snr)} (floor {number_text(o.flat_min_snr)}), "
        f"{_n(share * 100)}% of the group's {_n(g.signal)} ADU "
        f"(floor {number_text(o.flat_min_fraction * 100)}%)",
    )


def _flat_bright(f: FrameFacts, g: Group, o: QaOptions) -> Failure | None:
    saturated = f.saturated_fraction if math.isfinite(f.saturated_fraction) else 0.0
    share = f.level / f.saturation if math.isfinite(f.saturation) and f.saturation > 0 else 0.0
    if not math.isfinite(share):
        share = 0.0
    if saturated <= o.flat_max_saturated and share <= o.flat_max_level:
        return None
    reason = f"{saturated:.2%} of its pixels saturated (limit {o.flat_max_saturated:.2%})"
    if math.isfinite(f.level):
        reason += (
            f", level {_n(f.level)} ADU = {share:.0%} of saturation {_n(f.saturation)} "
            f"(limit {o.flat_max_level:.0%})"
        )
    return Failure(
        "flat_bright",
        {"saturated_fraction": saturated, "level": f.level, "saturation": f.saturation},
        reason + ": saturated or in the non-linear range",
    )


@dataclass(frozen=True)
class Rule:
    """One frame-QA rule: its name, the kinds it judges, the :class:`QaOptions` field of its threshold and
    its check (``None``: the frame passes)."""

    name: str
    kinds: tuple[str, ...]
    option: str
    check: Callable[[FrameFacts, Group, QaOptions], Failure | None]


#: The rules, in the order they are checked; a frame's failures are reported those without a distance from
#: the group first, then the farthest outlier first (:func:`_severity`): the first is the frame's rule.
RULES: tuple[Rule, ...] = (
    Rule("wrong_type", ("bias", "dark"), "tail_fraction", _wrong_type),
    Rule("wrong_type", ("flat",), "flat_min_snr", _flat_type),
    Rule("outlier_level", ("bias", "dark"), "outlier_sigma", _outlier_level),
    Rule("light_leak", ("bias", "dark"), "outlier_sigma", _light_leak),
    Rule("outlier_noise", ("bias", "dark"), "outlier_sigma", _outlier_noise),
    Rule("temperature", ("dark", "flat"), "temp_tolerance", _temperature),
    Rule("flat_faint", ("flat",), "flat_min_snr", _flat_faint),
    Rule("flat_bright", ("flat",), "flat_max_saturated", _flat_bright),
)

#: The rules' names, each once (``frame_qa.rule``, ``master_set_aside.rule``).
RULE_NAMES = tuple(dict.fromkeys(rule.name for rule in RULES))


def judge(kind: str, facts: Sequence[FrameFacts], options: QaOptions) -> dict[int, Verdict]:
    """The rules' verdict on each frame of a group.

    Parameters
    ----------
    kind : str
        ``bias``, ``dark`` or ``flat``.
    facts : sequence of FrameFacts
        The group's frames.
    options : QaOptions
        The thresholds.

    Returns
    -------
    dict
        Frame id to :class:`Verdict` (every frame; ``set_aside`` when a rule fails).
    """
    group = Group.of(facts)
    verdicts: dict[int, Verdict] = {}
    for frame in facts:
        verdict = Verdict(frame.frame_id)
        for rule in RULES:
            if kind in rule.kinds:
                failure = rule.check(frame, group, options)
                if failure is not None and all(f.rule != failure.rule for f in verdict.failures):
                    verdict.failures.append(failure)
        verdict.failures.sort(key=_severity)
        verdicts[frame.frame_id] = verdict
    return verdicts


def _severity(failure: Failure) -> tuple[int, float]:
    """The order a frame's failures are reported in: the rules without a distance from the group first
    (in :data:`RULES` order: the sort is stable), then the group-outlier rules, farthest first — a light
    leak across the detector is first a ``light_leak``, a sky frame labelled bias an ``outlier_level``."""
    sigma = failure.numbers.get("sigma")
    return (0, 0.0) if sigma is None else (1, -sigma)


def failures_text(failures: Sequence[Failure]) -> str:
    """The reasons of a frame's failures, the first rule's first: ``level 812 ADU, ... (outlier_level)``."""
    return "; ".join(f"{f.reason} ({f.rule} rule)" for f in failures)


def numbers_of(failures: Sequence[Failure]) -> dict[str, dict[str, float | None]]:
    """The numbers of a frame's failures by rule, JSON-ready (NaN and infinity as None)."""
    return {
        f.rule: {k: (v if v is not None and math.isfinite(v) else None) for k, v in f.numbers.items()}
        for f in failures
    }
