"""A master's file and rows: its FITS header (group keys, IMCMBnnn inputs with their sha256, combine
parameters, HISTORY), the free file name it is written under, and its ``masters``, ``master_inputs`` and
``master_calibrators`` rows, written in the transaction that registers the file
(:func:`register_master`). Every master is written with its combine's uncertainty, an ``UNCERT``
extension. :mod:`ccdcal.masters.build` plans the groups and combines them."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.catalog.history import change, created
from ccdcal.catalog.lineage import rebuild_reason, unusable_reason
from ccdcal.catalog.models import Master, MasterCalibrator, MasterInput, MasterSetAside
from ccdcal.files.cardtext import card_name
from ccdcal.files.fitsio import add_history, set_card, stamp_version, write_free
from ccdcal.files.journal import Journal
from ccdcal.files.naming import free_master_name, master_stems
from ccdcal.kernels.combine import ClipParams
from ccdcal.kernels.uncertainty import uncertainty_hdu
from ccdcal.masters.groups import (
    BuiltMaster,
    GroupPlan,
    MasterOptions,
    describe_keys,
    lacks_uncertainty,
    level_record,
    saturation_record,
)
from ccdcal.runtime.words import counted

if TYPE_CHECKING:
    from astropy.io import fits

#: IRAF's IMCMBnnn cards name at most this many inputs (all of them are in ``master_inputs``); each
#: IMSHAnnn card holds the sha256 of its IMCMBnnn file as it was combined, so that a master's header alone
#: traces its inputs (``ccdcal provenance --from-header``).
MAX_IMCMB = 999


def existing_master(session: Session, plan: GroupPlan, options: MasterOptions) -> Master | None:
    """The current master of the plan's identities whose file is still there (else it is built again,
    as it is when ``--uncertainty`` asks for an UNCERT extension it lacks: :func:`lacks_uncertainty`)."""
    query = select(Master).where(Master.identity.in_(plan.identities), Master.status == "current")
    existing = session.scalars(query.order_by(Master.id.desc())).first()
    if existing is None or not Path(existing.path).is_file() or lacks_uncertainty(existing, options):
        return None
    return existing


def serving_master(
    session: Session, kind: str, keys: Mapping[str, Any], frames: list[dict[str, Any]]
) -> Master | None:
    """The master that serves a group which cannot make one now (too few frames under today's
    ``--min-frames``), so that the group is not reported skipped while its lights use it: a current
    master of ``kind`` with exactly the group ``keys`` (with the bias or without), made from exactly the
    group's ``frames`` as they are (ids and sha256), usable (nothing in its lineage marked bad) and whose
    file is there. ``None`` when none does: the group is skipped."""
    query = select(Master).where(
        Master.kind == kind,
        Master.status == "current",
        *(getattr(Master, k).is_not_distinct_from(v) for k, v in keys.items()),
    )
    wanted = {(f["id"], f["sha256"]) for f in frames}
    for master in session.scalars(query.order_by(Master.id.desc())):
        made_of = session.execute(
            select(MasterInput.frame_id, MasterInput.sha256).where(MasterInput.master_id == master.id)
        )
        if (
            set(map(tuple, made_of)) == wanted
            and unusable_reason(session, master) is None
            and Path(master.path).is_file()
        ):
            return master
    return None


def next_version(session: Session, plan: GroupPlan) -> int:
    """The version a new master of the plan's group takes: one more than its highest, whatever its status."""
    earlier = session.scalar(same_group(plan, current_only=False).with_only_columns(func.max(Master.version)))
    return (earlier or 0) + 1


def add_master_row(session: Session, plan: GroupPlan, version: int, **fields: Any) -> Master:
    """Add the ``masters`` row of a plan at ``version`` (:func:`next_version`) with ``fields`` on top."""
    master = master_row(plan, version, **fields)
    session.add(master)
    session.flush()
    return master


