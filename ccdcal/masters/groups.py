"""The words of ``ccdcal masters``: its options, a group's plan and its outcome, and the rules that decide
whether a group can make a master at all.

Shared by the build (:mod:`ccdcal.masters.build`), the dry run's plan (:mod:`ccdcal.masters.plan`), the
combine (:mod:`ccdcal.masters.combine`), the file and its rows (:mod:`ccdcal.masters.files`) and the
bad-pixel masks (:mod:`ccdcal.masters.bpm`); it imports none of them.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from ccdcal.catalog.models import Master
from ccdcal.catalog.queries import MatchRules
from ccdcal.errors import UsageError
from ccdcal.files.naming import number_text
from ccdcal.kernels.combine import ClipParams
from ccdcal.kernels.framestats import FrameMeasure
from ccdcal.kernels.options import StepOptions
from ccdcal.kernels.qa import LEVEL_MAXITERS, LEVEL_SIGMA, Comparison, Level
from ccdcal.kernels.saturation import Saturation
from ccdcal.limits import MEM_LIMIT, MIN_FRAMES
from ccdcal.masters.frameqa import QaOptions
from ccdcal.masters.optional import InputSteps
from ccdcal.runtime.cluster import check_address
from ccdcal.runtime.pathtext import is_text, not_text_reason, shown

#: Kinds in the order they must be built: each may need the ones before it.
MASTER_ORDER = ("bias", "dark", "flat")


Progress = Callable[[str, int, int], None]


# -- the JSON of a master: masters.parameters ----------------------------------------------------------------


class QaRecord(TypedDict, total=False):
    """The comparison with the group's previous master (``masters.parameters.qa``): the warnings, and the
    numbers when the two could be compared (``None`` when not finite)."""

    previous_id: int | None
    warnings: list[str]
    shift: float | None
    sigma: float | None
    outlier_fraction: float | None


class InputLevel(TypedDict):
    """One input's overscan level (``None`` when not finite)."""

    frame_id: int
    level: float | None


class InputOverscan(TypedDict, total=False):
    """How the inputs' overscan was subtracted and the image trimmed, and each input's level."""

    mode: str
    method: str
    biassec: str | None
    trimsec: str | None
    axis: int | None
    inputs: list[InputLevel]


class LevelRecord(TypedDict):
    """A master's level (:func:`ccdcal.kernels.qa.clipped_level`): the sigma-clipped mean of its pixels,
    its standard error, the standard deviation and number of the pixels kept, and the clipping."""

    mean: float | None
    error: float | None
    std: float | None
    pixels: int
    sigma: float
    maxiters: int


class SaturationLevels(TypedDict):
    """Inputs of a master that share a saturation level and its source (``count`` of them)."""

    level: float | None
    source: str
    detail: str
    count: int


class SaturationRecord(TypedDict):
    """The saturation of a master's inputs (:func:`saturation_record`): ``--saturation`` as given, each
    level with its source and inputs, and the saturated samples left out of the combine."""

    option: float | None
    levels: list[SaturationLevels]
    samples: int


class InputStepsRecord(TypedDict, total=False):
    """The optional steps of a master's inputs (:meth:`ccdcal.masters.optional.InputSteps.parameters`),
    and their saturation (``saturation``)."""

    uncertainty: bool
    overscan: InputOverscan
    saturation: SaturationRecord


class SetAsideRecord(TypedDict):
    """A frame of the master's group that the frame QA set aside (``parameters.frame_qa.set_aside``)."""

    frame_id: int
    rule: str
    reason: str


class FrameQaRecord(TypedDict):
    """The frame QA of a master's group (``parameters.frame_qa``): whether it ran, its thresholds
    (:class:`~ccdcal.masters.frameqa.QaOptions`) and the frames it set aside."""

    enabled: bool
    outlier_sigma: float
    temp_tolerance: float
    flat_min_snr: float
    flat_min_fraction: float
    flat_max_saturated: float
    flat_max_level: float
    tail_fraction: float
    set_aside: list[SetAsideRecord]


