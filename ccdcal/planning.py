"""Planning the lights of ``ccdcal process``: for each usable light, its masters and what to do with it.

:func:`plan_lights` gives every usable light one :class:`LightReport`:

- ``cannot``: its raw file is gone or changed since it was catalogued, or a step has no master (the
  reason names the failed key and the nearest candidate);
- ``calibrate``: not calibrated yet, or its latest calibration differs from the plan — the raw file's
  sha256, a master (a new version, one marked bad), a step's status, the dark scale, ``--flat-min``, the
  output folder — or its output file is missing, or ``--redo``; the reason says which;
- ``current``: calibrated with exactly this plan, output present: nothing to do;
- ``failed``: its latest attempt failed and nothing has changed since (``--redo`` tries again).

A light keeps the output path of its previous calibration in the same folder; a new one gets
``{stem}_cal.fits``, or ``_v2``, ``_v3`` ... when another light (a raw file of the same name in another
folder) or a foreign file already has that name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ccdcal.calibrate import FrameTask, MasterUse
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.catalog.queries import usable
from ccdcal.fitsfiles import OUTPUT_FAILED
from ccdcal.impact import unusable_reason
from ccdcal.matching import APPLIED, ROLES, Choices, LightMatch, MatchOptions, match_light
from ccdcal.naming import calibrated_name, versioned
from ccdcal.reduction import StepContext, plan_light_steps, step_changes

#: How a step that is not applied shows in summaries.
STEP_LABELS = {
    "not_available": "n/a",
    "skipped": "skipped",
    "allowed_missing": "missing (allowed)",
    "missing": "missing",
}


@dataclass
class LightReport:
    """One light in a process run: its outcome, why, its masters and (when calibrated) its output.

    ``outcome`` is ``calibrate`` (planned), then ``calibrated`` or ``failed``; or ``current``, ``cannot``,
    ``failed`` (failed before, nothing changed) from the plan.
    """

    frame_id: int
    path: str
    filter: str | None
    exptime: float | None
    outcome: str = "cannot"
    reason: str | None = None
    output: str | None = None
    match: LightMatch | None = None
    task: FrameTask | None = None
    calibration_id: int | None = None
    seconds: float | None = None
    warnings: tuple[str, ...] = ()

    def masters(self) -> dict[str, str]:
        """Per step, the master's file name, or how the step was left out (``n/a``, ``skipped`` ...)."""
        if self.match is None:
            return {}
        return {
            role: step.master.name if step.status == APPLIED and step.master else STEP_LABELS[step.status]
            for role, step in self.match.steps.items()
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "frame_id": self.frame_id,
            "path": self.path,
            "filter": self.filter,
            "exptime": self.exptime,
            "outcome": self.outcome,
            "reason": self.reason,
            "output": self.output,
            "calibration_id": self.calibration_id,
            "warnings": list(self.warnings),
            "steps": {r: s.as_json() for r, s in self.match.steps.items()} if self.match else {},
        }


def plan_lights(session: Session, options: Any, match: MatchOptions) -> list[LightReport]:
    """Match every usable light and decide what to do with it (see the module docstring).

    Parameters
    ----------
    session : Session
        An open catalog session.
    options : ProcessOptions
        Output folder, ``flat_min``, ``redo``.
    match : MatchOptions
        Matching choices with pinned masters resolved.

    Returns
    -------
    list of LightReport
        One per usable light, by path; those to calibrate carry their :class:`FrameTask`.
    """
    output_dir = Path(options.output_dir).expanduser().resolve()
    lights = session.scalars(select(Frame).where(usable("light")).order_by(Frame.path)).all()
    latest = _latest(session)
    query = select(Calibration.path, Calibration.frame_id).where(Calibration.status == "current")
    taken: dict[str | None, int] = dict(session.execute(query).all())
    assigned: set[str] = set()
    available: dict[Any, bool] = {}
    choices = Choices(session, batch=True)  # one select per kind and variant for every light
    context = StepContext.load(session, options)  # overscan, uncertainty, cosmic rays, bpm
    reports = []
    for light in lights:
        report = LightReport(light.id, light.path, light.filter, light.exptime)
        reports.append(report)
        report.reason = _raw_problem(light)
        if report.reason:
            continue
        report.match = match_light(session, light, match, available, choices)
        report.reason = report.match.reason
        if report.reason:
            continue
        steps, report.reason = plan_light_steps(session, context, light, report.match)
        if report.reason:
            continue
        previous, used = latest.get(light.id, (None, {}))
        others = {p for p, frame_id in taken.items() if p and frame_id != light.id} | assigned
        output = _output(light, previous, output_dir, others)
        changes = _changes(session, light, report.match, previous, used, output, options)
        changes += step_changes(previous, used, steps)
        if previous is not None and not changes and not options.redo:
            report.outcome = "current" if previous.status == "current" else "failed"
            report.output = previous.path
            if previous.status != "current":
                report.reason = (
                    f"failed before, and nothing changed since: {previous.error} (--redo tries again)"
                )
            continue
        report.outcome = "calibrate"
        report.reason = "--redo" if options.redo else ("; ".join(changes) or "not calibrated yet")
        report.output = str(output)
        assigned.add(str(output))
        report.task = replace(_task(light, report.match, output, options.flat_min), steps=steps)
    return reports