def master_row(plan: GroupPlan, version: int, **fields: Any) -> Master:
    """The ``masters`` row of a plan, at ``version``, with ``fields`` on top (not added to a session)."""
    return Master(
        kind=plan.kind,
        identity=plan.identity,
        version=version,
        **plan.keys,
        includes_bias=plan.includes_bias,
        ccd_temp_mean=plan.ccd_temp_mean,
        date_obs_mean=plan.date_obs_mean,
        n_inputs=len(plan.frames),
        method="sigma_clipped_median",
        status="current",
        **fields,
    )


def same_group(plan: GroupPlan, *, current_only: bool = True) -> Any:
    """Masters of the plan's kind with exactly its group keys (NULL matching NULL); by default current.

    A dark that keeps the bias and one that does not are different products (``_withbias``): they do
    not supersede each other.
    """
    query = select(Master).where(
        Master.kind == plan.kind,
        *(getattr(Master, k).is_not_distinct_from(v) for k, v in plan.keys.items()),
        Master.includes_bias.is_(plan.includes_bias),
    )
    return query.where(Master.status == "current") if current_only else query


# -- files and rows ------------------------------------------------------------------------------------

_KEY_CARDS = (
    ("instrument", "INSTRUME", "instrument of the inputs"),
    ("xbinning", "XBINNING", "binning along x"),
    ("ybinning", "YBINNING", "binning along y"),
    ("gain", "GAIN", "camera gain setting of the inputs"),
    ("offset", "OFFSET", "camera offset setting of the inputs"),
    ("readout_mode", "READOUTM", "readout mode of the inputs"),
    ("exptime", "EXPTIME", "[s] exposure of the inputs"),
    ("filter", "FILTER", "filter of the inputs"),
)


def _header(plan: GroupPlan, built: BuiltMaster, params: ClipParams) -> fits.Header:
    """The master's header: group keys, inputs, combine parameters, calibrators, statistics, HISTORY."""
    # Imported here for start-up time: the planners use this module's rows and names without astropy.
    from astropy.io import fits

    header = fits.Header()
    set_card(header, "IMAGETYP", f"MASTER {plan.kind.upper()}", "ccdcal master calibration frame")
    if plan.kind == "flat":
        set_card(header, "BUNIT", "", "dimensionless: normalised to median 1")
    else:
        set_card(header, "BUNIT", "adu", "")
    _group_cards(header, plan)
    _input_cards(header, plan)
    _combine_cards(header, plan, built, params)
    history = _history(plan, built, params)
    if plan.input_steps is not None:  # overscan and trim of the inputs
        for keyword, value, comment in plan.input_steps.cards():
            set_card(header, keyword, value, comment)
        history[1:1] = plan.input_steps.history(built.overscan_levels)
    if built.uncertainty is not None:
        set_card(header, "UNCERTEX", "UNCERT", "extension with the combine uncertainty (std dev)")
    add_history(header, history)
    stamp_version(header)
    return header


def _group_cards(header: fits.Header, plan: GroupPlan) -> None:
    for key, keyword, comment in _KEY_CARDS:
        if plan.keys.get(key) is not None:
            set_card(header, keyword, plan.keys[key], comment)
    if plan.ccd_temp_mean is not None:
        set_card(header, "CCD-TEMP", round(plan.ccd_temp_mean, 4), "[C] mean CCD temperature of the inputs")
    if plan.keys.get("temp_key") is not None:
        set_card(header, "TEMPKEY", plan.keys["temp_key"], "[C] group temperature (SET-TEMP or rounded)")
    when = plan.date_obs_mean
    if when is not None:
        # Imported here for start-up time (see _header).
        from astropy.time import Time

        iso = when.isoformat(timespec="milliseconds")
        set_card(header, "DATE-OBS", iso, "[UTC] mean DATE-OBS of the inputs")
        set_card(header, "MJD-OBS", round(Time(iso, scale="utc").mjd, 8), "[d] MJD of DATE-OBS")


