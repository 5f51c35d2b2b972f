"""What ``ccdcal process`` did, or in a dry run would do: :class:`ProcessSummary`, its lines, tables and
JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from ccdcal.files.naming import number_text
from ccdcal.lights.plan import LightReport
from ccdcal.lights.steps import APPLIED, ROLES, STEP_LABELS
from ccdcal.masters.groups import MasterReport
from ccdcal.runtime.words import counted


class LightProblem(TypedDict):
    """A light left undone, with why."""

    path: str
    outcome: str
    reason: str | None


class ProcessRecord(TypedDict):
    """``runs.summary`` of a process (or ``run``) run (:meth:`ProcessSummary.run_summary`), read back by
    the report (:func:`ccdcal.report.problems.from_runs`)."""

    masters: dict[str, int]
    lights: dict[str, int]
    problems: list[LightProblem]


@dataclass
class ProcessSummary:
    """What :func:`process` did (or, in a dry run, would do): masters group by group, lights one by one."""

    run_id: int | None = None
    dry_run: bool = False
    masters: list[MasterReport] = field(default_factory=list)
    lights: list[LightReport] = field(default_factory=list)

    def of(self, outcome: str) -> list[LightReport]:
        """The lights with one outcome: ``calibrated`` (``calibrate`` in a dry run), ``current``,
        ``cannot`` (no master for a step), ``failed``, ``busy`` (being calibrated by another run)."""
        return [light for light in self.lights if light.outcome == outcome]

    def masters_of(self, outcome: str) -> list[MasterReport]:
        """Master groups with one outcome: ``built`` (``build`` in a dry run), ``restored`` (a superseded
        master made current again; ``restore`` in a dry run), ``current``, ``skipped``."""
        return [m for m in self.masters if m.outcome == outcome]

    @property
    def exit_code(self) -> int:
        """1 when a light could not be calibrated (no matching master) or failed; else 0."""
        return 1 if self.of("cannot") or self.of("failed") else 0

    @property
    def nothing_done(self) -> bool:
        """Nothing built, nothing calibrated, nothing wrong."""
        busy = ("built", "build", "restored", "restore", "skipped")
        return not any(m.outcome in busy for m in self.masters) and all(
            light.outcome == "current" for light in self.lights
        )

    def headline(self) -> str:
        """One line: what was built and calibrated, or that there was nothing to do."""
        if self.nothing_done:
            return (
                f"Process (run {self.run_id}): nothing to do: {counted(len(self.of('current')), 'light')} "
                f"already calibrated, {counted(len(self.masters_of('current')), 'master')} current"
            )
        return (
            f"Process (run {self.run_id}): masters {len(self.masters_of('built'))} built, "
            + (
                f"{len(self.masters_of('restored'))} made current again, "
                if self.masters_of("restored")
                else ""
            )
            + f"{len(self.masters_of('current'))} current, {len(self.masters_of('skipped'))} skipped; "
            f"lights {len(self.of('calibrated'))} calibrated, {len(self.of('current'))} already calibrated, "
            f"{len(self.of('cannot'))} not calibrated, {len(self.of('failed'))} failed"
            + (f", {len(self.of('busy'))} being calibrated by another run" if self.of("busy") else "")
        )

    def steps_line(self) -> str | None:
        """The lights calibrated by this run counted by the steps applied to them: ``Calibrated: 12 with
        bias, dark, flat; 3 with bias, dark, without flat (missing, allowed); 2 without any calibration
        (--write-uncalibrated)`` (``None`` when none was calibrated)."""
        counted_by: dict[str, int] = {}
        for light in self.of("calibrated"):
            key = _steps_text(light)
            counted_by[key] = counted_by.get(key, 0) + 1
        if not counted_by:
            return None
        return "Calibrated: " + "; ".join(f"{n} {key}" for key, n in counted_by.items())

    def table_rows(self) -> list[tuple[str, ...]]:
        """The summary table (header first): calibrated and current lights counted per masters used."""
        counted: dict[tuple[str, ...], int] = {}
        for light in self.lights:
            if light.outcome in ("calibrated", "current"):
                masters = light.masters()
                key = (
                    light.outcome,
                    _shown(light.filter),
                    _shown(light.exptime),
                    *(masters.get(role, "") for role in ROLES),
                )
                counted[key] = counted.get(key, 0) + 1
        rows = [(key[0], str(n), *key[1:]) for key, n in counted.items()]
        return [("outcome", "lights", "filter", "exptime", *ROLES), *rows] if rows else []

    def plan_lines(self) -> list[str]:
        """A dry run's plan: masters to build, lights to calibrate with their masters and why."""
        lines = ["Dry run: nothing written."]
        build = self.masters_of("build")
        if build:
            lines.append(f"Masters to build ({len(build)}):")
            lines += [f"  {Path(m.path or '').name} ({counted(m.n_inputs, 'frame')})" for m in build]
        restore = self.masters_of("restore")
        if restore:
            lines.append(f"Masters to make current again, their files intact ({len(restore)}):")
            lines += [f"  {Path(m.path or '').name} ({counted(m.n_inputs, 'frame')})" for m in restore]
        planned = self.of("calibrate")
        if planned:
            lines.append(f"Lights to calibrate ({len(planned)}):")
            for light in planned:
                lines.append(f"  {light.path} -> {light.output} ({light.reason})")
                lines.append("    " + ", ".join(f"{role} {name}" for role, name in light.masters().items()))
        lines.append(f"Already calibrated: {counted(len(self.of('current')), 'light')}")
        if self.of("busy"):
            lines.append(f"Being calibrated by another run: {counted(len(self.of('busy')), 'light')}")
        return lines

    def problem_lines(self) -> list[str]:
        """For stderr: master warnings, skipped master groups, lights not calibrated or failed (reasons)."""
        lines = [f"Warning: {warning}" for report in self.masters for warning in report.warnings]
        skipped = self.masters_of("skipped")
        if skipped:
            lines += [f"Master groups skipped ({len(skipped)}):", *(f"  {m.reason}" for m in skipped)]
        cannot = "Cannot be calibrated" if self.dry_run else "Not calibrated"
        for title, outcome in ((cannot, "cannot"), ("Failed", "failed")):
            lights = self.of(outcome)
            if lights:
                lines += [f"{title} ({len(lights)}):", *(f"  {x.path}: {x.reason}" for x in lights)]
        lines += [f"Warning: {light.path}: {warning}" for light in self.lights for warning in light.warnings]
        return lines

    def counts(self) -> dict[str, int]:
        """Lights per outcome."""
        outcomes = ("calibrated", "calibrate", "current", "cannot", "failed", "busy")
        return {o: len(self.of(o)) for o in outcomes}

    def run_summary(self) -> ProcessRecord:
        """The compact record kept in ``runs.summary``: counts, and the lights left undone with the reasons
        (each calibration's details are in its rows)."""
        return {
            "masters": {o: len(self.masters_of(o)) for o in ("built", "restored", "current", "skipped")},
            "lights": self.counts(),
            "problems": [
                {"path": light.path, "outcome": light.outcome, "reason": light.reason}
                for light in self.lights
                if light.outcome in ("cannot", "failed")
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: every master group and every light with its steps (``--json``)."""
        counts = self.counts()
        return {
            "run": self.run_id,
            "dry_run": self.dry_run,
            "masters": [m.as_dict() for m in self.masters],
            "lights": [light.as_dict() for light in self.lights],
            "counts": counts,
        }


def _steps_text(light: LightReport) -> str:
    """The steps a calibrated light went through, for :meth:`ProcessSummary.steps_line`."""
    task = light.task
    applied = ["overscan"] if task is not None and task.optional and task.optional.overscan else []
    left: list[str] = []
    for decision in light.match.decisions if light.match is not None else ():
        if decision.status == APPLIED:
            applied.append(decision.role)
        else:
            left.append(f"without {decision.role} ({STEP_LABELS[decision.status]})")
    if not applied:
        return "without any calibration (--write-uncalibrated)"
    return ", ".join([f"with {', '.join(applied)}", *left])


def _shown(value: Any) -> str:
    """A key for display: ``NA`` when absent, numbers as in file names (``60``, ``2.5``)."""
    if value is None:
        return "NA"
    return number_text(value) if isinstance(value, float) else str(value)
