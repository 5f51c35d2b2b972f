"""Planning the lights of ``ccdcal process``: for each usable light, its masters and what to do with it.

:func:`plan_lights` gives every usable light one :class:`LightReport`:

- ``cannot``: its raw file is gone or changed since it was catalogued, or a step has no master (the
  reason names the failed key and the nearest candidate);
- ``calibrate``: not calibrated yet, or its latest calibration differs from the plan — the raw file's
  sha256, a master (a new version, one marked bad), a step's status, the dark scale, ``--flat-min``,
  ``--flat-low``, ``--saturation``, the output folder — or its output file is missing, or ``--redo``;
  the reason says which;
- ``current``: calibrated with exactly this plan, output present: nothing to do;
- ``failed``: its latest attempt failed and nothing has changed since (``--redo`` tries again).

A light keeps the output path of its previous calibration in the same folder; a new one gets
``{stem}_cal.fits``, or ``_v2``, ``_v3`` ... when another light (a raw file of the same name in another
folder) or a foreign file already has that name.
"""

from __future__ import annotations

import gc
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.catalog.queries import core_rows, in_chunks, no_jit, usable
from ccdcal.catalog.ranking import Columns, Targets, exact_time, target_columns
from ccdcal.files.fitsio import OUTPUT_FAILED
from ccdcal.files.naming import calibrated_name, name_max, name_too_long
from ccdcal.lights.matching import Choices, LightMatch, MatchOptions, match_light
from ccdcal.lights.optional import COMPARED_RECORDS, OptionalContext, optional_changes, plan_optional_steps
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.records import number_of, step_records, text_of
from ccdcal.lights.steps import APPLIED, STEP_LABELS, MasterInfo
from ccdcal.lights.task import RAW_CHANGED, FrameTask, MasterUse, OptionalSteps


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
    calibration_id: int | None = None
    seconds: float | None = None
    warnings: tuple[str, ...] = ()
    #: Makes :attr:`task` when first asked (a dry run never asks).
    task_maker: Callable[[], FrameTask] | None = field(default=None, repr=False, compare=False)
    _task: FrameTask | None = field(default=None, repr=False, compare=False)

    @property
    def task(self) -> FrameTask | None:
        """The worker's task, for a light to calibrate (``None`` otherwise)."""
        if self._task is None and self.task_maker is not None:
            self._task, self.task_maker = self.task_maker(), None
        return self._task

    @task.setter
    def task(self, task: FrameTask | None) -> None:
        self._task, self.task_maker = task, None

    def masters(self) -> dict[str, str]:
        """Per step, the master's file name, or how the step was left out (``n/a``, ``skipped`` ...)."""
        return self.match.masters() if self.match is not None else {}

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


def plan_lights(session: Session, options: ProcessOptions, match: MatchOptions) -> list[LightReport]:
    """Match every usable light and decide what to do with it (see the module docstring).

    The lights are read once, as plain rows; their masters are chosen for all of them at once
    (:class:`~ccdcal.lights.matching.Choices`), and what each light needs from the catalog — its latest
    calibration, the output names taken — is read once for all.

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
    no_jit(session)
    exact = exact_time(session)
    lights = read_lights(session, exact)
    choices = Choices(session, batch=True, targets=Targets(Columns.of(lights, exact)))
    plan = _Plan(session, options, match, choices, raw_problems(lights))
    fields = lights[0]._fields if lights else ()
    with paused_gc():  # a few objects a light, none of them garbage: no collection needed meanwhile
        return [plan.light(light, dict(zip(fields, light, strict=True))) for light in lights]


def read_lights(session: Session, exact: bool) -> Sequence[Any]:
    """The rows of :func:`light_query`, by path.

    Sorted by the database, not here: sorting the rows in Python is faster than SQLite's sort, but then
    the rows lie in memory in the order they were read, and each of the passes planning makes over them
    jumps from one to another out of the processor's caches.
    """
    return core_rows(session, light_query(exact))


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off, then as it was: a plan makes millions of objects that stay.

    The objects made meanwhile then join the oldest generation unexamined (``gc.freeze`` then
    ``gc.unfreeze``, when nothing else is frozen), as if they had survived: else the first collection
    after would walk through them all, for nothing.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def light_query(exact: bool) -> Select[Any]:
    """The usable lights by path, with what planning reads of them: first the target columns of
    :func:`~ccdcal.catalog.ranking.target_columns`, then the file's identity and DATE-OBS."""
    return (
        select(
            *target_columns(exact),
            Frame.path,
            Frame.sha256,
            Frame.size,
            Frame.mtime,
            Frame.hdu,
            Frame.date_obs,
        )
        .where(usable("light"))
        .order_by(Frame.path)
    )