def _input_cards(header: fits.Header, plan: GroupPlan) -> None:
    set_card(header, "NCOMBINE", len(plan.frames), "number of frames combined")
    for index, frame in enumerate(plan.frames[:MAX_IMCMB], 1):
        set_card(header, f"IMCMB{index:03d}", card_name(Path(frame["path"]).name))
        if frame["sha256"]:
            set_card(header, f"IMSHA{index:03d}", frame["sha256"])  # the value fills the card
    set_card(header, "NSETASID", len(plan.set_aside), "frames of the group set aside by the frame QA")
    for index, aside in enumerate(plan.set_aside[:MAX_IMCMB], 1):
        set_card(header, f"SETAS{index:03d}", card_name(Path(aside.path).name), f"rule {aside.rule}")
    if plan.kind == "dark":
        set_card(header, "WITHBIAS", plan.includes_bias, "the dark still contains the bias")
    if plan.bias is not None:
        set_card(header, "BIASCOR", card_name(Path(plan.bias.path).name), "master bias subtracted")
    if plan.dark is not None:
        set_card(header, "DARKCOR", card_name(Path(plan.dark.path).name), "master dark subtracted")
        if len(set(plan.dark_scales)) == 1:
            set_card(header, "DARKSCAL", plan.dark_scales[0], "dark scale factor t_flat / t_dark")


def _combine_cards(header: fits.Header, plan: GroupPlan, built: BuiltMaster, params: ClipParams) -> None:
    set_card(header, "COMBMETH", "sigma_clipped_median", "combine method")
    set_card(header, "CLIPLOW", params.sigma_lower, "[sigma] lower clipping bound")
    set_card(header, "CLIPHIGH", params.sigma_upper, "[sigma] upper clipping bound")
    set_card(header, "CLIPITER", params.maxiters, "maximum clipping iterations")
    set_card(header, "CLIPCEN", params.cenfunc, "clipping centre function")
    set_card(header, "CLIPDEV", params.stdfunc, "clipping dispersion function")
    set_card(header, "REJFRAC", round(built.rejected, 8), "fraction of input samples rejected")
    set_card(header, "NSATUR", built.saturated, "saturated input samples left out of the combine")
    for name, value in built.stats.items():
        keyword = {"median": "STATMED", "mean": "STATMEAN", "std": "STATSTD"}[name]
        set_card(header, keyword, float(value) if np.isfinite(value) else "NaN", f"{name} of the master")


def _history(plan: GroupPlan, built: BuiltMaster, params: ClipParams) -> list[str]:
    inputs = counted(len(plan.frames), "frame")
    lines = [f"ccdcal: {plan.kind} master of {inputs}, group {describe_keys(plan.keys)}"]
    if len(plan.frames) > MAX_IMCMB:
        lines.append(f"IMCMBnnn name the first {MAX_IMCMB} inputs; all are in the catalog's master_inputs")
    if plan.bias is not None:
        lines.append(f"bias subtracted: {card_name(Path(plan.bias.path).name)} sha256 {plan.bias.sha256}")
    if plan.dark is not None:
        scales = ", ".join(f"{s:.6g}" for s in sorted(set(plan.dark_scales)))
        lines.append(f"dark subtracted: {card_name(Path(plan.dark.path).name)} sha256 {plan.dark.sha256}")
        lines.append(f"dark scaled by t_flat / t_dark = {scales}")
    if plan.kind == "dark" and plan.includes_bias:
        lines.append("no bias subtracted: this dark contains the bias; use it at its own exposure only")
    described = Counter(found.describe() for found in plan.saturation)  # in the inputs' order
    levels = "; ".join(f"{text} x{count}" for text, count in described.items())
    lines.append(f"saturated input samples left out of the combine: {built.saturated} (levels: {levels})")
    if plan.kind == "flat":
        lines.append(
            "each flat divided by its median (saturated pixels left out), then combined; the result "
            "divided by its median"
        )
    lines.append(
        f"sigma-clipped median: {params.sigma_lower:g}/{params.sigma_upper:g} sigma, "
        f"{params.maxiters} iterations, centre {params.cenfunc}, dispersion {params.stdfunc}"
    )
    if built.uncertainty is not None:
        lines.append(
            "UNCERT: combine uncertainty as ccdproc Combiner.median_combine: 1.4826 x MAD of the "
            "samples kept by the clipping / sqrt(their number)"
        )
    lines.extend(f"frame QA: {a.line}" for a in plan.set_aside)
    lines.extend(f"QA warning: {w}" for w in built.warnings)
    return lines