class MasterParameters(TypedDict, total=False):
    """``masters.parameters`` as written: a combined master's clipping parameters (with the definition they
    match), its options, the ids of its inputs in the order combined (``input_ids``, which the inputs'
    dark scales and flat levels follow; absent from masters built before it was recorded), the inputs'
    dark scales, flat levels and optional steps, its level (absent from the masters of ccdcal before 0.2
    and when no pixel is finite), the QA result and the frame QA (absent from masters built before it); a
    bad-pixel mask's method, thresholds, masters and counts; ``provisional`` on the rows of a dry run
    (rolled back). Read by :func:`qa_warnings`, :func:`recorded_level`, :func:`overscan_level` and the
    report."""

    method: str
    sigma_lower: float
    sigma_upper: float
    maxiters: int
    cenfunc: str
    stdfunc: str
    definition: str
    mem_limit: int
    input_ids: list[int]
    dark_scales: list[float | None]
    flat_levels: list[float | None]
    min_frames: int
    temp_tolerance: float
    steps: InputStepsRecord
    level: LevelRecord
    qa: QaRecord
    frame_qa: FrameQaRecord
    provisional: bool
    hot_sigma: float
    lsigma: float
    hsigma: float
    ncmed: int
    nlmed: int
    ncsig: int
    nlsig: int
    byblocks: bool
    dark_id: int | None
    flat_id: int | None
    counts: dict[str, int | None]


def saturation_record(plan: GroupPlan, option: float | None, samples: int) -> SaturationRecord:
    """The ``parameters.steps.saturation`` record of a master: ``option``, its inputs' levels (inputs of
    one level and source counted together, in their order) and the ``samples`` left out."""
    levels: dict[tuple[float | None, str, str], int] = {}
    for found in plan.saturation:
        key = (found.level, found.source, found.detail)
        levels[key] = levels.get(key, 0) + 1
    shown: list[SaturationLevels] = [
        {"level": level, "source": source, "detail": detail, "count": count}
        for (level, source, detail), count in levels.items()
    ]
    return {"option": option, "levels": shown, "samples": samples}


def qa_warnings(parameters: object) -> list[str]:
    """The QA warnings of a master's ``parameters`` (any JSON: what is not a list of texts is left out)."""
    qa = parameters.get("qa") if isinstance(parameters, Mapping) else None
    found = qa.get("warnings") if isinstance(qa, Mapping) else None
    return [item for item in found if isinstance(item, str)] if isinstance(found, list) else []


def _finite(record: Mapping[object, object], key: str) -> float | None:
    """A finite number of a JSON record (a boolean is not one; a whole number beyond any float is none)."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def recorded_level(parameters: object) -> tuple[float, float] | None:
    """A master's level and its standard error from its ``parameters`` (any JSON): ``None`` when not
    recorded (a master of an older ccdcal) or not a pair of finite numbers, the error not negative."""
    record = parameters.get("level") if isinstance(parameters, Mapping) else None
    if not isinstance(record, Mapping):
        return None
    mean, error = _finite(record, "mean"), _finite(record, "error")
    if mean is None or error is None or error < 0:
        return None
    return mean, error


def overscan_level(parameters: object) -> tuple[float, float | None, int] | None:
    """The overscan level subtracted from a master's inputs, from its ``parameters`` (any JSON): the mean
    of the inputs' levels, its standard error (``None`` with one level) and their number; ``None`` when no
    input had its overscan subtracted."""
    steps = parameters.get("steps") if isinstance(parameters, Mapping) else None
    overscan = steps.get("overscan") if isinstance(steps, Mapping) else None
    inputs = overscan.get("inputs") if isinstance(overscan, Mapping) else None
    if not isinstance(inputs, list):
        return None
    levels = [_finite(item, "level") for item in inputs if isinstance(item, Mapping)]
    found = [level for level in levels if level is not None]
    if not found:
        return None
    try:
        mean = statistics.fmean(found)
        error = statistics.stdev(found) / math.sqrt(len(found)) if len(found) > 1 else None
    except OverflowError:  # levels near the largest float (a row edited by hand)
        return None
    if not math.isfinite(mean):
        return None
    return mean, (error if error is not None and math.isfinite(error) else None), len(found)


def level_record(level: Level | None) -> LevelRecord | None:
    """The ``parameters.level`` record of a master's :class:`~ccdcal.kernels.qa.Level` (``None``: none)."""
    if level is None:
        return None
    return {
        "mean": level.mean,
        "error": level.error,
        "std": level.std,
        "pixels": level.pixels,
        "sigma": LEVEL_SIGMA,
        "maxiters": LEVEL_MAXITERS,
    }