class _Plan:
    """What planning each light needs, read once: latest calibrations, output names taken, the optional
    steps' context, the explanations already written (a master change is explained once), and the raw
    files that cannot be used (``problems``: :func:`raw_problems`)."""

    def __init__(
        self,
        session: Session,
        options: ProcessOptions,
        match: MatchOptions,
        choices: Choices,
        problems: dict[int, str],
    ) -> None:
        self.session, self.options, self.match, self.choices = session, options, match, choices
        self.folder = Path(options.output_dir).expanduser().resolve()
        self.prefix = os.path.join(str(self.folder), "")  # the folder, then a separator
        self.folder_exists = self.folder.is_dir()
        self.name_max = name_max(self.folder)
        self.latest = _latest(session)
        query = select(Calibration.path, Calibration.frame_id).where(Calibration.status == "current")
        self.taken: dict[str | None, int] = dict(session.execute(query).all())
        self.assigned: set[str] = set()
        self.available: dict[Any, bool] = {}
        # overscan, uncertainty, cosmic rays, bad-pixel mask
        self.context = OptionalContext.load(session, options.optional, apply_bpm=not options.no_bpm)
        self.explained: dict[Any, str] = {}
        self.used: dict[int, tuple[str, str, Callable[[], str | None]] | None] | None = None
        self.uses: dict[tuple[str, int], MasterUse] = {}
        self.optional: dict[Any, tuple[OptionalSteps | None, str | None]] = {}
        self.raw_problems = problems

    def light(self, light: Any, target: dict[str, Any]) -> LightReport:
        """The report of one light: a row of :func:`light_query`, and its values as a dict (read from the
        dict: a row's values by name cost ten times as much)."""
        frame_id = target["id"]
        report = LightReport(frame_id, target["path"], target["filter"], target["exptime"])
        report.reason = self.raw_problems.get(frame_id)
        if report.reason:
            return report
        report.match = match_light(
            self.session, light, self.match, self.available, self.choices, target=target
        )
        report.reason = report.match.reason
        if report.reason:
            return report
        optional, report.reason = self._optional(target, report.match)
        if report.reason:
            return report
        if not self.options.write_uncalibrated:
            report.reason = uncalibrated_reason(report.match, optional)
            if report.reason:
                return report
        previous, used = self.latest.get(frame_id, _NEVER)
        kept = self._kept_output(previous.path) if previous is not None else None
        output = kept or self._new_output(target["path"], frame_id)
        report.reason = name_too_long(output, self.name_max)
        if report.reason:
            return report
        if previous is not None:
            changes = self._changes(target["sha256"], report.match, previous, used, bool(kept))
            changes += optional_changes(previous.steps, used, optional)
            if not changes and not self.options.redo:
                report.outcome = "current" if previous.status == "current" else "failed"
                report.output = previous.path
                if previous.status != "current":
                    report.reason = (
                        f"failed before, and nothing changed since: {previous.error} (--redo tries again)"
                    )
                return report
        else:
            changes = []
        report.outcome = "calibrate"
        report.reason = "--redo" if self.options.redo else ("; ".join(changes) or "not calibrated yet")
        report.output = output
        self.assigned.add(output)
        report.task_maker = partial(self._task, light, report.match, output, optional)
        return report

    def _optional(self, target: dict[str, Any], match: LightMatch) -> tuple[OptionalSteps | None, str | None]:
        """:func:`~ccdcal.lights.optional.plan_optional_steps`, once per image shape and header values:
        without a bad-pixel mask it depends on nothing else (its result is immutable, shared by those
        lights)."""
        if self.context.use_bpm:
            return plan_optional_steps(self.session, self.context, target, match)
        values = self.context.values.get(target["id"])
        key = (target["naxis1"], target["naxis2"], tuple(sorted(values.items())) if values else ())
        found = self.optional.get(key)
        if found is None:
            found = self.optional[key] = plan_optional_steps(self.session, self.context, target, match)
        return found

    def _kept_output(self, path: str | None) -> str | None:
        """A previous output's path when it is in the output folder (it keeps it), else ``None``."""
        if not path:
            return None
        name = os.path.basename(path)
        if name not in ("", ".", "..") and path == self.prefix + name:  # the common case, as a string
            return path
        return str(Path(path)) if Path(path).parent == self.folder else None

    def _new_output(self, raw_path: str, frame_id: int) -> str:
        """A free ``{stem}_cal.fits`` in the output folder (``_v2``, ``_v3`` ... when the file exists,
        or another light has or is given that name)."""
        name = calibrated_name(raw_path)
        candidate, version = self.prefix + name, 1
        while self._exists(candidate) or self._taken(candidate, frame_id):
            version += 1
            candidate = f"{self.prefix}{name[: -len('.fits')]}_v{version}.fits"
        return candidate

    def _exists(self, path: str) -> bool:
        """Whether a file is at ``path`` in the output folder (none is when the folder is not there)."""
        return self.folder_exists and os.path.exists(path)

    def _taken(self, path: str, frame_id: int) -> bool:
        """Whether another light's current calibration, or a light planned before, has this output."""
        owner = self.taken.get(path)
        return (owner is not None and owner != frame_id) or path in self.assigned

    def _changes(
        self, raw_sha256: str, match: LightMatch, previous: Previous, used: dict[str, int], kept: bool
    ) -> list[str]:
        """What differs between the light's latest calibration (``previous``, with its masters by role:
        ``used``) and the plan (empty: nothing); ``kept``: the previous output is in the output folder."""
        changes = []
        if previous.raw_sha256 != raw_sha256:
            changes.append("raw file changed")
        steps = previous.steps  # each master step's record, maybe empty (compared_steps)
        for decision in match.decisions:  # bias, dark, flat
            role, before = decision.role, steps[decision.role]
            now = decision.master.id if decision.status == APPLIED and decision.master else None
            if used.get(role) != now:
                changes.append(self.explain(role, used.get(role), decision.master))
            elif before.get("status") != decision.status:
                changes.append(f"{role} step: {before.get('status', 'none')} → {decision.status}")
            elif (
                role == "dark"
                and now is not None
                and not math.isclose(before.get("scale") or 1.0, match.step("dark").scale or 1.0)
            ):
                changes.append("dark scale changed")
        flat_before = steps["flat"]
        flat_kept = flat_before.get("status") == APPLIED and match.applied("flat") is not None
        if flat_kept and flat_before.get("flat_min") != self.options.flat_min:
            changes.append("--flat-min changed")
        if flat_kept and flat_before.get("flat_low", self.options.flat_low) != self.options.flat_low:
            changes.append("--flat-low changed")  # not compared with a calibration that predates it
        saturation = steps.get("saturation", {})
        if "status" in saturation and saturation.get("option") != self.options.optional.saturation:
            changes.append("--saturation changed")
        if previous.path and not kept:
            changes.append("output folder changed")
        elif previous.status == "current" and not (
            previous.path and self.folder_exists and os.path.isfile(previous.path)
        ):
            changes.append("output file missing")
        elif previous.status == "failed" and (previous.error or "").startswith(OUTPUT_FAILED):
            changes.append("its output could not be written last time")  # a full disk ... tried again
        elif previous.status == "failed" and previous.error == RAW_CHANGED:
            changes.append("raw file read again by ingest since it was found changed")
        return changes

    def explain(self, role: str, before: int | None, now: MasterInfo | None) -> str:
        """:func:`_master_change`, once per role and pair of masters."""
        key = (role, before, now.id if now is not None else None)
        text = self.explained.get(key)
        if text is None:
            text = self.explained[key] = _master_change(self.used_master, role, before, now)
        return text

    def used_master(self, master_id: int) -> tuple[str, str, Callable[[], str | None]] | None:
        """A master of a previous calibration: its file name, status, and why it may not be used (asked
        when needed); the masters of every previous calibration are read at the first call."""
        if self.used is None:
            ids = sorted({i for _, roles in self.latest.values() for i in roles.values()})
            self.used = {}
            for chunk in in_chunks(ids):
                query = select(Master).where(Master.id.in_(chunk))
                self.used.update((m.id, self._used(m)) for m in self.session.scalars(query))
        if master_id not in self.used:
            master = self.session.get(Master, master_id)
            self.used[master_id] = self._used(master) if master is not None else None
        return self.used[master_id]

    def _used(self, master: Master) -> tuple[str, str, Callable[[], str | None]]:
        return Path(master.path).name, master.status, partial(self.choices.unusable_reason, master)

    def _task(self, light: Any, match: LightMatch, output: str, optional: OptionalSteps | None) -> FrameTask:
        """The worker's task for one light (each master's :class:`MasterUse` made once)."""

        def use(role: str) -> MasterUse | None:
            master = match.applied(role)
            if master is None:
                return None
            key = (role, master.id)
            if key not in self.uses:
                self.uses[key] = MasterUse(role, master.id, master.path, master.sha256)
            return self.uses[key]

        steps_of = match.steps
        notes = tuple(
            f"{role} not applied ({STEP_LABELS[step.status]}): {step.reason}"
            for role, step in steps_of.items()
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
            output=output,
            bias=use("bias"),
            dark=use("dark"),
            dark_scale=dark.scale if dark.status == APPLIED and dark.scale is not None else 1.0,
            flat=use("flat"),
            flat_min=self.options.flat_min,
            flat_low=self.options.flat_low,
            saturation=self.options.optional.saturation,
            notes=notes,
            optional=optional,
        )


