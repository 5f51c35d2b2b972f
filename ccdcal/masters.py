"""``ccdcal masters``: build master bias, dark and flat frames from the catalog, with their provenance.

The order of work in :func:`build_masters`:

1. for each kind in calibration order (bias, then dark, then flat, so the masters a master needs exist
   first), group the usable frames in SQL (:func:`ccdcal.catalog.queries.grouped_frames`);
2. skip groups below ``min_frames``; choose each group's calibrators (bias for darks; bias and dark for
   flats) with :func:`ccdcal.catalog.queries.select_master`;
3. compute the master's identity (its inputs with their hashes, calibrators, parameters); a current
   master with that identity means nothing to do;
4. otherwise combine, write the file atomically, and in one transaction register the master, its inputs
   and calibrators, and supersede the group's previous master.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master, MasterCalibrator, MasterInput
from ccdcal.catalog.queries import GROUP_KEYS, MatchRules, grouped_frames, select_master, usable
from ccdcal.errors import FitsFormatError, UsageError
from ccdcal.fitsfiles import add_history, read_image, remove_stale_temporaries, stamp_version, write_atomic
from ccdcal.naming import master_name, number_text, versioned
from ccdcal.steps.combine import ClipParams, combine_files
from ccdcal.steps.dark import dark_scale
from ccdcal.steps.flat import finite_median, normalise_to_median, precalibration_offset

#: Kinds in the order they must be built: each may need the ones before it.
MASTER_ORDER = ("bias", "dark", "flat")

#: A new master whose level moved by more than this many robust pixel dispersions from the previous
#: version of its group, or which differs from it beyond 5 dispersions on more than this fraction of
#: pixels, is reported (a gate like BANZAI's comparison with the previous master).
QA_SHIFT_SIGMA = 1.0
QA_OUTLIER_FRACTION = 0.01

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


def build_masters(
    catalog: Catalog, options: MasterOptions = MasterOptions(), progress: Progress | None = None
) -> MastersSummary:
    """Build every missing or stale master of the requested kinds.

    Returns
    -------
    MastersSummary
        One report per group: built, already current, or skipped with the reason.
    """
    for kind in options.kinds:
        if kind not in MASTER_ORDER:
            raise UsageError(f"--kind {kind!r}: use one of {', '.join(MASTER_ORDER)}")
    if options.min_frames < 1:
        raise UsageError(f"--min-frames must be at least 1, not {options.min_frames}")
    folder = options.masters_dir.expanduser().resolve()
    summary = MastersSummary()
    arguments = {
        "masters_dir": str(folder),
        "kinds": list(options.kinds),
        "min_frames": options.min_frames,
        "params": options.params.as_dict(),
        "mem_limit": options.mem_limit,
        "no_bias": options.no_bias,
        "temp_tolerance": options.rules.temp_tolerance,
    }
    with catalog.run("masters", arguments) as run:
        summary.run_id = run.id
        remove_stale_temporaries(folder)
        for kind in MASTER_ORDER:
            if kind not in options.kinds:
                continue
            with catalog.session() as session:
                rows = grouped_frames(session, kind)
            groups = [list(g) for _, g in groupby(rows, key=lambda r: r["group_number"])]
            for number, frames in enumerate(groups, 1):
                if progress:
                    progress(f"master {kind}", number - 1, len(groups))
                summary.reports.append(_one_group(catalog, kind, frames, folder, options, run.id))
            if progress and groups:
                progress(f"master {kind}", len(groups), len(groups))
        run.summary = summary.as_dict()
        run.partial = summary.exit_code != 0
    return summary


# -- one group ----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """A group's master as it would be built: calibrators, scales, identity."""

    kind: str
    keys: dict[str, Any]
    frames: list[dict[str, Any]]
    bias: Master | None = None
    dark: Master | None = None
    dark_scales: list[float] = field(default_factory=list)
    includes_bias: bool = False
    identity: str = ""


