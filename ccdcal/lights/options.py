"""What ``ccdcal process`` is told: :class:`ProcessOptions`, checked (:func:`check_options`) and turned into
the matching choices with pinned masters resolved (:func:`match_options`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal import limits
from ccdcal.catalog.models import Master
from ccdcal.catalog.queries import MatchRules, MaxAge
from ccdcal.errors import ConfigError, UsageError
from ccdcal.kernels.options import FLAT_LOW, FLAT_MIN, StepOptions
from ccdcal.lights.matching import MatchOptions
from ccdcal.lights.steps import ROLES, MasterInfo
from ccdcal.masters.frameqa import QaOptions
from ccdcal.masters.groups import FLAT_DARK_SCALE_NO_BIAS, MasterOptions, check_folder_text
from ccdcal.masters.optional import preparation_mismatch
from ccdcal.runtime.cluster import check_address


@dataclass(frozen=True)
class ProcessOptions:
    """Everything ``ccdcal process`` is told (recorded as the run's arguments).

    Attributes
    ----------
    masters_dir, output_dir : Path
        Where masters and calibrated lights are written.
    rules : MatchRules
        ``--temp-tolerance``, ``--exptime-tolerance``, ``--dark-scale``.
    no_bias : bool
        Darks keep the bias (built ``_withbias``); lights use them at their own exposure, no bias step.
    flat_dark_scale : bool
        ``--flat-dark-scale``: the master flats' dark is the nearest one scaled to the flats' exposure
        (:attr:`~ccdcal.masters.groups.MasterOptions.flat_dark_scale`); the lights' is ``rules``.
    no_dark, no_flat : bool
        Skip the step on purpose.
    allow_missing : tuple of str
        Steps whose missing master does not stop a light's calibration.
    bias, dark, flat : Path or None
        Pinned master files (``--bias/--dark/--flat FILE``).
    flat_min : float
        Flat pixels below it are clamped and flagged in the output's MASK extension (bit 1).
    flat_low : float
        Flat pixels below it (a low response: vignetted) are flagged in MASK (bit 16); above
        ``flat_min``, below 1.
    jobs : int or None
        Processes calibrating frames (default: every core this process may use).
    scheduler : str or None
        A Dask scheduler address (``tcp://HOST:8786``) or ``local:N``: frames are calibrated, and masters
        combined by bands of rows, by its workers instead (:mod:`ccdcal.runtime.cluster`).
    redo : bool
        Calibrate every light again, even those already calibrated with the same masters.
    min_frames, mem_limit
        Passed to the master build.
    optional : StepOptions
        The optional steps (:mod:`ccdcal.kernels.options`): ``--overscan auto|off|median|poly:N`` on every
        frame, ``--uncertainty`` (UNCERT extensions; ``--gain`` e-/ADU and ``--readnoise`` e- override
        the headers), ``--cosmic-rays`` (L.A.Cosmic).
    no_bpm : bool
        Do not apply the bad-pixel mask built by ``ccdcal masters --bpm``.
    write_uncalibrated : bool
        Write the lights no calibration step applies to (no bias, dark, flat or overscan), their pixels the
        raw frame's; without it they are not written and reported with the reason.
    qa : QaOptions
        Frame QA of the master build (:mod:`ccdcal.masters.frameqa`): ``--no-frame-qa`` and the rules'
        thresholds ``--qa-...``, recorded as those options (:data:`QA_ARGUMENTS`).

    Raises
    ------
    UsageError
        When a number is outside its range (:mod:`ccdcal.limits`: ``flat_min``, ``flat_low``, ``jobs``,
        ``min_frames``,
        ``mem_limit``; the tolerances by :class:`MatchRules`, the optional steps' by :class:`StepOptions`,
        the frame-QA thresholds by :class:`QaOptions`).
    """

    masters_dir: Path = Path("masters")
    output_dir: Path = Path("calibrated")
    rules: MatchRules = field(default_factory=MatchRules)
    no_bias: bool = False
    flat_dark_scale: bool = False
    no_dark: bool = False
    no_flat: bool = False
    allow_missing: tuple[str, ...] = ()
    bias: Path | None = None
    dark: Path | None = None
    flat: Path | None = None
    flat_min: float = FLAT_MIN
    flat_low: float = FLAT_LOW
    jobs: int | None = None
    scheduler: str | None = None
    redo: bool = False
    min_frames: int = 3
    mem_limit: int = 2 << 30
    optional: StepOptions = field(default_factory=StepOptions)
    no_bpm: bool = False
    write_uncalibrated: bool = False
    qa: QaOptions = field(default_factory=QaOptions)

    def __post_init__(self) -> None:
        limits.FLAT_MIN.check(self.flat_min)
        limits.check_flat_low(self.flat_low, self.flat_min)
        if self.jobs is not None:
            limits.JOBS.check(self.jobs)
        limits.MIN_FRAMES.check(self.min_frames)
        limits.MEM_LIMIT.check(self.mem_limit)

    def pinned(self, role: str) -> Path | None:
        """The master file pinned for a step (``--bias``, ``--dark``, ``--flat``), if any."""
        return {"bias": self.bias, "dark": self.dark, "flat": self.flat}[role]

    def master_options(self) -> MasterOptions:
        """The options of the master build: :data:`MASTER_FIELDS`, the optional steps as a master takes
        them (:meth:`~ccdcal.kernels.options.StepOptions.for_masters`: ``--overscan`` only). No other
        option versions a master: ``--uncertainty``, ``--cosmic-rays`` and ``--no-bpm`` act on lights."""
        values = {name: getattr(self, name) for name in MASTER_FIELDS}
        return MasterOptions(**values | {"optional": self.optional.for_masters()})

    def arguments(self) -> dict[str, Any]:
        """JSON-ready form (the ``runs.arguments`` of a process run: :class:`ProcessArguments`)."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "optional":
                data |= self.optional.arguments()
            elif item.name == "qa":
                data |= qa_arguments(value)
            elif item.name == "rules":
                data |= {
                    "temp_tolerance": value.temp_tolerance,
                    "exptime_tolerance": value.exptime_tolerance,
                    "dark_scale": value.dark_scale,
                    "max_age": value.max_age.text(),
                }
            elif isinstance(value, Path):
                data[item.name] = str(value.expanduser().resolve())
            else:
                data[item.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_arguments(cls, arguments: object) -> ProcessOptions:
        """The options a process (or ``run``) run was given, from its ``runs.arguments``
        (:class:`ProcessArguments`, as :meth:`arguments` writes them; unknown keys ignored, absent or
        ``null`` ones take their defaults).

        Raises
        ------
        ConfigError
            ``arguments`` is not a JSON object, or a recorded value has not the type of its option
            (naming it): a row ccdcal did not write.
        UsageError
            A recorded value ccdcal refuses (an unknown overscan mode ...).
        """
        if not isinstance(arguments, Mapping):
            raise ConfigError(f"the recorded options are not a JSON object but {type(arguments).__name__}")
        read = {key: _recorded(arguments, key, kinds) for key, kinds in _ARGUMENT_TYPES.items()}
        found = {key: value for key, value in read.items() if value is not None}
        rules = MatchRules(
            **{k: found[k] for k in ("temp_tolerance", "exptime_tolerance", "dark_scale") if k in found},
            max_age=MaxAge.parse(found.get("max_age")),
        )
        values: dict[str, Any] = {
            "rules": rules,
            "optional": StepOptions.from_arguments(found),
            "qa": qa_from_arguments(found),
        }
        for item in fields(cls):
            if item.name in found and item.name not in values:
                value = found[item.name]
                if item.name in ("masters_dir", "output_dir", "bias", "dark", "flat"):
                    value = Path(value)
                values[item.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


#: The fields of :class:`ProcessOptions` the master build takes (:meth:`ProcessOptions.master_options`); the
#: others act on lights only and never version a master.
MASTER_FIELDS = (
    "masters_dir",
    "min_frames",
    "mem_limit",
    "no_bias",
    "flat_dark_scale",
    "rules",
    "optional",
    "scheduler",
    "qa",
)

#: The recorded name of each :class:`QaOptions` field: the option that sets it (``enabled`` is
#: ``--no-frame-qa``, recorded as its opposite).
QA_ARGUMENTS = {
    "enabled": "no_frame_qa",
    **{item.name: f"qa_{item.name}" for item in fields(QaOptions) if item.name != "enabled"},
}


def qa_arguments(qa: QaOptions) -> dict[str, float | bool]:
    """The frame-QA options as a run records them: ``no_frame_qa`` and ``qa_outlier_sigma`` ... (the
    options' names, as the rest of :meth:`ProcessOptions.arguments`)."""
    return {
        QA_ARGUMENTS[name]: not value if name == "enabled" else value for name, value in qa.as_dict().items()
    }


def qa_from_arguments(found: Mapping[str, Any]) -> QaOptions:
    """The frame-QA options of recorded arguments (checked for their types): those absent take their
    defaults."""
    values = {name: found[key] for name, key in QA_ARGUMENTS.items() if key in found}
    if "enabled" in values:
        values["enabled"] = not values["enabled"]
    return QaOptions(**values)


class ProcessArguments(TypedDict, total=False):
    """``runs.arguments`` of a ``process`` run (:meth:`ProcessOptions.arguments`); a ``run`` run adds
    ``config``, its whole configuration."""

    masters_dir: str
    output_dir: str
    temp_tolerance: float
    exptime_tolerance: float
    dark_scale: bool
    max_age: str | None
    no_bias: bool
    flat_dark_scale: bool
    no_dark: bool
    no_flat: bool
    allow_missing: list[str]
    bias: str | None
    dark: str | None
    flat: str | None
    flat_min: float
    flat_low: float
    jobs: int | None
    scheduler: str | None
    redo: bool
    min_frames: int
    mem_limit: int
    overscan: str
    saturation: float | None
    uncertainty: bool
    gain: float | None
    readnoise: float | None
    cosmic_rays: bool
    cr_sigclip: float
    cr_objlim: float
    no_bpm: bool
    write_uncalibrated: bool
    no_frame_qa: bool
    qa_outlier_sigma: float
    qa_temp_tolerance: float
    qa_flat_min_snr: float
    qa_flat_min_fraction: float
    qa_flat_max_saturated: float
    qa_flat_max_level: float
    qa_tail_fraction: float


#: The JSON types of each recorded option (``float`` takes whole numbers too).
_ARGUMENT_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        ("masters_dir", "output_dir", "bias", "dark", "flat", "scheduler", "overscan", "max_age"), (str,)
    ),
    **dict.fromkeys(
        (
            "temp_tolerance",
            "exptime_tolerance",
            "flat_min",
            "flat_low",
            "saturation",
            "gain",
            "readnoise",
            "cr_sigclip",
            "cr_objlim",
            *(key for key in QA_ARGUMENTS.values() if key != "no_frame_qa"),
        ),
        (float, int),
    ),
    **dict.fromkeys(
        (
            "dark_scale",
            "no_bias",
            "flat_dark_scale",
            "no_dark",
            "no_flat",
            "redo",
            "uncertainty",
            "cosmic_rays",
            "no_bpm",
            "write_uncalibrated",
            "no_frame_qa",
        ),
        (bool,),
    ),
    **dict.fromkeys(("jobs", "min_frames", "mem_limit"), (int,)),
    "allow_missing": (list,),
}


def _recorded(arguments: Mapping[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    """One recorded option: its value (``None`` when absent or null), checked against its JSON types."""
    value = arguments.get(key)
    if value is None:
        return None
    wrong = isinstance(value, bool) and bool not in kinds  # JSON true is no number
    if wrong or not isinstance(value, kinds) or (isinstance(value, list) and not _texts(value)):
        raise ConfigError(
            f"the recorded option {key} = {value!r} is not of the type of --{key.replace('_', '-')}"
        )
    return value


def _texts(values: list[Any]) -> bool:
    return all(isinstance(value, str) for value in values)


def check_options(options: ProcessOptions) -> None:
    """Raise :class:`UsageError` naming the option when options are invalid or contradict each other."""
    for kind in options.allow_missing:
        if kind not in ROLES:
            raise UsageError(f"--allow-missing {kind!r}: use one of {', '.join(ROLES)}")
    if options.scheduler is not None:
        check_address(options.scheduler)
    if options.no_bias and options.rules.dark_scale:
        raise UsageError(
            "--dark-scale cannot be used with --no-bias: a dark that contains the bias cannot be scaled "
            "(the bias would be scaled with it)"
        )
    if options.no_bias and options.flat_dark_scale:
        raise UsageError(FLAT_DARK_SCALE_NO_BIAS)
    for role, skipped in (("bias", options.no_bias), ("dark", options.no_dark), ("flat", options.no_flat)):
        if skipped and options.pinned(role) is not None:
            raise UsageError(f"--{role} and --no-{role} cannot be used together")
    check_folder_text("--masters-dir", options.masters_dir)
    check_folder_text("--output-dir", options.output_dir)


def match_options(
    session: Session, options: ProcessOptions, resolved: MatchOptions | None = None
) -> MatchOptions:
    """The matching choices of ``options``, with pinned files resolved to masters of the catalog.

    ``resolved`` (from an earlier session) is re-read by id, so that a pinned master's status is seen as
    it is now.
    """
    pins: dict[str, MasterInfo] = {}
    for role in ROLES:
        given = options.pinned(role)
        if given is None:
            continue
        if resolved is not None and role in resolved.pins:
            master = session.get(Master, resolved.pins[role].id)
        else:
            path = str(Path(given).expanduser().resolve())
            master = session.scalars(select(Master).where(Master.path == path)).first()
        if master is None:
            raise UsageError(
                f"--{role} {given}: no master of the catalog has this path; give a master file built by "
                "ccdcal (see `ccdcal masters --list --all`)"
            )
        if master.kind != role:
            raise UsageError(f"--{role} {given} is a master {master.kind}, not a {role}")
        if resolved is None:  # checked once, before anything is written
            _check_pin(session, role, given, master, options)
        pins[role] = MasterInfo.of(master)
    skip = frozenset(r for r, on in (("dark", options.no_dark), ("flat", options.no_flat)) if on)
    return MatchOptions(
        rules=options.rules,
        no_bias=options.no_bias,
        skip=skip,
        allow_missing=frozenset(options.allow_missing),
        pins=pins,
    )


def _check_pin(session: Session, role: str, given: Path, master: Master, options: ProcessOptions) -> None:
    """Refuse a pinned master made for another reduction than this one: a dark that contains the bias
    while a bias is subtracted (subtracted twice), a bias-subtracted dark under ``--no-bias`` (the bias
    never subtracted), a master whose inputs were overscan-corrected or trimmed otherwise than
    ``--overscan`` prepares them. Each is a :class:`UsageError` naming the file and the option to use."""
    if role == "dark" and master.includes_bias and not options.no_bias:
        raise UsageError(f"--dark {given} contains the bias: add --no-bias, or pin a dark built without it")
    if role == "dark" and not master.includes_bias and options.no_bias:
        raise UsageError(
            f"--dark {given} has the bias subtracted, and --no-bias subtracts none from the lights (the "
            "bias would never be subtracted): drop --no-bias, or pin a dark built with --no-bias (_withbias)"
        )
    mismatch = preparation_mismatch(session, master, options.optional)
    if mismatch is not None:
        raise UsageError(f"--{role} {given} {mismatch}")
