"""``ccdcal masters``: build master bias, dark and flat frames from the catalog, with their provenance.

The order of work in :func:`build_masters`:

1. for each kind in calibration order (bias, then dark, then flat, so that the masters a master needs
   are current before it is planned), group the usable frames in SQL
   (:func:`ccdcal.catalog.queries.grouped_frames`);
2. skip groups below ``min_frames``; choose each group's calibrators with
   :func:`ccdcal.catalog.selection.select_master` (:func:`plan_group`): the master bias for darks (unless
   ``no_bias``, or the camera set-up has no bias frames: the dark then keeps the bias, ``_withbias``);
   the master bias and a dark for flats — the nearest bias-subtracted dark scaled to each flat's
   exposure, else a bias-including dark at the flats' own exposure (which replaces the bias);
3. compute the master's identity (its inputs with their sha256, the calibrators' sha256, scales and
   parameters); a current master with that identity, whose file is still there, means nothing to do —
   so a new bias version makes new darks and flats too;
4. otherwise combine (:mod:`ccdcal.mastercombine`: here, or by bands of rows on the Dask workers of
   ``scheduler``), compare with the group's current master (:mod:`ccdcal.steps.qa`), write the file
   atomically under a free name (``_v2``, ``_v3`` ...), and in one transaction register the master, its
   inputs and calibrators, and supersede the group's previous master (which stays on disk and in the
   catalog) — the file and its rows are :mod:`ccdcal.masterfiles`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master
from ccdcal.catalog.queries import GROUP_KEYS, MATCH_KEYS, MatchRules, grouped_frames, usable
from ccdcal.catalog.selection import select_master
from ccdcal.distributed import ClusterOnDemand, check_address
from ccdcal.errors import FitsFormatError, UsageError
from ccdcal.fitsfiles import (
    read_image,
    remove_stale_temporaries,
)
from ccdcal.mastercombine import combine_group
from ccdcal.masterfiles import (
    describe_keys,
    existing_master,
    register_master,
    same_group,
)
from ccdcal.naming import number_text
from ccdcal.reduction import MasterSteps, check_step_options, plan_master_steps
from ccdcal.steps.combine import ClipParams
from ccdcal.steps.dark import dark_scale
from ccdcal.steps.qa import (
    QA_OUTLIER_FRACTION,
    QA_OUTLIER_SIGMA,
    QA_SHIFT_SIGMA,
    Comparison,
    compare_masters,
    master_stats,
)

#: Kinds in the order they must be built: each may need the ones before it.
MASTER_ORDER = ("bias", "dark", "flat")


Progress = Callable[[str, int, int], None]


@dataclass
class MasterReport:
    """One group's outcome: ``built``, ``current`` (already up to date) or ``skipped`` with the reason."""

    kind: str
    keys: dict[str, Any]
    outcome: str
    n_inputs: int
    path: str | None = None
    master_id: int | None = None
    version: int | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
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
    """Everything :func:`build_masters` did, group by group."""

    run_id: int | None = None
    reports: list[MasterReport] = field(default_factory=list)

    def of(self, outcome: str) -> list[MasterReport]:
        """The reports with one outcome."""
        return [r for r in self.reports if r.outcome == outcome]

    @property
    def exit_code(self) -> int:
        """1 when a group could not be built (too few frames, no calibrator, unreadable input)."""
        return 1 if any(r.outcome == "skipped" for r in self.reports) else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (also the run's summary)."""
        return {
            "built": len(self.of("built")),
            "current": len(self.of("current")),
            "skipped": len(self.of("skipped")),
            "masters": [r.as_dict() for r in self.reports],
        }


@dataclass(frozen=True)
class MasterOptions:
    """How masters are built (every field is recorded with the master)."""

    masters_dir: Path = Path("masters")
    kinds: tuple[str, ...] = MASTER_ORDER
    min_frames: int = 3
    params: ClipParams = field(default_factory=ClipParams)
    mem_limit: int = 2 << 30
    no_bias: bool = False
    rules: MatchRules = field(default_factory=MatchRules)
    #: Subtract from flats a dark of another exposure, scaled to theirs (seed ``[MASTERS] dark_scale``);
    #: when False only a dark at the flats' own exposure is subtracted.
    flat_dark_scale: bool = True
    #: ``--overscan``, ``--uncertainty`` and ``--bpm`` (:mod:`ccdcal.reduction`, :mod:`ccdcal.badpixels`).
    overscan: str = "auto"
    uncertainty: bool = False
    bpm: bool = False
    #: ``--scheduler``: combine in bands of rows on a Dask cluster (:mod:`ccdcal.mastercombine`).
    scheduler: str | None = None


def build_masters(
    catalog: Catalog,
    options: MasterOptions = MasterOptions(),
    progress: Progress | None = None,
    *,
    run_id: int | None = None,
) -> MastersSummary:
    """Build every missing or stale master of the requested kinds.

    Parameters
    ----------
    catalog : Catalog
        The open catalog (its usable frames are grouped; masters and their rows are added).
    options : MasterOptions
        Folder, kinds, ``min_frames``, clipping parameters, ``no_bias`` and matching tolerances.
    progress : callable, optional
        Called as ``progress(label, groups done, groups)``.
    run_id : int, optional
        Record the masters under this run (``ccdcal process`` builds its masters in its own run);
        by default a ``masters`` run is recorded.

    Returns
    -------
    MastersSummary
        One report per group: built, already current, or skipped with the reason.
    """
    _check_options(options)
    folder = options.masters_dir.expanduser().resolve()
    if run_id is not None:
        return _build_all(catalog, options, folder, run_id, progress)
    arguments = {
        "masters_dir": str(folder),
        "kinds": list(options.kinds),
        "min_frames": options.min_frames,
        "params": options.params.as_dict(),
        "mem_limit": options.mem_limit,
        "no_bias": options.no_bias,
        "temp_tolerance": options.rules.temp_tolerance,
        "overscan": options.overscan,
        "uncertainty": options.uncertainty,
        "bpm": options.bpm,
    }
    if options.scheduler is not None:
        arguments["scheduler"] = options.scheduler
    with catalog.run("masters", arguments) as run:
        summary = _build_all(catalog, options, folder, run.id, progress)
        run.summary = summary.as_dict()
        run.partial = summary.exit_code != 0
    return summary


def _check_options(options: MasterOptions) -> None:
    for kind in options.kinds:
        if kind not in MASTER_ORDER:
            raise UsageError(f"--kind {kind!r}: use one of {', '.join(MASTER_ORDER)}")
    if options.min_frames < 1:
        raise UsageError(f"--min-frames must be at least 1, not {options.min_frames}")
    if options.scheduler is not None:
        check_address(options.scheduler)
    check_step_options(options)


def _build_all(
    catalog: Catalog, options: MasterOptions, folder: Path, run_id: int, progress: Progress | None
) -> MastersSummary:
    summary = MastersSummary(run_id=run_id)
    remove_stale_temporaries(folder)
    with ClusterOnDemand(options.scheduler) as cluster:  # started when a master is to be combined
        for kind in MASTER_ORDER:
            if kind not in options.kinds:
                continue
            with catalog.session() as session:
                rows = grouped_frames(session, kind)
            groups = [list(g) for _, g in groupby(rows, key=lambda r: r["group_number"])]
            for number, frames in enumerate(groups, 1):
                if progress:
                    progress(f"master {kind}", number - 1, len(groups))
                summary.reports.append(_one_group(catalog, kind, frames, folder, options, run_id, cluster))
            if progress and groups:
                progress(f"master {kind}", len(groups), len(groups))
    if options.bpm:
        from ccdcal.badpixels import build_bpms

        summary.reports += build_bpms(catalog, folder, run_id)
    return summary


def plan_masters(session: Session, options: MasterOptions = MasterOptions()) -> list[MasterReport]:
    """What :func:`build_masters` would do, group by group, without combining or writing any file: see
    :func:`ccdcal.masterplan.plan_masters` (provisional rows are added to ``session``, which the caller
    must roll back)."""
    from ccdcal.masterplan import plan_masters as plan  # it builds on this module

    return plan(session, options)


def _marked_bad(master: Master) -> str | None:
    """Why a group's up-to-date master is not used: it is marked bad (rebuilding it would give the same)."""
    if not master.is_bad:
        return None
    return (
        f"the {master.kind} master {Path(master.path).name} is marked bad ({master.bad_reason}) and its "
        "inputs are unchanged: mark the bad raw frames with `ccdcal mark-bad`, add new ones, or "
        "`ccdcal mark-good` it"
    )


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
    identity
        sha256 of what makes the master what it is (see :func:`master_identity`).
    """

    kind: str
    keys: dict[str, Any]
    frames: list[dict[str, Any]]
    bias: Master | None = None
    dark: Master | None = None
    dark_scales: list[float] = field(default_factory=list)
    includes_bias: bool = False
    identity: str = ""
    steps: MasterSteps | None = None

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


def _one_group(
    catalog: Catalog,
    kind: str,
    frames: list[dict[str, Any]],
    folder: Path,
    options: MasterOptions,
    run_id: int,
    cluster: ClusterOnDemand,
) -> MasterReport:
    keys = {name: frames[0][name] for name in GROUP_KEYS[kind]}
    report = MasterReport(kind, keys, "skipped", len(frames))
    report.reason = _cannot_group(kind, keys, frames, options)
    if report.reason:
        return report
    with catalog.session() as session:
        plan, report.reason = plan_group(session, kind, keys, frames, options)
        if report.reason:
            return report
        existing = existing_master(session, plan)
        if existing is not None:
            report.outcome, report.path, report.master_id = "current", existing.path, existing.id
            report.version = existing.version
            report.reason = _marked_bad(existing)
            if report.reason:
                report.outcome = "skipped"
            return report
    try:
        built = _combine(plan, options, cluster)
    except (FitsFormatError, ValueError) as exc:
        report.reason = f"cannot build the {kind} master of group {describe_keys(keys)}: {exc}"
        return report
    _quality_gate(catalog, plan, built)
    master = register_master(catalog, plan, built, folder, options, run_id)
    report.outcome, report.path, report.master_id = "built", master.path, master.id
    report.version, report.warnings = master.version, built.warnings
    if master.run_id != run_id:  # a concurrent run registered the same master first
        report.outcome, report.warnings = "current", []
    return report


def _cannot_group(
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


# -- planning: calibrators and identity ---------------------------------------------------------------


def plan_group(
    session: Session,
    kind: str,
    keys: dict[str, Any],
    frames: list[dict[str, Any]],
    options: MasterOptions,
    cards: dict[int, dict[str, Any]] | None = None,
) -> tuple[GroupPlan, str | None]:
    """Choose a group's calibrators and scales, and compute its identity.

    ``cards``: the section cards of the kind's frames, when the caller has read them for every group
    (:func:`~ccdcal.reduction.plan_master_steps` reads the group's otherwise).

    Returns
    -------
    plan : GroupPlan
        The plan (its identity set when it can be built).
    reason : str or None
        Why the group cannot be built (no matching master bias), else ``None``.
    """
    plan = GroupPlan(kind, keys, frames)
    if kind in ("dark", "flat") and not options.no_bias and _setup_has_bias(session, keys):
        plan.bias = select_master(session, "bias", plan.target, options.rules)
        if plan.bias is None:
            return plan, (
                f"no master bias matches the {kind} group {describe_keys(keys)} (±"
                f"{number_text(options.rules.temp_tolerance)} °C): build the bias first or pass --no-bias"
            )
    if kind == "dark":
        plan.includes_bias = plan.bias is None
    if kind == "flat":
        _choose_flat_dark(session, plan, options.rules, scale=options.flat_dark_scale)
    plan.steps, reason = plan_master_steps(session, frames, options, cards)
    if reason:
        return plan, f"cannot prepare the {kind} frames of group {describe_keys(keys)}: {reason}"
    plan.identity = master_identity(plan, options.params)
    return plan, None


def _setup_has_bias(session: Session, keys: dict[str, Any]) -> bool:
    """Whether the catalog holds usable bias frames of this camera set-up (match keys, any temperature)."""
    query = select(Frame.id).where(
        usable("bias"), *(getattr(Frame, k).is_not_distinct_from(keys.get(k)) for k in MATCH_KEYS)
    )
    return session.execute(query.limit(1)).first() is not None


def _choose_flat_dark(session: Session, plan: GroupPlan, rules: MatchRules, *, scale: bool) -> None:
    """The dark subtracted from a group of flats, and its scale for each flat.

    With a master bias: the nearest bias-subtracted dark, preferring one at least as long as the longest
    flat, scaled to each flat's exposure (with ``scale`` False: only a bias-subtracted dark at the flats'
    own exposure, unscaled). Otherwise (or when there is none) a dark that still holds the bias, at the
    flats' own exposure, unscaled: it replaces the bias. No dark when a flat's exposure is unknown or
    when nothing matches (the flats are then only bias-subtracted).
    """
    exposures = [f["exptime"] for f in plan.frames]
    if any(t is None or t <= 0 for t in exposures):
        return
    exact = replace(rules, dark_scale=False)
    if plan.bias is not None:
        longest = max(exposures)
        if scale:
            dark = select_master(
                session, "dark", {**plan.target, "exptime": longest}, replace(rules, dark_scale=True)
            )
        elif len(set(exposures)) == 1:
            dark = select_master(session, "dark", {**plan.target, "exptime": longest}, exact)
        else:
            dark = None
        if dark is not None and dark.exptime and not dark.includes_bias:
            plan.dark, plan.dark_scales = dark, [dark_scale(t, dark.exptime) for t in exposures]
            return
    if len(set(exposures)) == 1:
        dark = select_master(session, "dark", {**plan.target, "exptime": exposures[0]}, exact)
        if dark is not None and dark.includes_bias:
            plan.bias, plan.dark, plan.dark_scales = None, dark, [1.0] * len(exposures)


def master_identity(plan: GroupPlan, params: ClipParams) -> str:
    """What makes a master what it is, as a sha256: inputs as used, calibrators, scales, parameters.

    A change of any input file (its sha256), of the input set, of a calibrator (a new version of the
    bias has a new sha256) or of the parameters gives a new identity, hence a new master version.
    """
    payload = {
        "kind": plan.kind,
        "inputs": sorted((f["id"], f["sha256"]) for f in plan.frames),
        "bias": plan.bias.sha256 if plan.bias else None,
        "dark": plan.dark.sha256 if plan.dark else None,
        "dark_scales": [round(s, 12) for s in plan.dark_scales],
        "includes_bias": plan.includes_bias,
        "params": params.as_dict(),
    }
    if plan.steps is not None:  # overscan, uncertainty: absent from masters built without them
        payload["steps"] = plan.steps.identity()
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# -- numbers -------------------------------------------------------------------------------------------


def _combine(plan: GroupPlan, options: MasterOptions, cluster: ClusterOnDemand) -> BuiltMaster:
    """Combine a group's frames (:func:`ccdcal.mastercombine.combine_group`: here or on Dask workers)."""
    combined = combine_group(plan, options, cluster)
    built = BuiltMaster(combined.image, master_stats(combined.image), combined.rejected_fraction)
    built.flat_levels, built.uncertainty = combined.flat_levels, combined.uncertainty
    built.overscan_levels = combined.overscan_levels
    return built


def _quality_gate(catalog: Catalog, plan: GroupPlan, built: BuiltMaster) -> None:
    """Compare a new master with the current one of its group; warn when it moved (:mod:`ccdcal.steps.qa`)."""
    with catalog.session() as session:
        built.previous = session.scalars(same_group(plan).order_by(Master.id.desc()).limit(1)).first()
    if built.previous is None:
        return
    name = Path(built.previous.path).name
    try:
        old = read_image(built.previous.path, 0, np.float64)
    except FitsFormatError:
        built.warnings.append(f"the previous {plan.kind} master {name} cannot be read for comparison")
        return
    built.comparison = compare_masters(built.image, old)
    if built.comparison is None:
        return
    shift, sigma = built.comparison.shift, built.comparison.sigma
    what = (
        f"new {plan.kind} master of group {describe_keys(plan.keys)} differs from the previous one ({name})"
    )
    if built.comparison.level_moved:
        built.warnings.append(
            f"{what} by {shift:+.4g} in median, more than {QA_SHIFT_SIGMA:g} x its noise {sigma:.4g}"
        )
    if built.comparison.structure_changed:
        built.warnings.append(
            f"{what} by more than {QA_OUTLIER_SIGMA:g} x its noise {sigma:.4g} on "
            f"{built.comparison.outlier_fraction:.2%} of pixels (gate {QA_OUTLIER_FRACTION:.0%})"
        )


def list_masters(catalog: Catalog, *, include_superseded: bool = False) -> list[dict[str, Any]]:
    """The catalog's masters with their QA numbers, by kind, newest first.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    include_superseded : bool
        Also list the versions that a newer master replaced.

    Returns
    -------
    list of dict
        One dict a master: id, kind, path, version, status, is_bad, the group keys shown in names,
        n_inputs, median/mean/std, rejected_fraction, QA warnings, created_at.
    """
    with catalog.session() as session:
        query = select(Master).order_by(Master.kind, Master.id.desc())
        if not include_superseded:
            query = query.where(Master.status == "current")
        return [_listed(m) for m in session.scalars(query)]


def _listed(m: Master) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind,
        "path": m.path,
        "version": m.version,
        "status": m.status,
        "is_bad": m.is_bad,
        "includes_bias": m.includes_bias,
        "n_inputs": m.n_inputs,
        "exptime": m.exptime,
        "filter": m.filter,
        "temp_key": m.temp_key,
        "ccd_temp_mean": m.ccd_temp_mean,
        "median": m.stat_median,
        "mean": m.stat_mean,
        "std": m.stat_std,
        "rejected_fraction": m.rejected_fraction,
        "warnings": list((m.parameters or {}).get("qa", {}).get("warnings", [])),
        "created_at": m.created_at,
    }