#: The latest calibration of a light never calibrated, and its masters.
_NEVER: tuple[None, dict[str, int]] = (None, {})


class Previous(NamedTuple):
    """A light's latest calibration (any status), as planning compares it with the plan."""

    id: int
    frame_id: int
    path: str | None
    status: str
    error: str | None
    raw_sha256: str | None
    #: What planning reads of ``calibrations.steps`` (:func:`compared_steps`).
    steps: dict[str, Any]


def compared_steps(steps: object) -> dict[str, Any]:
    """The part of a calibration's ``steps`` that planning compares: each master step's ``status`` (a
    text), the dark's ``scale``, the flat's ``flat_min`` and ``flat_low``, the saturation's ``status`` and
    ``option`` (numbers), where recorded, and the records of
    :data:`~ccdcal.lights.optional.COMPARED_RECORDS`. :func:`_latest` reads the same from the database.
    Any JSON is read (:mod:`ccdcal.lights.records`): a value of another type counts as not recorded."""
    records = step_records(steps)
    compared: dict[str, Any] = {}
    for role, keys in _COMPARED_KEYS.items():
        record = records.get(role, {})
        compared[role] = {key: value for key in keys if (value := _compared_value(record, key)) is not None}
    compared |= {key: dict(records[key]) for key in COMPARED_RECORDS if key in records}
    return compared