def _latest(session: Session) -> dict[int, tuple[Calibration, dict[str, int]]]:
    """Each light's latest calibration row (any status) and its masters by role."""
    newest = select(func.max(Calibration.id)).group_by(Calibration.frame_id)
    rows = {c.id: c for c in session.scalars(select(Calibration).where(Calibration.id.in_(newest)))}
    used: dict[int, dict[str, int]] = {i: {} for i in rows}
    if rows:
        query = select(CalibrationMaster).where(CalibrationMaster.calibration_id.in_(newest))
        for link in session.scalars(query):
            used[link.calibration_id][link.role] = link.master_id
    return {c.frame_id: (c, used[i]) for i, c in rows.items()}


def _raw_problem(light: Frame) -> str | None:
    """Why the raw file cannot be used as catalogued (``None``: it can)."""
    try:
        stat = os.stat(light.path)
    except FileNotFoundError:
        return "raw file is missing; run `ccdcal ingest` on its folder to record it"
    except OSError as exc:
        return f"raw file cannot be read: {exc.strerror}"
    if stat.st_size != light.size or stat.st_mtime != light.mtime:
        return "raw file changed since it was catalogued; run `ccdcal ingest` on it again"
    return None


def _output(light: Frame, previous: Calibration | None, folder: Path, taken: set[str]) -> Path:
    """The light's output: its previous path in the same folder, else a free ``{stem}_cal.fits``."""
    if previous is not None and previous.path and Path(previous.path).parent == folder:
        return Path(previous.path)
    return versioned(folder, calibrated_name(light.path), taken)


def _changes(
    session: Session,
    light: Frame,
    match: LightMatch,
    previous: Calibration | None,
    used: dict[str, int],
    output: Path,
    options: Any,
) -> list[str]:
    """What differs between the light's latest calibration and the plan (empty: nothing)."""
    if previous is None:
        return []
    changes = []
    if previous.raw_sha256 != light.sha256:
        changes.append("raw file changed")
    steps = previous.steps or {}
    for role in ROLES:
        step, before = match.steps[role], steps.get(role) or {}
        now = step.master.id if step.status == APPLIED and step.master else None
        if used.get(role) != now:
            changes.append(_master_change(session, role, used.get(role), step.master))
        elif before.get("status") != step.status:
            changes.append(f"{role} step: {before.get('status', 'none')} → {step.status}")
        elif (
            role == "dark"
            and now is not None
            and not math.isclose(before.get("scale") or 1.0, step.scale or 1.0)
        ):
            changes.append("dark scale changed")
    flat_before = steps.get("flat") or {}
    flat_kept = flat_before.get("status") == APPLIED and match.applied("flat") is not None
    if flat_kept and flat_before.get("flat_min") != options.flat_min:
        changes.append("--flat-min changed")
    if previous.path and Path(previous.path).parent != output.parent:
        changes.append("output folder changed")
    elif previous.status == "current" and not (previous.path and Path(previous.path).is_file()):
        changes.append("output file missing")
    elif previous.status == "failed" and (previous.error or "").startswith(OUTPUT_FAILED):
        changes.append("its output could not be written last time")  # a full disk ... tried again
    return changes


def _master_change(session: Session, role: str, before: int | None, now: Any) -> str:
    old = session.get(Master, before) if before is not None else None
    if now is None:
        return f"{role} master no longer applied"
    if old is None:
        return f"{role} master now available: {now.name}"
    name = Path(old.path).name
    if old.status == "superseded":
        return f"new {role} master {now.name} (replaces {name})"
    why = unusable_reason(session, old)
    if why is not None:
        return f"{role} master {why}; now {now.name}"
    return f"{role} master changed: {name} → {now.name}"


def _task(light: Frame, match: LightMatch, output: Path, flat_min: float) -> FrameTask:
    """The worker's task for one light."""

    def use(role: str) -> MasterUse | None:
        master = match.applied(role)
        return MasterUse(role, master.id, master.path, master.sha256) if master else None

    notes = tuple(
        f"{role} not applied ({STEP_LABELS[step.status]}): {step.reason}"
        for role, step in match.steps.items()
        if step.status != APPLIED
    )
    dark = match.steps["dark"]
    return FrameTask(
        frame_id=light.id,
        path=light.path,
        hdu=light.hdu or 0,
        size=light.size,
        mtime=light.mtime,
        sha256=light.sha256,
        output=str(output),
        bias=use("bias"),
        dark=use("dark"),
        dark_scale=dark.scale if dark.status == APPLIED and dark.scale is not None else 1.0,
        flat=use("flat"),
        flat_min=flat_min,
        notes=notes,
    )