class MasterReportRecord(TypedDict):
    """One group's outcome as ``runs.summary.masters`` of a masters run keeps it (and ``--json``)."""

    kind: str
    keys: dict[str, float | str | None]
    outcome: str
    n_inputs: int
    path: str | None
    master_id: int | None
    version: int | None
    reason: str | None
    warnings: list[str]


class MastersRecord(TypedDict):
    """``runs.summary`` of a masters run (:meth:`MastersSummary.as_dict`), read back by the report."""

    built: int
    restored: int
    current: int
    skipped: int
    masters: list[MasterReportRecord]


@dataclass
class MasterReport:
    """One group's outcome: ``built``, ``restored`` (a superseded master of the same identity made current
    again, :mod:`ccdcal.masters.restore`), ``current`` (already up to date) or ``skipped`` with the
    reason; a dry run's ``build`` and ``restore``."""

    kind: str
    keys: dict[str, Any]
    outcome: str
    n_inputs: int
    path: str | None = None
    master_id: int | None = None
    version: int | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> MasterReportRecord:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "keys": self.keys,
            "outcome": self.outcome,
            "n_inputs": self.n_inputs,
            "path": self.path,
            "master_id": self.master_id,
            "version": self.version,
            "reason": self.reason,
            "warnings": self.warnings,
        }


@dataclass
class MastersSummary:
    """Everything :func:`~ccdcal.masters.build.build_masters` did, group by group."""

    run_id: int | None = None
    reports: list[MasterReport] = field(default_factory=list)

    def of(self, outcome: str) -> list[MasterReport]:
        """The reports with one outcome."""
        return [r for r in self.reports if r.outcome == outcome]

    @property
    def exit_code(self) -> int:
        """1 when a group could not be built (too few frames, no calibrator, unreadable input)."""
        return 1 if any(r.outcome == "skipped" for r in self.reports) else 0

    def as_dict(self) -> MastersRecord:
        """JSON-ready form (also the run's summary)."""
        return {
            "built": len(self.of("built")),
            "restored": len(self.of("restored")),
            "current": len(self.of("current")),
            "skipped": len(self.of("skipped")),
            "masters": [r.as_dict() for r in self.reports],
        }


@dataclass(frozen=True)
class MasterOptions:
    """How masters are built (every field is recorded with the master).

    Raises :class:`~ccdcal.errors.UsageError` when ``min_frames`` or ``mem_limit`` is outside its range
    (:mod:`ccdcal.limits`)."""

    masters_dir: Path = Path("masters")
    kinds: tuple[str, ...] = MASTER_ORDER
    min_frames: int = 3
    params: ClipParams = field(default_factory=ClipParams)
    mem_limit: int = 2 << 30
    no_bias: bool = False
    rules: MatchRules = field(default_factory=MatchRules)
    #: ``--flat-dark-scale`` (seed ``[MASTERS] dark_scale``): subtract from flats the nearest
    #: bias-subtracted dark, scaled to each flat's exposure. When False (the default on every route) only
    #: a dark at the flats' own exposure is subtracted, else the bias alone
    #: (:func:`~ccdcal.masters.calibrators.plan_group`).
    flat_dark_scale: bool = False
    #: ``--overscan`` (:mod:`ccdcal.masters.optional`), and ``--uncertainty``: a current master without
    #: an UNCERT extension (built by an earlier ccdcal) is built again with one. ``ccdcal process`` passes
    #: :meth:`~ccdcal.kernels.options.StepOptions.for_masters`: its lights' options never version a master.
    optional: StepOptions = field(default_factory=StepOptions)
    #: ``--bpm``: also build bad-pixel masks (:mod:`ccdcal.masters.bpm`).
    bpm: bool = False
    #: ``--scheduler``: combine in bands of rows on a Dask cluster (:mod:`ccdcal.masters.combine`).
    scheduler: str | None = None
    #: The frame-QA rules' thresholds, ``--no-frame-qa`` (:mod:`ccdcal.masters.frameqa`).
    qa: QaOptions = field(default_factory=QaOptions)

    def __post_init__(self) -> None:
        MIN_FRAMES.check(self.min_frames)
        MEM_LIMIT.check(self.mem_limit)