def _compared_value(record: Mapping[str, object], key: str) -> str | float | None:
    return text_of(record, key) if key == "status" else number_of(record, key)


#: The values of each master step, and of the saturation level, that planning compares.
_COMPARED_KEYS = {
    "bias": ("status",),
    "dark": ("status", "scale"),
    "flat": ("status", "flat_min", "flat_low"),
    "saturation": ("status", "option"),
}


def _latest(session: Session) -> dict[int, tuple[Previous | None, dict[str, int]]]:
    """Each light's latest calibration and its masters by role.

    SQLite extracts from ``calibrations.steps`` the values planning compares (:func:`compared_steps`):
    one ``json_extract`` of them all reads a few values of a calibration's JSON many times faster than
    Python decodes the whole of it. PostgreSQL's operators on ``json`` parse the document again for each
    value: there the whole JSON is read and decoded by the driver.
    """
    newest = select(func.max(Calibration.id)).group_by(Calibration.frame_id)
    extract = session.get_bind().dialect.name == "sqlite"
    query = select(
        Calibration.id,
        Calibration.frame_id,
        Calibration.path,
        Calibration.status,
        Calibration.error,
        Calibration.raw_sha256,
        *(_EXTRACTED if extract else [Calibration.steps]),
    ).where(Calibration.id.in_(newest))
    found: dict[int, Previous] = {}
    rows: Sequence[Any] = core_rows(session, query)
    for calibration_id, frame_id, path, status, error, raw_sha256, *steps in rows:
        compared = _extracted_steps(steps) if extract else compared_steps(steps[0])
        found[calibration_id] = Previous(calibration_id, frame_id, path, status, error, raw_sha256, compared)
    used: dict[int, dict[str, int]] = {i: {} for i in found}
    if found:
        links = select(CalibrationMaster.calibration_id, CalibrationMaster.role, CalibrationMaster.master_id)
        for calibration_id, role, master_id in session.execute(
            links.where(CalibrationMaster.calibration_id.in_(newest))
        ):
            # On PostgreSQL each select sees what is committed when it starts: a calibration another
            # run committed after the first is not this plan's (that run claims its lights: busy here).
            if calibration_id in used:
                used[calibration_id][role] = master_id
    return {previous.frame_id: (previous, used[i]) for i, previous in found.items()}


