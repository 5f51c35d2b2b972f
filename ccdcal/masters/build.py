"""``ccdcal masters``: build master bias, dark and flat frames from the catalog, with their provenance.

The order of work in :func:`build_masters`:

1. for each kind in calibration order (bias, then dark, then flat, so that the masters a master needs
   are current before it is planned), group the usable frames in SQL
   (:func:`ccdcal.catalog.queries.grouped_frames`);
2. skip groups below ``min_frames``; choose each group's calibrators with
   :func:`ccdcal.catalog.selection.select_master` (:func:`ccdcal.masters.calibrators.plan_group`): the master
   bias for darks (unless ``no_bias``, or the camera set-up has no bias frames: the dark then keeps the bias,
   ``_withbias``); the master bias and a dark for flats — the nearest bias-subtracted dark scaled to each
   flat's exposure, else a bias-including dark at the flats' own exposure (which replaces the bias);
3. compute the master's identity (its inputs with their sha256, the calibrators' sha256, scales and
   parameters: what makes its pixels, no option of the lights); a current master with that identity,
   whose file is still there, means nothing to do — so a new bias version makes new darks and flats too;
   a superseded one whose file is intact is made current again (:mod:`ccdcal.masters.restore`:
   ``mark-bad`` then ``mark-good`` of a frame builds nothing the second time);
4. otherwise combine (:mod:`ccdcal.masters.combine`: here, or by bands of rows on the Dask workers of
   ``scheduler``; the combine's uncertainty, written as every master's ``UNCERT``, in the same pass); a
   master finite on fewer than :data:`~ccdcal.kernels.qa.MIN_FINITE_FRACTION` of its
   pixels is not built (the group is skipped with the reason); compare with the group's current master
   (:mod:`ccdcal.kernels.qa`), write the file atomically under a free name (``_v2``, ``_v3`` ...), and in
   one transaction register the master, its inputs and calibrators, and supersede the group's previous
   master (which stays on disk and in the catalog) — the file and its rows are
   :mod:`ccdcal.masters.files`.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Master
from ccdcal.catalog.queries import GROUP_KEYS, grouped_frames
from ccdcal.errors import FitsFormatError
from ccdcal.files.fitsio import read_image, remove_stale_temporaries
from ccdcal.kernels.qa import (
    MIN_FINITE_FRACTION,
    QA_OUTLIER_FRACTION,
    QA_OUTLIER_SIGMA,
    QA_SHIFT_SIGMA,
    compare_masters,
    finite_fraction,
)
from ccdcal.masters.bpm import build_bpms
from ccdcal.masters.calibrators import plan_group
from ccdcal.masters.files import existing_master, register_master, same_group, serving_master
from ccdcal.masters.folders import own_folders
from ccdcal.masters.groups import (
    MASTER_ORDER,
    BuiltMaster,
    GroupPlan,
    MasterOptions,
    MasterReport,
    MastersSummary,
    Progress,
    cannot_group,
    check_options,
    describe_keys,
    qa_warnings,
    up_to_date,
)
from ccdcal.masters.recovery import recover
from ccdcal.masters.restore import restorable, restore_master, restored_reason
from ccdcal.masters.screen import (
    Screening,
    calibrator_ids,
    combine_master,
    lacks_differences,
    screen_group,
    too_few_left,
    update_differences,
)
from ccdcal.runtime.cluster import ClusterOnDemand


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
    check_options(options)
    folder = options.masters_dir.expanduser().resolve()
    own_folders(catalog, (folder, "masters folder", "--masters-dir"))
    if run_id is not None:
        return _build_all(catalog, options, folder, run_id, progress)
    arguments = {
        "masters_dir": str(folder),
        "kinds": list(options.kinds),
        "min_frames": options.min_frames,
        "params": options.params.as_dict(),
        "mem_limit": options.mem_limit,
        "no_bias": options.no_bias,
        "flat_dark_scale": options.flat_dark_scale,
        "temp_tolerance": options.rules.temp_tolerance,
        "overscan": options.optional.overscan.text,
        "saturation": options.optional.saturation,
        "uncertainty": options.optional.uncertainty,
        "bpm": options.bpm,
        "frame_qa": options.qa.as_dict(),
    }
    if options.scheduler is not None:
        arguments["scheduler"] = options.scheduler
    with catalog.run("masters", arguments) as run:
        recover(catalog, run.id, folder)  # what a run that died left in the folder (not another's)
        summary = _build_all(catalog, options, folder, run.id, progress)
        run.summary = summary.as_dict()
        run.partial = summary.exit_code != 0
    return summary


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
        summary.reports += build_bpms(catalog, folder, run_id)
    return summary


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
    report.reason = cannot_group(kind, keys, frames, options)
    if report.reason:
        with catalog.reading() as session:
            serving = serving_master(session, kind, keys, frames)
        if serving is not None:  # built before (another --min-frames): the group is served
            report.outcome, report.path, report.master_id = "current", serving.path, serving.id
            report.version, report.reason = serving.version, None
        return report
    with catalog.session() as session:
        plan, report.reason = plan_group(session, kind, keys, frames, options)
    if report.reason:
        return report
    try:
        screening = screen_group(catalog, plan, options, cluster, run_id)
        if screening.set_aside:
            plan, report.reason = _plan_kept(catalog, plan, screening, options)
            if report.reason:
                return report
    except (FitsFormatError, ValueError) as exc:
        report.reason = f"cannot build the {kind} master of group {describe_keys(keys)}: {exc}"
        return report
    with catalog.session() as session:
        existing = existing_master(session, plan, options)
        if existing is not None:
            return _noted(up_to_date(report, existing), plan)
        restoring = restorable(session, plan, options)
        if restoring is not None and restoring.is_bad:  # as the same master current and marked bad
            return up_to_date(report, restoring)
    if restoring is not None:
        restored, here = restore_master(catalog, plan, options, restoring, run_id)
        if restored is not None:
            up_to_date(report, restored)
            if here:  # else a concurrent run made it current first
                report.outcome, report.reason = "restored", restored_reason(restored)
            return _noted(report, plan)
    try:
        built = screening.measured or _combine(catalog, plan, options, cluster, screening)
    except (FitsFormatError, ValueError) as exc:
        report.reason = f"cannot build the {kind} master of group {describe_keys(keys)}: {exc}"
        return report
    finite = finite_fraction(built.image)
    if finite < MIN_FINITE_FRACTION:  # all NaN (or mostly): it would make its lights NaN
        report.reason = (
            f"cannot build the {kind} master of group {describe_keys(keys)}: only {finite:.1%} of its "
            f"pixels have a value (a master needs {MIN_FINITE_FRACTION:.0%}; the others are NaN: no input "
            f"had a finite sample there); check its {len(frames)} frames and `ccdcal mark-bad` the broken "
            "ones, or add good ones"
        )
        return report
    _quality_gate(catalog, plan, built)
    master = register_master(catalog, plan, built, folder, options, run_id)
    report.outcome, report.path, report.master_id = "built", master.path, master.id
    report.version = master.version
    report.warnings = [a.line for a in plan.set_aside] + built.warnings
    if master.run_id != run_id:  # a concurrent run registered the same master first
        report.outcome, report.warnings = "current", []
    return _noted(report, plan)


def _noted(report: MasterReport, plan: GroupPlan) -> MasterReport:
    """``report`` of a group served with frames the frame QA set aside: it counts the frames combined (not
    the group's: ``built FILE (N frames)``)."""
    if plan.set_aside and report.outcome != "skipped":
        report.n_inputs = len(plan.frames)
    return report


# -- numbers -------------------------------------------------------------------------------------------


def _plan_kept(
    catalog: Catalog, plan: GroupPlan, screening: Screening, options: MasterOptions
) -> tuple[GroupPlan, str | None]:
    """The plan of a group's frames that the frame QA kept (its calibrators chosen for them), or why
    there is none: too few frames are left."""
    reason = too_few_left(plan, len(screening.kept), screening.set_aside, options)
    if reason:
        return plan, reason
    with catalog.session() as session:
        kept, reason = plan_group(session, plan.kind, plan.keys, screening.kept, options)
    kept.set_aside = list(screening.set_aside)
    return kept, reason


def _combine(
    catalog: Catalog,
    plan: GroupPlan,
    options: MasterOptions,
    cluster: ClusterOnDemand,
    screening: Screening,
) -> BuiltMaster:
    """The master of the plan: combined here or on the cluster; a flat group's levels reused when they
    were measured after the same calibrators, and its frames' differences from it stored."""
    levels: list[float] | None = None
    if plan.kind == "flat" and screening.flat_calibrators == calibrator_ids(plan):
        found = [screening.flat_levels.get(int(f["id"])) for f in plan.frames]
        levels = [v for v in found if v is not None] if all(v is not None for v in found) else None
    measure = options.qa.enabled and plan.kind == "flat" and lacks_differences(catalog, plan.frames)
    built = combine_master(plan, options, cluster, levels=levels, measure=measure)
    if built.measures:
        update_differences(catalog, plan.frames, built.measures)
    return built


def _quality_gate(catalog: Catalog, plan: GroupPlan, built: BuiltMaster) -> None:
    """Compare a new master with the current one of its group; warn when it moved
    (:mod:`ccdcal.kernels.qa`)."""
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
    with catalog.reading() as session:
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
        "warnings": qa_warnings(m.parameters),
        "created_at": m.created_at,
    }