def _one_group(
    catalog: Catalog,
    kind: str,
    frames: list[dict[str, Any]],
    folder: Path,
    options: MasterOptions,
    run_id: int,
) -> MasterReport:
    keys = {name: frames[0][name] for name in GROUP_KEYS[kind]}
    report = MasterReport(kind, keys, "skipped", len(frames))
    if len(frames) < options.min_frames:
        report.reason = (
            f"{len(frames)} {kind} frame{'s' if len(frames) != 1 else ''} in group {describe_keys(keys)}: "
            f"fewer than --min-frames {options.min_frames}"
        )
        return report
    hdus = {f["hdu"] or 0 for f in frames}
    if len(hdus) > 1:
        report.reason = f"the {kind} frames of group {describe_keys(keys)} keep their image in different HDUs"
        return report
    with catalog.session() as session:
        plan, problem = _plan(session, kind, keys, frames, options)
        if problem:
            report.reason = problem
            return report
        existing = session.scalars(
            select(Master).where(Master.identity == plan.identity, Master.status == "current")
        ).first()
        if existing is not None:
            report.outcome, report.path, report.master_id = "current", existing.path, existing.id
            return report
    try:
        image, result_stats, rejected = _combine(plan, options)
    except (FitsFormatError, ValueError) as exc:
        report.reason = f"cannot build the {kind} master of group {describe_keys(keys)}: {exc}"
        return report
    report.warnings = _quality_gate(catalog, plan, image)
    master_id, path = _register(catalog, plan, image, result_stats, rejected, folder, options, run_id)
    report.outcome, report.path, report.master_id = "built", str(path), master_id
    return report


def describe_keys(keys: dict[str, Any]) -> str:
    """A group's keys for messages: ``b2x2 g120 C-10 300s R``."""
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


def _group_target(keys: dict[str, Any], frames: list[dict[str, Any]]) -> dict[str, Any]:
    temps = [f["ccd_temp"] for f in frames if f["ccd_temp"] is not None]
    dates = [f["date_obs"] for f in frames if f["date_obs"] is not None]
    return {
        **keys,
        "ccd_temp": statistics.fmean(temps) if temps else None,
        "date_obs": _mean_time(dates),
    }


def _mean_time(dates: Sequence[dt.datetime]) -> dt.datetime | None:
    if not dates:
        return None
    origin = min(dates)
    return origin + dt.timedelta(seconds=statistics.fmean((d - origin).total_seconds() for d in dates))


def _setup_has(session: Any, kind: str, keys: dict[str, Any]) -> bool:
    """Whether the catalog holds usable ``kind`` frames for this set-up (instrument, binning, shape)."""
    setup = ("instrument", "xbinning", "ybinning", "naxis1", "naxis2")
    query = select(Frame.id).where(
        usable(kind), *(getattr(Frame, k).is_not_distinct_from(keys.get(k)) for k in setup)
    )
    return session.execute(query.limit(1)).first() is not None


def _plan(
    session: Any, kind: str, keys: dict[str, Any], frames: list[dict[str, Any]], options: MasterOptions
) -> tuple[_Plan, str | None]:
    """Choose calibrators and scales for a group; return the plan, or a reason it cannot be built."""
    plan = _Plan(kind, keys, frames)
    target = _group_target(keys, frames)
    where = describe_keys(keys)
    want_bias = kind in ("dark", "flat") and not options.no_bias and _setup_has(session, "bias", keys)
    if want_bias:
        plan.bias = select_master(session, "bias", target, options.rules)
        if plan.bias is None:
            return (
                plan,
                f"no master bias matches the {kind} group {where}: build the bias first or pass --no-bias",
            )
    if kind == "dark":
        plan.includes_bias = plan.bias is None
    if kind == "flat":
        exposures = {f["exptime"] for f in frames}
        if len(exposures) == 1:  # a dark at the flats' own exposure, possibly still holding the bias
            exact = MatchRules(options.rules.temp_tolerance, options.rules.exptime_tolerance, False)
            plan.dark = select_master(session, "dark", {**target, "exptime": exposures.pop()}, exact)
            if plan.dark is not None and plan.dark.includes_bias:
                plan.bias = None  # that dark subtracts the bias too
        if plan.dark is None and plan.bias is not None:
            scaled = MatchRules(options.rules.temp_tolerance, options.rules.exptime_tolerance, True)
            longest = max((f["exptime"] or 0.0) for f in frames)
            plan.dark = select_master(
                session, "dark", {**target, "exptime": longest}, scaled, exclude_with_bias=True
            )
        if plan.dark is not None:
            if plan.dark.includes_bias:
                plan.dark_scales = [1.0] * len(frames)
            else:
                try:
                    plan.dark_scales = [
                        dark_scale(f["exptime"] or 0.0, plan.dark.exptime or 0.0) for f in frames
                    ]
                except UsageError:
                    plan.dark = None
    plan.identity = _identity(plan, options.params)
    return plan, None