#: Why ``--flat-dark-scale`` is refused with ``--no-bias`` (as ``--dark-scale`` is).
FLAT_DARK_SCALE_NO_BIAS = (
    "--flat-dark-scale cannot be used with --no-bias: the flats' dark then contains the bias, and a dark "
    "that contains the bias cannot be scaled (the bias would be scaled with it)"
)


def check_options(options: MasterOptions) -> None:
    """Raise :class:`UsageError` naming the option when ``options`` cannot be used."""
    for kind in options.kinds:
        if kind not in MASTER_ORDER:
            raise UsageError(f"--kind {kind!r}: use one of {', '.join(MASTER_ORDER)}")
    if options.no_bias and options.flat_dark_scale:
        raise UsageError(FLAT_DARK_SCALE_NO_BIAS)
    if options.scheduler is not None:
        check_address(options.scheduler)
    check_folder_text("--masters-dir", options.masters_dir)


def check_folder_text(option: str, folder: Path) -> None:
    """Raise :class:`UsageError` when a folder's path is not text: the catalog could not record the files
    written there (docs/design.md, Ingest)."""
    resolved = folder.expanduser().resolve()
    if not is_text(resolved):
        raise UsageError(
            f"{option} {shown(resolved)}: {not_text_reason(resolved, folder=True)}, or choose another folder"
        )


def carries_uncertainty(master: Master) -> bool:
    """Whether a master's file has an ``UNCERT`` extension, read from its ``parameters`` (any JSON):
    every master ccdcal builds now has one (``steps.uncertainty`` true); one an earlier ccdcal built
    without ``--uncertainty`` has none."""
    parameters = master.parameters
    steps = parameters.get("steps") if isinstance(parameters, Mapping) else None
    return isinstance(steps, Mapping) and steps.get("uncertainty") is True


def lacks_uncertainty(master: Master, options: MasterOptions) -> bool:
    """Whether a group's up-to-date master is built again all the same: ``--uncertainty`` (of ``ccdcal
    masters``) asks every master to carry its combine's uncertainty, and this one, built by an earlier
    ccdcal, has none."""
    return options.optional.uncertainty and master.kind != "bpm" and not carries_uncertainty(master)


def marked_bad(master: Master) -> str | None:
    """Why a group's up-to-date master is not used: it is marked bad (rebuilding it would give the same)."""
    if not master.is_bad:
        return None
    return (
        f"the {master.kind} master {Path(master.path).name} is marked bad ({master.bad_reason}) and its "
        "inputs are unchanged: mark the bad raw frames with `ccdcal mark-bad`, add new ones, or "
        "`ccdcal mark-good` it"
    )


def up_to_date(report: MasterReport, master: Master) -> MasterReport:
    """``report`` of a group whose master is built already: ``current``, or ``skipped`` when it is marked
    bad (building it again would give the same; a superseded one marked bad is not made current again)."""
    report.outcome, report.path, report.master_id = "current", master.path, master.id
    report.version = master.version
    report.reason = marked_bad(master)
    if report.reason:
        report.outcome = "skipped"
    return report


@dataclass(frozen=True)
class SetAside:
    """A frame of a group that the frame QA set aside: the rule (the first it fails) and the reason."""

    frame_id: int
    path: str
    sha256: str | None
    rule: str
    reason: str

    @property
    def line(self) -> str:
        """``frame X set aside: <reason>`` for messages."""
        return f"frame {Path(self.path).name} set aside: {self.reason}"


# -- one group ----------------------------------------------------------------------------------------