def master_hdul(plan: GroupPlan, built: BuiltMaster, params: ClipParams) -> fits.HDUList:
    """The master's file as written: its float32 image with the header, then its ``UNCERT``."""
    # Imported here for start-up time (see _header).
    from astropy.io import fits

    hdul = fits.HDUList([fits.PrimaryHDU(built.image.astype(np.float32), _header(plan, built, params))])
    if built.uncertainty is not None:
        hdul.append(uncertainty_hdu(built.uncertainty))
    return hdul


def register_master(
    catalog: Catalog, plan: GroupPlan, built: BuiltMaster, folder: Path, options: MasterOptions, run_id: int
) -> Master:
    """Write the master's file and, in the same transaction, its rows; supersede the group's current one.

    The file is written under the group's name (:func:`free_master_path`; an existing file is never
    replaced); if the transaction fails the new file is removed. Its publication is journaled
    (:mod:`ccdcal.files.journal`) until the rows are committed, so that a run killed in between leaves the
    proof of what it published.
    """
    hdul = master_hdul(plan, built, options.params)
    written: Path | None = None
    master_id: int | None = None
    journal = Journal(folder, catalog.catalog_id, run_id)
    try:
        with catalog.session() as session:
            lock_writers(session)  # one registration at a time: a concurrent run may have built it
            existing = existing_master(session, plan, options)
            if existing is not None:
                return existing
            version = next_version(session, plan)
            group = same_group(plan, current_only=False)
            written, digest = write_free(
                lambda: free_master_path(
                    session, folder, plan.kind, plan.keys, plan.includes_bias, version, group
                ),
                hdul,
                journal.record_file,
            )
            master = _master_row(session, plan, version, built, written, digest, options, run_id)
            master_id = master.id
            created(session, master, run_id=run_id)
            for old in session.scalars(same_group(plan).where(Master.id != master.id)):
                _supersede(session, old, plan, run_id, master.created_at)
            session.add_all(
                MasterInput(master_id=master.id, frame_id=f["id"], sha256=f["sha256"]) for f in plan.frames
            )
            session.add_all(_calibrator_rows(plan, master.id))
            session.add_all(
                MasterSetAside(
                    master_id=master.id, frame_id=a.frame_id, sha256=a.sha256, rule=a.rule, reason=a.reason
                )
                for a in plan.set_aside
            )
        journal.discard()
        return master
    except BaseException:
        # A Ctrl-C during the commit is raised after it: a committed row keeps its file.
        if written is not None and not catalog.committed(Master, master_id):
            written.unlink(missing_ok=True)
        journal.discard()  # reached once the file is removed: else the journal proves it for recovery
        raise


def _supersede(session: Session, old: Master, plan: GroupPlan, run_id: int, at: dt.datetime) -> None:
    """Mark a group's previous master ``superseded`` (recorded at ``at``, when the new one became current),
    with why the plan replaces it."""
    reason = (
        "no UNCERT extension: built again with one (--uncertainty)"
        if old.identity in plan.identities  # the same pixels, built by an earlier ccdcal
        else plan_reason(session, old, plan)
    )
    change(session, old, run_id=run_id, at=at, status="superseded", superseded_reason=reason)


def plan_reason(session: Session, old: Master, plan: GroupPlan) -> str:
    """How the master of ``plan`` differs from ``old`` of its group
    (:func:`~ccdcal.catalog.lineage.rebuild_reason`)."""
    inputs = {f["id"]: f["sha256"] for f in plan.frames}
    return rebuild_reason(session, old, inputs, {"bias": plan.bias, "dark": plan.dark})