def _identity(plan: _Plan, params: ClipParams) -> str:
    """What makes a master what it is: inputs as used, calibrators, parameters."""
    payload = {
        "kind": plan.kind,
        "inputs": sorted((f["id"], f["sha256"]) for f in plan.frames),
        "bias": plan.bias.sha256 if plan.bias else None,
        "dark": plan.dark.sha256 if plan.dark else None,
        "dark_scales": [round(s, 12) for s in plan.dark_scales],
        "includes_bias": plan.includes_bias,
        "params": params.as_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# -- numbers -------------------------------------------------------------------------------------------


def _combine(plan: _Plan, options: MasterOptions) -> tuple[np.ndarray, dict[str, float], float]:
    """Pre-calibrate (as offsets and scales of the combine) and combine a group's frames."""
    paths = [Path(f["path"]) for f in plan.frames]
    hdu = plan.frames[0]["hdu"] or 0
    bias = read_image(plan.bias.path, 0, np.float64) if plan.bias else None
    dark = read_image(plan.dark.path, 0, np.float64) if plan.dark else None
    offsets: list[np.ndarray | float] | None = None
    scales: list[float] | None = None
    if plan.kind == "dark" and bias is not None:
        offsets = [bias] * len(paths)
    elif plan.kind == "flat":
        per_frame = plan.dark_scales or [0.0] * len(paths)
        offsets = [precalibration_offset(bias, dark, s) for s in per_frame]
        # Each flat is divided by its own median after pre-calibration (a first pass over the files).
        scales = []
        for path, offset in zip(paths, offsets, strict=True):
            level = finite_median(read_image(path, hdu, np.float64) - offset)
            if not (np.isfinite(level) and level > 0):
                raise ValueError(f"{path.name}: its level after bias/dark subtraction is {level}, not a flat")
            scales.append(1.0 / level)
    result = combine_files(
        paths, hdu=hdu, params=options.params, mem_limit=options.mem_limit, scale=scales, offset=offsets
    )
    image = result.image
    if plan.kind == "flat":
        image, _ = normalise_to_median(image)
    finite = image[np.isfinite(image)]
    stats = {
        "median": float(np.median(finite)) if finite.size else float("nan"),
        "mean": float(np.mean(finite)) if finite.size else float("nan"),
        "std": float(np.std(finite)) if finite.size else float("nan"),
    }
    return image, stats, float(result.rejected_fraction)


def _quality_gate(catalog: Catalog, plan: _Plan, image: np.ndarray) -> list[str]:
    """Compare a new master with the current one of its group; say so when it moved a lot."""
    with catalog.session() as session:
        previous = session.scalars(_same_group(plan).order_by(Master.id.desc()).limit(1)).first()
    if previous is None:
        return []
    try:
        old = read_image(previous.path, 0, np.float64)
    except FitsFormatError:
        return [f"the previous {plan.kind} master {previous.path} cannot be read for comparison"]
    if old.shape != image.shape:
        return []
    difference = image.astype(np.float64) - old
    finite = difference[np.isfinite(difference)]
    if not finite.size:
        return []
    sigma = float(mad_std(finite))
    shift = float(np.median(finite))
    scale = sigma if sigma > 0 else float(mad_std(image[np.isfinite(image)])) or 1.0
    outliers = float(np.mean(np.abs(finite - shift) > 5 * scale))
    warnings = []
    if abs(shift) > QA_SHIFT_SIGMA * scale:
        warnings.append(
            f"new {plan.kind} master differs from the previous one ({Path(previous.path).name}) by "
            f"{shift:+.4g} in median, {abs(shift) / scale:.1f} times the pixel scatter of their difference"
        )
    if outliers > QA_OUTLIER_FRACTION:
        warnings.append(
            f"new {plan.kind} master differs from the previous one ({Path(previous.path).name}) beyond "
            f"5 sigma on {outliers:.1%} of pixels"
        )
    return warnings


def _same_group(plan: _Plan, *, current_only: bool = True) -> Any:
    """Masters of the plan's kind with exactly its group keys (NULL matching NULL); by default current."""
    query = select(Master).where(
        Master.kind == plan.kind,
        *(getattr(Master, k).is_not_distinct_from(v) for k, v in plan.keys.items()),
        Master.includes_bias.is_(plan.includes_bias),
    )
    return query.where(Master.status == "current") if current_only else query


# -- files and rows ------------------------------------------------------------------------------------


def _header(plan: _Plan, stats: dict[str, float], rejected: float, params: ClipParams) -> fits.Header:
    header = fits.Header()
    header["IMAGETYP"] = (f"MASTER {plan.kind.upper()}", "ccdcal master calibration frame")
    header["BUNIT"] = ("adu" if plan.kind != "flat" else "", "flat: normalised to median 1")
    for key, card in (
        ("instrument", "INSTRUME"),
        ("xbinning", "XBINNING"),
        ("ybinning", "YBINNING"),
        ("gain", "GAIN"),
        ("offset", "OFFSET"),
        ("readout_mode", "READOUTM"),
        ("exptime", "EXPTIME"),
        ("filter", "FILTER"),
    ):
        if plan.keys.get(key) is not None:
            header[card] = plan.keys[key]
    temps = [f["ccd_temp"] for f in plan.frames if f["ccd_temp"] is not None]
    if temps:
        header["CCD-TEMP"] = (round(statistics.fmean(temps), 4), "[C] mean of the inputs")
    if plan.keys.get("temp_key") is not None:
        header["TEMPKEY"] = (plan.keys["temp_key"], "[C] group temperature (SET-TEMP or rounded)")
    mean_date = _mean_time([f["date_obs"] for f in plan.frames if f["date_obs"] is not None])
    if mean_date is not None:
        header["DATE-OBS"] = (mean_date.isoformat(timespec="milliseconds"), "mean DATE-OBS of the inputs")
    header["NCOMBINE"] = (len(plan.frames), "number of frames combined")
    for index, frame in enumerate(plan.frames, 1):
        header[f"IMCMB{index:03d}" if index < 1000 else f"IMCMB{index}"] = Path(frame["path"]).name[:68]
    header["COMBMETH"] = ("sigma_clipped_median", "combine method")
    header["CLIPLOW"] = (params.sigma_lower, "sigma clip lower bound")
    header["CLIPHIGH"] = (params.sigma_upper, "sigma clip upper bound")
    header["CLIPITER"] = (params.maxiters, "sigma clip iterations")
    header["CLIPCEN"] = (params.cenfunc, "sigma clip centre")
    header["CLIPDEV"] = (params.stdfunc, "sigma clip dispersion")
    header["REJFRAC"] = (round(rejected, 8), "fraction of samples rejected")
    header["WITHBIAS"] = (plan.includes_bias, "the master still contains the bias")
    if plan.bias is not None:
        header["BIASCOR"] = (Path(plan.bias.path).name[:68], "master bias subtracted from inputs")
    if plan.dark is not None:
        header["DARKCOR"] = (Path(plan.dark.path).name[:68], "master dark subtracted from inputs")
    lines = [f"ccdcal: {plan.kind} master of {len(plan.frames)} frames, group {describe_keys(plan.keys)}"]
    if plan.bias is not None:
        lines.append(f"bias subtracted: {Path(plan.bias.path).name} sha256 {plan.bias.sha256}")
    if plan.dark is not None:
        scales = sorted(set(plan.dark_scales))
        lines.append(f"dark subtracted: {Path(plan.dark.path).name} sha256 {plan.dark.sha256} scale {scales}")
    if plan.kind == "flat":
        lines.append("each flat divided by its median, combined, divided by the median (median 1)")
    lines.append(
        f"sigma-clipped median: {params.sigma_lower}/{params.sigma_upper} sigma, "
        f"{params.maxiters} iterations, {params.cenfunc}, {params.stdfunc}"
    )
    for name, value in stats.items():
        header[f"STAT{name[:4].upper()}"] = (value if np.isfinite(value) else "NaN", f"{name} of the master")
    add_history(header, lines)
    stamp_version(header)
    return header


def _register(
    catalog: Catalog,
    plan: _Plan,
    image: np.ndarray,
    stats: dict[str, float],
    rejected: float,
    folder: Path,
    options: MasterOptions,
    run_id: int,
) -> tuple[int, Path]:
    """Write the master file and, in one transaction, its rows; supersede the group's previous master."""
    name = master_name(
        plan.kind,
        xbinning=plan.keys.get("xbinning"),
        ybinning=plan.keys.get("ybinning"),
        gain=plan.keys.get("gain"),
        exptime=plan.keys.get("exptime"),
        temp_key=plan.keys.get("temp_key"),
        filter=plan.keys.get("filter"),
        includes_bias=plan.includes_bias,
    )
    header = _header(plan, stats, rejected, options.params)
    hdul = fits.HDUList([fits.PrimaryHDU(image.astype(np.float32), header)])
    with catalog.session() as session:
        taken = set(session.scalars(select(Master.path).where(Master.path.like(f"%{name[:-5]}%"))))
        path = versioned(folder, name, taken)
        earlier = _same_group(plan, current_only=False).with_only_columns(func.count())
        version = 1 + (session.scalar(earlier) or 0)
        previous = list(session.scalars(_same_group(plan)))
        digest = write_atomic(path, hdul)
        temps = [f["ccd_temp"] for f in plan.frames if f["ccd_temp"] is not None]
        master = Master(
            kind=plan.kind,
            path=str(path),
            sha256=digest,
            identity=plan.identity,
            version=version,
            **plan.keys,
            includes_bias=plan.includes_bias,
            ccd_temp_mean=statistics.fmean(temps) if temps else None,
            date_obs_mean=_mean_time([f["date_obs"] for f in plan.frames if f["date_obs"] is not None]),
            n_inputs=len(plan.frames),
            method="sigma_clipped_median",
            parameters={
                **options.params.as_dict(),
                "dark_scales": plan.dark_scales,
                "mem_limit": options.mem_limit,
            },
            stat_median=_finite(stats["median"]),
            stat_mean=_finite(stats["mean"]),
            stat_std=_finite(stats["std"]),
            rejected_fraction=rejected,
            status="current",
            run_id=run_id,
        )
        for old in previous:
            old.status = "superseded"
        session.add(master)
        session.flush()
        session.add_all(
            MasterInput(master_id=master.id, frame_id=f["id"], sha256=f["sha256"]) for f in plan.frames
        )
        if plan.bias is not None:
            session.add(MasterCalibrator(master_id=master.id, role="bias", calibrator_id=plan.bias.id))
        if plan.dark is not None:
            scale = plan.dark_scales[0] if len(set(plan.dark_scales)) == 1 else None
            session.add(
                MasterCalibrator(master_id=master.id, role="dark", calibrator_id=plan.dark.id, scale=scale)
            )
        return master.id, path


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def list_masters(catalog: Catalog, *, include_superseded: bool = False) -> list[dict[str, Any]]:
    """The catalog's masters with their QA numbers, newest first."""
    with catalog.session() as session:
        query = select(Master).order_by(Master.kind, Master.id.desc())
        if not include_superseded:
            query = query.where(Master.status == "current")
        return [
            {
                "id": m.id,
                "kind": m.kind,
                "path": m.path,
                "status": m.status,
                "is_bad": m.is_bad,
                "n_inputs": m.n_inputs,
                "exptime": m.exptime,
                "filter": m.filter,
                "temp_key": m.temp_key,
                "ccd_temp_mean": m.ccd_temp_mean,
                "median": m.stat_median,
                "mean": m.stat_mean,
                "std": m.stat_std,
                "rejected_fraction": m.rejected_fraction,
                "created_at": m.created_at,
            }
            for m in session.scalars(query)
        ]
