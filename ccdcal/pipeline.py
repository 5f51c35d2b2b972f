"""``ccdcal process``: build the masters as needed, then calibrate every light, with provenance.

The order of work, top to bottom in :func:`process`:

1. check the options and resolve pinned masters (usage errors before anything is written);
2. recover after runs that died (:func:`ccdcal.claims.recover`): take over their claims, remove the
   outputs and masters they published but never registered;
3. build missing or stale masters (:func:`ccdcal.masters.build_masters`, in this run);
4. plan every usable light (:func:`plan_lights`): match its masters in SQL
   (:func:`ccdcal.matching.match_light`), then compare with its latest calibration — nothing to do
   when the raw file, the masters, the steps and the options are the same and the output is there —
   and, in the same transaction, claim the lights to calibrate (:func:`calibrate_planned`): a light
   another live run has claimed is ``busy``, its work, so that concurrent runs calibrate each light once;
5. calibrate the claimed lights, ``--jobs`` processes doing the per-frame work
   (:func:`ccdcal.calibrate.calibrate_frame`) while this process alone writes the catalog: each
   result's rows (``calibrations``, ``calibration_masters``, the previous calibration superseded) are
   written in the transaction that renames its file to the final name (:mod:`ccdcal.register`).

``--dry-run`` (:func:`dry_run`) runs steps 3 and 4 as a plan inside a transaction that is rolled back:
masters that would be built appear as provisional rows, so the lights are matched as they would be, and
nothing is written — no file, no row, not even a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ccdcal import claims
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Master
from ccdcal.catalog.queries import MatchRules
from ccdcal.distributed import ClusterOnDemand, check_address
from ccdcal.errors import UsageError
from ccdcal.fitsfiles import check_writable, remove_own_temporaries
from ccdcal.masters import MasterOptions, MasterReport, build_masters, plan_masters
from ccdcal.matching import ROLES, MasterInfo, MatchOptions
from ccdcal.naming import number_text
from ccdcal.pending import last_process_run
from ccdcal.planning import LightReport, paused_gc, plan_lights
from ccdcal.reduction import check_step_options
from ccdcal.register import calibrate_lights
from ccdcal.steps.light import FLAT_MIN

Progress = Callable[[str, int, int], None]


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
    no_dark, no_flat : bool
        Skip the step on purpose.
    allow_missing : tuple of str
        Steps whose missing master does not stop a light's calibration.
    bias, dark, flat : Path or None
        Pinned master files (``--bias/--dark/--flat FILE``).
    flat_min : float
        Flat pixels below it are clamped and flagged in the output's MASK extension.
    jobs : int or None
        Processes calibrating frames (default: all cores).
    scheduler : str or None
        A Dask scheduler address (``tcp://HOST:8786``) or ``local:N``: frames are calibrated, and masters
        combined by bands of rows, by its workers instead (:mod:`ccdcal.distributed`).
    redo : bool
        Calibrate every light again, even those already calibrated with the same masters.
    min_frames, mem_limit
        Passed to the master build.
    overscan, uncertainty, gain, readnoise, cosmic_rays, cr_sigclip, cr_objlim, no_bpm
        The optional steps (:mod:`ccdcal.reduction`): ``--overscan auto|off|median|poly:N`` on every
        frame, ``--uncertainty`` (UNCERT extensions; ``--gain`` e-/ADU and ``--readnoise`` e- override
        the headers), ``--cosmic-rays`` (L.A.Cosmic), and ``--no-bpm`` (do not apply the bad-pixel mask
        built by ``ccdcal masters --bpm``).
    """

    masters_dir: Path = Path("masters")
    output_dir: Path = Path("calibrated")
    rules: MatchRules = field(default_factory=MatchRules)
    no_bias: bool = False
    no_dark: bool = False
    no_flat: bool = False
    allow_missing: tuple[str, ...] = ()
    bias: Path | None = None
    dark: Path | None = None
    flat: Path | None = None
    flat_min: float = FLAT_MIN
    jobs: int | None = None
    scheduler: str | None = None
    redo: bool = False
    min_frames: int = 3
    mem_limit: int = 2 << 30
    overscan: str = "auto"
    uncertainty: bool = False
    gain: float | None = None
    readnoise: float | None = None
    cosmic_rays: bool = False
    cr_sigclip: float = 4.5
    cr_objlim: float = 5.0
    no_bpm: bool = False

    def master_options(self) -> MasterOptions:
        """The options of the master build."""
        return MasterOptions(
            masters_dir=self.masters_dir,
            min_frames=self.min_frames,
            mem_limit=self.mem_limit,
            no_bias=self.no_bias,
            rules=self.rules,
            overscan=self.overscan,
            uncertainty=self.uncertainty,
            scheduler=self.scheduler,
        )

    def arguments(self) -> dict[str, Any]:
        """JSON-ready form (the ``runs.arguments`` of a process run)."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "rules":
                data |= {
                    "temp_tolerance": value.temp_tolerance,
                    "exptime_tolerance": value.exptime_tolerance,
                    "dark_scale": value.dark_scale,
                }
            elif isinstance(value, Path):
                data[item.name] = str(value.expanduser().resolve())
            else:
                data[item.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> ProcessOptions:
        """The options a process run was given (unknown keys ignored)."""
        rules = MatchRules(
            **{
                k: arguments[k]
                for k in ("temp_tolerance", "exptime_tolerance", "dark_scale")
                if k in arguments
            }
        )
        values: dict[str, Any] = {"rules": rules}
        for item in fields(cls):
            if item.name in arguments and item.name != "rules":
                value = arguments[item.name]
                if item.name in ("masters_dir", "output_dir", "bias", "dark", "flat") and value is not None:
                    value = Path(value)
                values[item.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


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
        """Master groups with one outcome: ``built`` (``build`` in a dry run), ``current``, ``skipped``."""
        return [m for m in self.masters if m.outcome == outcome]

    @property
    def exit_code(self) -> int:
        """1 when a light could not be calibrated (no matching master) or failed; else 0."""
        return 1 if self.of("cannot") or self.of("failed") else 0

    @property
    def nothing_done(self) -> bool:
        """Nothing built, nothing calibrated, nothing wrong."""
        busy = ("built", "build", "skipped")
        return not any(m.outcome in busy for m in self.masters) and all(
            light.outcome == "current" for light in self.lights
        )

    def headline(self) -> str:
        """One line: what was built and calibrated, or that there was nothing to do."""
        if self.nothing_done:
            return (
                f"Process (run {self.run_id}): nothing to do: {len(self.of('current'))} lights already "
                f"calibrated, {len(self.masters_of('current'))} masters current"
            )
        return (
            f"Process (run {self.run_id}): masters {len(self.masters_of('built'))} built, "
            f"{len(self.masters_of('current'))} current, {len(self.masters_of('skipped'))} skipped; "
            f"lights {len(self.of('calibrated'))} calibrated, {len(self.of('current'))} already calibrated, "
            f"{len(self.of('cannot'))} not calibrated, {len(self.of('failed'))} failed"
            + (f", {len(self.of('busy'))} being calibrated by another run" if self.of("busy") else "")
        )

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
            lines += [f"  {Path(m.path or '').name} ({m.n_inputs} frames)" for m in build]
        planned = self.of("calibrate")
        if planned:
            lines.append(f"Lights to calibrate ({len(planned)}):")
            for light in planned:
                lines.append(f"  {light.path} -> {light.output} ({light.reason})")
                lines.append("    " + ", ".join(f"{role} {name}" for role, name in light.masters().items()))
        lines.append(f"Already calibrated: {len(self.of('current'))} lights")
        if self.of("busy"):
            lines.append(f"Being calibrated by another run: {len(self.of('busy'))} lights")
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

    def run_summary(self) -> dict[str, Any]:
        """The compact record kept in ``runs.summary``: counts, and the lights left undone with the reasons
        (each calibration's details are in its rows)."""
        return {
            "masters": {o: len(self.masters_of(o)) for o in ("built", "current", "skipped")},
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


def process(
    catalog: Catalog, options: ProcessOptions = ProcessOptions(), progress: Progress | None = None
) -> ProcessSummary:
    """Build the masters as needed, then calibrate every light that needs it (see the module docstring).

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    options : ProcessOptions
        Folders, matching rules, steps, pins, jobs.
    progress : callable, optional
        Called as ``progress(label, done, total)``.

    Returns
    -------
    ProcessSummary
        Master reports and one report per usable light.

    Raises
    ------
    UsageError
        When options contradict each other or a pinned file is not a master of the catalog.
    OutputError
        When the masters or output folder cannot be written (checked first), or an output cannot be
        written (a full disk) while masters are built.
    """
    check_options(options)
    for folder in (options.masters_dir, options.output_dir):
        check_writable(folder.expanduser().resolve())
    with catalog.session() as session:
        match = match_options(session, options)  # pinned masters resolved before anything is written
    # One Dask cluster (--scheduler), started when first needed, for the masters and the lights.
    with catalog.run("process", options.arguments()) as run, ClusterOnDemand(options.scheduler):
        summary = ProcessSummary(run_id=run.id)
        try:
            claims.recover(catalog, run.id, options.masters_dir, options.output_dir)
            built = build_masters(catalog, options.master_options(), progress, run_id=run.id)
            summary.masters = built.reports
            summary.lights = calibrate_planned(catalog, options, run.id, progress, match)
        except BaseException:  # Ctrl-C, a full disk: nothing of this run is left half written
            for folder in (options.masters_dir, options.output_dir):
                remove_own_temporaries(folder.expanduser().resolve())
            raise
        run.summary = summary.run_summary()
        run.partial = summary.exit_code != 0
    return summary


def dry_run(catalog: Catalog, options: ProcessOptions = ProcessOptions()) -> ProcessSummary:
    """What :func:`process` would do now, computed in a transaction that is rolled back.

    Returns
    -------
    ProcessSummary
        Masters with outcome ``build``/``current``/``skipped`` and lights with outcome ``calibrate``
        (with the masters they would get), ``current``, ``cannot`` or ``failed`` (failed before, and
        nothing changed since).
    """
    check_options(options)
    summary = ProcessSummary(dry_run=True)
    with _rolled_back(catalog) as session, paused_gc():
        match = match_options(session, options)
        taken = claims.busy(session, None)
        summary.masters = plan_masters(session, options.master_options())
        summary.lights = plan_lights(session, options, match_options(session, options, match))
        claims.mark_busy(summary.lights, taken)
    return summary


def calibrate_planned(
    catalog: Catalog,
    options: ProcessOptions,
    run_id: int,
    progress: Progress | None = None,
    match: MatchOptions | None = None,
) -> list[LightReport]:
    """Plan every light, claim those to calibrate, and calibrate them (steps 4 and 5 of the module docstring).

    The plan and the claims are one transaction, serialised with the other runs' (:mod:`ccdcal.claims`);
    the lights another live run has claimed come back ``busy``. The claims are renewed while the lights
    are calibrated and released when this ends, however it ends.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    options : ProcessOptions
        Folders, steps, jobs.
    run_id : int
        The run the calibrations are recorded under.
    progress : callable, optional
        Called as ``progress(label, done, total)``.
    match : MatchOptions, optional
        Matching choices resolved earlier (pinned masters are re-read by id).

    Returns
    -------
    list of LightReport
        One per usable light.
    """
    with claims.holding(catalog, run_id):
        with catalog.session() as session:
            claims.lock_writers(session)
            taken = claims.busy(session, run_id)  # read before the plan: see ccdcal.claims
            lights = plan_lights(session, options, match_options(session, options, match))
            claims.claim(session, run_id, lights, taken)
        calibrate_lights(catalog, [x for x in lights if x.outcome == "calibrate"], options, run_id, progress)
    return lights


def _shown(value: Any) -> str:
    """A key for display: ``NA`` when absent, numbers as in file names (``60``, ``2.5``)."""
    if value is None:
        return "NA"
    return number_text(value) if isinstance(value, float) else str(value)


class _Rollback(Exception):
    """Raised to leave a session whose changes must not be kept."""


@contextmanager
def _rolled_back(catalog: Catalog) -> Iterator[Session]:
    """A session whose changes are always rolled back."""
    try:
        with catalog.session() as session:
            yield session
            raise _Rollback
    except _Rollback:
        pass


def check_options(options: ProcessOptions) -> None:
    """Raise :class:`UsageError` naming the option when options are invalid or contradict each other."""
    for kind in options.allow_missing:
        if kind not in ROLES:
            raise UsageError(f"--allow-missing {kind!r}: use one of {', '.join(ROLES)}")
    if not (math.isfinite(options.flat_min) and options.flat_min > 0):
        raise UsageError(f"--flat-min must be a positive number, not {options.flat_min:g}")
    if not options.rules.temp_tolerance >= 0:
        raise UsageError(f"--temp-tolerance must be zero or positive, not {options.rules.temp_tolerance:g}")
    if not options.rules.exptime_tolerance >= 0:
        raise UsageError(
            f"--exptime-tolerance must be zero or positive, not {options.rules.exptime_tolerance:g}"
        )
    if options.jobs is not None and options.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {options.jobs}")
    if options.scheduler is not None:
        check_address(options.scheduler)
    if options.no_bias and options.rules.dark_scale:
        raise UsageError(
            "--dark-scale cannot be used with --no-bias: a dark that contains the bias cannot be scaled "
            "(the bias would be scaled with it)"
        )
    for role, skipped in (("bias", options.no_bias), ("dark", options.no_dark), ("flat", options.no_flat)):
        if skipped and getattr(options, role) is not None:
            raise UsageError(f"--{role} and --no-{role} cannot be used together")
    check_step_options(options)


def match_options(
    session: Session, options: ProcessOptions, resolved: MatchOptions | None = None
) -> MatchOptions:
    """The matching choices of ``options``, with pinned files resolved to masters of the catalog.

    ``resolved`` (from an earlier session) is re-read by id, so that a pinned master's status is seen as
    it is now.
    """
    pins: dict[str, MasterInfo] = {}
    for role in ROLES:
        given = getattr(options, role)
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
        pins[role] = MasterInfo.of(master)
    skip = frozenset(r for r, on in (("dark", options.no_dark), ("flat", options.no_flat)) if on)
    return MatchOptions(
        rules=options.rules,
        no_bias=options.no_bias,
        skip=skip,
        allow_missing=frozenset(options.allow_missing),
        pins=pins,
    )


def plan_now(catalog: Catalog) -> tuple[int | None, ProcessSummary]:
    """The dry run of ``ccdcal process`` with the options of the last ``process`` (or ``run``) run, and
    that run's id; default options (and ``None``) when there was none or its pinned masters are gone."""
    run = last_process_run(catalog)
    options = ProcessOptions.from_arguments(run.arguments) if run is not None else ProcessOptions()
    options = replace(options, redo=False)
    try:
        return (run.id if run is not None else None), dry_run(catalog, options)
    except UsageError:  # a pinned master of that run is no longer in the catalog
        return None, dry_run(catalog, replace(options, bias=None, dark=None, flat=None))


def pending_work(catalog: Catalog) -> dict[str, Any]:
    """What ``ccdcal process`` would do now: computed on the fly, as a dry run, with the options of the
    last process run (defaults when there was none, or when its pinned masters are gone).

    Returns
    -------
    dict
        ``options_of_run`` (run id or ``None``), ``masters_to_build`` (file names), ``lights``: the lights
        not calibrated as they would be (``path``, ``outcome`` — ``calibrate``, ``cannot`` or ``failed`` —
        and ``reason``), and ``current`` (how many lights need nothing).
    """
    run_id, summary = plan_now(catalog)
    return {
        "options_of_run": run_id,
        "masters_to_build": [Path(m.path).name for m in summary.masters_of("build") if m.path],
        "lights": [
            {"path": light.path, "outcome": light.outcome, "reason": light.reason}
            for light in summary.lights
            if light.outcome != "current"
        ],
        "current": len(summary.of("current")),
    }