def free_master_path(
    session: Session,
    folder: Path,
    kind: str,
    keys: Mapping[str, Any],
    includes_bias: bool,
    version: int,
    group: Select[Any],
    known: Mapping[int, str] | None = None,
) -> Path:
    """Where version ``version`` of a master group is written in ``folder`` (docs/design.md, Files).

    ``group`` selects the group's masters (any status); ``known`` (else read here) is
    :func:`folder_masters`. The group keeps the name it has there; a new group takes the plain name
    unless another group of the catalog or a file holds it, then its instrument's token, then a hash of
    its keys (:func:`ccdcal.files.naming.free_master_name`).
    """
    known = folder_masters(session, folder, kind) if known is None else known
    ours_ids = set(session.scalars(group.with_only_columns(Master.id)))
    ours = {name for master_id, name in known.items() if master_id in ours_ids}
    others = {name for master_id, name in known.items() if master_id not in ours_ids}
    stems = master_stems(kind, keys, includes_bias=includes_bias)
    return folder / free_master_name(stems, ours, others, version, lambda name: (folder / name).exists())


def folder_masters(session: Session, folder: Path, kind: str) -> dict[int, str]:
    """id → file name of the catalog's masters of ``kind`` in ``folder`` (every version)."""
    prefix = str(folder / f"master_{kind}_")
    rows = session.execute(
        select(Master.id, Master.path).where(Master.path.startswith(prefix, autoescape=True))
    )
    return {master_id: Path(path).name for master_id, path in rows if Path(path).parent == folder}


def _master_row(
    session: Session,
    plan: GroupPlan,
    version: int,
    built: BuiltMaster,
    path: Path,
    digest: str,
    options: MasterOptions,
    run_id: int,
) -> Master:
    return add_master_row(
        session,
        plan,
        version,
        path=str(path),
        sha256=digest,
        parameters=_parameters(plan, built, options),
        stat_median=_finite(built.stats["median"]),
        stat_mean=_finite(built.stats["mean"]),
        stat_std=_finite(built.stats["std"]),
        rejected_fraction=built.rejected,
        run_id=run_id,
    )


def _parameters(plan: GroupPlan, built: BuiltMaster, options: MasterOptions) -> dict[str, Any]:
    """The ``masters.parameters`` JSON (:class:`~ccdcal.masters.groups.MasterParameters`): combine
    parameters, pre-calibration numbers, the master's level and the QA result."""
    parameters: dict[str, Any] = {
        **options.params.as_dict(),
        "mem_limit": options.mem_limit,
        "input_ids": [f["id"] for f in plan.frames],
        "dark_scales": plan.dark_scales,
        "flat_levels": built.flat_levels,
        "min_frames": options.min_frames,
        "temp_tolerance": options.rules.temp_tolerance,
    }
    steps: dict[str, Any] = {"uncertainty": built.uncertainty is not None}  # UNCERT: see carries_uncertainty
    if plan.input_steps is not None:
        steps["overscan"] = plan.input_steps.parameters(plan.frames, built.overscan_levels)
    steps["saturation"] = saturation_record(plan, options.optional.saturation, built.saturated)
    parameters["steps"] = steps
    level = level_record(built.level)
    if level is not None:
        parameters["level"] = level
    qa: dict[str, Any] = {
        "previous_id": built.previous.id if built.previous else None,
        "warnings": built.warnings,
    }
    if built.comparison is not None:
        qa |= {
            "shift": built.comparison.shift,
            "sigma": built.comparison.sigma,
            "outlier_fraction": built.comparison.outlier_fraction,
        }
    parameters["qa"] = qa
    parameters["frame_qa"] = {
        **options.qa.as_dict(),
        "set_aside": [{"frame_id": a.frame_id, "rule": a.rule, "reason": a.reason} for a in plan.set_aside],
    }
    return parameters


def _calibrator_rows(plan: GroupPlan, master_id: int) -> list[MasterCalibrator]:
    rows = []
    if plan.bias is not None:
        rows.append(MasterCalibrator(master_id=master_id, role="bias", calibrator_id=plan.bias.id))
    if plan.dark is not None:
        scale = plan.dark_scales[0] if len(set(plan.dark_scales)) == 1 else None
        rows.append(
            MasterCalibrator(master_id=master_id, role="dark", calibrator_id=plan.dark.id, scale=scale)
        )
    return rows


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None