#: The paths in ``calibrations.steps`` of what planning compares: each master step's values
#: (:data:`_COMPARED_KEYS`), then the records of :data:`~ccdcal.lights.optional.COMPARED_RECORDS`.
_PATHS = [
    *((role, key) for role, keys in _COMPARED_KEYS.items() for key in keys),
    *((key,) for key in COMPARED_RECORDS),
]

#: The column of :func:`_latest` that extracts them on SQLite: one ``json_extract`` of every path, which
#: parses the document once and gives the values as a JSON array, each of the type it is stored with (so
#: that they are read by :func:`compared_steps` as the whole document would be).
_EXTRACTED = [
    func.json_extract(Calibration.steps, *("$" + "".join(f'."{key}"' for key in path) for path in _PATHS))
]


def _extracted_steps(values: list[Any]) -> dict[str, Any]:
    """:func:`compared_steps` from the :data:`_EXTRACTED` column: the values put back where they were."""
    try:
        found = json.loads(values[0]) if isinstance(values[0], str) else None
    except ValueError:
        found = None
    steps: dict[str, Any] = {}
    for path, value in zip(_PATHS, found if isinstance(found, list) else [], strict=False):
        if len(path) == 1:
            steps[path[0]] = value
        else:
            steps.setdefault(path[0], {})[path[1]] = value
    return compared_steps(steps)


def raw_problems(lights: Sequence[Any]) -> dict[int, str]:
    """Light id → why its raw file cannot be used as catalogued, for the lights with a problem.

    Every file is checked in one loop, in path order, before the lights are planned: a light's check in
    the middle of its planning costs three times as much (the file system's cached entries of the
    neighbouring files have been pushed out of the processor's caches in between)."""
    if not lights:
        return {}
    fields = lights[0]._fields
    values = itemgetter(*(fields.index(name) for name in ("id", "path", "size", "mtime")))
    return {
        frame_id: problem
        for frame_id, path, size, mtime in map(values, lights)
        if (problem := _raw_problem(path, size, mtime)) is not None
    }


def _raw_problem(path: str, size: int | None, mtime: float | None) -> str | None:
    """Why the raw file cannot be used as catalogued (``None``: it can)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return "raw file is missing; run `ccdcal ingest` on its folder to record it"
    except OSError as exc:
        return f"raw file cannot be read: {exc.strerror}"
    if stat.st_size != size or stat.st_mtime != mtime:
        return "raw file changed since it was catalogued; run `ccdcal ingest` on it again"
    return None


def uncalibrated_reason(match: LightMatch, optional: OptionalSteps | None) -> str | None:
    """Why a light is not written: no calibration step applies to it — no bias, dark or flat master, no
    overscan — so its output would be the raw frame (``None``: some step applies)."""
    if match.reason is not None or any(d.status == APPLIED for d in match.decisions):
        return None
    if optional is not None and optional.overscan is not None:
        return None
    why = "; ".join(d.reason or f"{d.role} {STEP_LABELS[d.status]}" for d in match.decisions)
    return (
        f"nothing to calibrate it with: {why}; its output would be the raw frame, so it is not written "
        "(--write-uncalibrated writes it)"
    )


def _master_change(
    used_master: Callable[[int], tuple[str, str, Callable[[], str | None]] | None],
    role: str,
    before: int | None,
    now: Any,
) -> str:
    """Why a step's master changed: ``used_master(id)`` gives the previous one's name, status and the
    reason it may not be used."""
    old = used_master(before) if before is not None else None
    if now is None:
        return f"{role} master no longer applied"
    if old is None:
        return f"{role} master now available: {now.name}"
    name, status, unusable = old
    if status == "superseded":
        return f"new {role} master {now.name} (replaces {name})"
    why = unusable()
    if why is not None:
        return f"{role} master {why}; now {now.name}"
    return f"{role} master changed: {name} → {now.name}"