@dataclass
class GroupPlan:
    """A group's master as it would be built: inputs, calibrators, scales and identity.

    Attributes
    ----------
    kind, keys, frames
        The group: its kind, its keys (:data:`~ccdcal.catalog.queries.GROUP_KEYS`) and its frames as
        :func:`~ccdcal.catalog.queries.grouped_frames` returns them.
    bias, dark
        The masters subtracted from each input (``None``: not subtracted).
    dark_scales
        Per input, the factor the dark is multiplied by (``t_input / t_dark``); empty without a dark.
    includes_bias
        A dark built without a bias: it still contains the bias (``_withbias``).
    input_steps
        The optional step of the inputs (overscan and trim); ``None``: none.
    saturation
        Per input, its saturation level (:func:`~ccdcal.kernels.saturation.resolve_saturation`): its
        samples at or above it are left out of the combine; empty until planned.
    set_aside
        The group's frames that the frame QA set aside, with the reason (not combined).
    identities
        sha256 of what makes the master's pixels what they are
        (:func:`~ccdcal.masters.calibrators.master_identities`): the identity a new master is registered
        with, then the one an earlier ccdcal gave a master of the same pixels; empty until planned.
    """

    kind: str
    keys: dict[str, Any]
    frames: list[dict[str, Any]]
    bias: Master | None = None
    dark: Master | None = None
    dark_scales: list[float] = field(default_factory=list)
    includes_bias: bool = False
    identities: tuple[str, ...] = ()
    input_steps: InputSteps | None = None
    saturation: list[Saturation] = field(default_factory=list)
    #: The group's frames that the frame QA set aside (not in :attr:`frames`; :mod:`ccdcal.masters.screen`).
    set_aside: list[SetAside] = field(default_factory=list)

    @property
    def saturation_levels(self) -> tuple[float | None, ...]:
        """Each input's saturation level, in the order of :attr:`frames`."""
        return tuple(s.level for s in self.saturation)

    @property
    def identity(self) -> str:
        """The identity a new master of the plan is registered with (the first of :attr:`identities`)."""
        return self.identities[0] if self.identities else ""

    @property
    def target(self) -> dict[str, Any]:
        """The group as a matching target: its keys, mean temperature and mean DATE-OBS."""
        return {**self.keys, "ccd_temp": self.ccd_temp_mean, "date_obs": self.date_obs_mean}

    @property
    def ccd_temp_mean(self) -> float | None:
        """Mean CCD temperature of the inputs that have one."""
        temps = [f["ccd_temp"] for f in self.frames if f["ccd_temp"] is not None]
        return statistics.fmean(temps) if temps else None

    @property
    def date_obs_mean(self) -> dt.datetime | None:
        """Mean DATE-OBS of the inputs that have one."""
        return _mean_time([f["date_obs"] for f in self.frames if f["date_obs"] is not None])


@dataclass
class BuiltMaster:
    """A combined master before it is written: pixels, statistics, QA."""

    image: np.ndarray
    stats: dict[str, float]
    rejected: float
    flat_levels: list[float] = field(default_factory=list)
    previous: Master | None = None
    comparison: Comparison | None = None
    warnings: list[str] = field(default_factory=list)
    uncertainty: np.ndarray | None = None
    overscan_levels: list[float | None] = field(default_factory=list)
    level: Level | None = None
    #: Saturated samples left out of the combine.
    saturated: int = 0
    #: Each input's frame-QA statistics, when the combine measured them.
    measures: list[FrameMeasure] = field(default_factory=list)


def cannot_group(
    kind: str, keys: dict[str, Any], frames: list[dict[str, Any]], options: MasterOptions
) -> str | None:
    """Why a group cannot make a master before any calibrator is looked at (``None``: it can)."""
    if len(frames) < options.min_frames:
        plural = "s" if len(frames) != 1 else ""
        return (
            f"{len(frames)} {kind} frame{plural} in group {describe_keys(keys)}: "
            f"fewer than --min-frames {options.min_frames}"
        )
    if len({f["hdu"] or 0 for f in frames}) > 1:
        return f"the {kind} frames of group {describe_keys(keys)} keep their image in different HDUs"
    return None


def _mean_time(dates: Sequence[dt.datetime]) -> dt.datetime | None:
    if not dates:
        return None
    origin = min(dates)
    return origin + dt.timedelta(seconds=statistics.fmean((d - origin).total_seconds() for d in dates))


def describe_keys(keys: dict[str, Any]) -> str:
    """A group's keys for messages: ``ZWO ASI294MM Pro b2x2 g120 C-10 300s``, ``... filter R``."""
    parts = [
        f"b{number_text(keys.get('xbinning'))}x{number_text(keys.get('ybinning'))}",
        f"g{number_text(keys.get('gain'))}",
        f"C{number_text(keys.get('temp_key'))}",
    ]
    if "exptime" in keys:
        parts.append(f"{number_text(keys['exptime'])}s")
    if "filter" in keys:
        parts.append(f"filter {keys['filter'] if keys['filter'] is not None else 'NA'}")
    if keys.get("instrument"):
        parts.insert(0, str(keys["instrument"]))
    return " ".join(parts)
