"""What a report shows, read from the catalog: masters, calibrated lights, runs, the bias level and dark
current over time (:mod:`ccdcal.report.levels`) and the frame QA (:mod:`ccdcal.report.frameqa`).

:func:`gather` selects, for a :class:`ReportScope`:

- ``--run ID``: the masters built and the lights calibrated in that run;
- ``--since DATE``: the masters built and the lights calibrated since then (a light calibrated several
  times: its latest calibration), and the runs started since then;
- neither: the catalog now — the current masters and every light's current calibration;

plus, always, the masters those lights used, and the runs that made what is shown. Plain values only
(dataclasses), so that the HTML writer (:mod:`ccdcal.report.html`) needs no database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ccdcal.catalog.models import (
    Calibration,
    CalibrationMaster,
    Frame,
    Master,
    MasterCalibrator,
    MasterInput,
    Run,
)
from ccdcal.catalog.queries import GROUP_KEYS, in_chunks
from ccdcal.catalog.targets import is_row_id
from ccdcal.errors import NotFoundError, UsageError
from ccdcal.lights.records import count_of, number_of, step_records, step_warnings, text_of
from ccdcal.lights.steps import APPLIED, STEP_LABELS
from ccdcal.limits import parse_utc
from ccdcal.masters.groups import describe_keys, qa_warnings
from ccdcal.report.frameqa import FrameQaData
from ccdcal.report.levels import DriftSeries, select_levels

#: Master kinds in report order.
KINDS = ("bias", "dark", "flat")

#: The ``runs`` columns holding software versions, and how the report names them.
VERSION_COLUMNS = {
    "ccdcal_version": "ccdcal",
    "astropy_version": "astropy",
    "ccdproc_version": "ccdproc",
    "numpy_version": "numpy",
    "python_version": "Python",
}


@dataclass(frozen=True)
class ReportScope:
    """Which part of the catalog a report covers: one run, everything since a date, or the catalog now.

    ``since`` is naive UTC, as every time the catalog stores.
    """

    run_id: int | None = None
    since: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.run_id is not None and self.since is not None:
            raise UsageError("--run and --since cannot be used together: choose one")

    def describe(self) -> str:
        """``run 4``, ``since 2026-03-14 18:00:00 UTC`` or ``the catalog now``."""
        if self.run_id is not None:
            return f"run {self.run_id}"
        if self.since is not None:
            return f"since {self.since:%Y-%m-%d %H:%M:%S} UTC"
        return "the catalog now"


def parse_since(text: str) -> dt.datetime:
    """An ISO date or date-time (``2026-03-14``, ``2026-03-14T18:00``, ``...+01:00``) as naive UTC.

    A value without an offset is taken as UTC.

    Raises
    ------
    UsageError
        The text is not an ISO date.
    """
    return parse_utc(text, "--since")


def json_object(value: object) -> dict[str, Any]:
    """A JSON column's value as an object: itself when it is one, else empty (``runs.summary`` is NULL
    while a run works; a row edited by hand may hold anything)."""
    return {str(key): item for key, item in value.items()} if isinstance(value, dict) else {}


@dataclass
class RunEntry:
    """One ``runs`` row: what was run, when, with which arguments and software."""

    id: int
    command: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    arguments: dict[str, Any]
    versions: dict[str, str | None]
    host: str | None
    user: str | None
    summary: dict[str, Any]
    in_scope: bool = True


@dataclass
class MasterEntry:
    """One master with its statistics, inputs, calibrators and QA notes."""

    id: int
    kind: str
    path: str
    version: int
    status: str
    is_bad: bool
    bad_reason: str | None
    includes_bias: bool
    keys: dict[str, Any]
    label: str
    n_inputs: int
    median: float | None
    mean: float | None
    std: float | None
    rejected_fraction: float | None
    ccd_temp_mean: float | None
    date_obs_mean: dt.datetime | None
    created_at: dt.datetime
    run_id: int | None
    method: str
    parameters: dict[str, Any]
    inputs: list[tuple[str, bool]] = field(default_factory=list)
    calibrators: list[tuple[str, str, float | None]] = field(default_factory=list)
    in_scope: bool = True
    superseded_reason: str | None = None

    @property
    def warnings(self) -> list[str]:
        """The QA warnings recorded when the master was built."""
        return qa_warnings(self.parameters)


@dataclass
class MasterLink:
    """One ``calibration_masters`` row with its master: role, file, ΔT, Δt, scale, pinned."""

    role: str
    master_id: int
    path: str
    version: int
    status: str
    is_bad: bool
    delta_temp: float | None
    delta_time: float | None
    scale: float | None
    pinned: bool


@dataclass
class LightEntry:
    """One calibrated light: the raw frame, the output, the masters used and anything to know."""

    calibration_id: int
    frame_id: int
    raw_path: str
    hdu: int
    output: str | None
    status: str
    filter: str | None
    exptime: float | None
    date_obs: dt.datetime | None
    ccd_temp: float | None
    created_at: dt.datetime
    run_id: int | None
    masters: list[MasterLink] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    replaced_by: int | None = None
    superseded_reason: str | None = None


@dataclass
class Problem:
    """A frame, light or master group that was rejected, not calibrated, failed or left out, and why."""

    category: str
    subject: str
    reason: str
    run_id: int | None = None


@dataclass
class ReportData:
    """Everything one report shows."""

    catalog: str
    scope: ReportScope
    generated_at: dt.datetime
    runs: list[RunEntry]
    masters: list[MasterEntry]
    lights: list[LightEntry]
    drift: list[DriftSeries]
    problems: list[Problem] = field(default_factory=list)
    pending: list[Problem] = field(default_factory=list)
    plan_run: int | None = None
    frame_qa: FrameQaData = field(default_factory=FrameQaData)


def select_lights(session: Session, scope: ReportScope) -> list[LightEntry]:
    """The calibrated lights in scope (not the failed attempts: those are problems), by raw path."""
    query = (
        select(Calibration, Frame)
        .join(Frame, Frame.id == Calibration.frame_id)
        .where(Calibration.status != "failed")
        .order_by(Calibration.id)
    )
    if scope.run_id is not None:
        query = query.where(Calibration.run_id == scope.run_id)
    elif scope.since is not None:
        query = query.where(Calibration.created_at >= scope.since)
    else:
        query = query.where(Calibration.status == "current")
    latest: dict[int, tuple[Calibration, Frame]] = {}
    for calibration, frame in session.execute(query):
        latest[frame.id] = (calibration, frame)  # ordered by id: the last one is the latest
    lights = [_light(c, f) for c, f in sorted(latest.values(), key=lambda cf: (cf[1].path, cf[0].id))]
    _add_masters_used(session, lights)
    _add_replacements(session, lights)
    return lights


def _light(calibration: Calibration, frame: Frame) -> LightEntry:
    light = LightEntry(
        calibration_id=calibration.id,
        frame_id=frame.id,
        raw_path=frame.path,
        hdu=frame.hdu or 0,
        output=calibration.path,
        status=calibration.status,
        filter=frame.filter,
        exptime=frame.exptime,
        date_obs=frame.date_obs,
        ccd_temp=frame.ccd_temp,
        created_at=calibration.created_at,
        run_id=calibration.run_id,
        superseded_reason=_superseded_reason(calibration),
    )
    for role, step in step_records(calibration.steps).items():
        status = text_of(step, "status") or "unknown"
        masked = count_of(step, "masked")
        if status != APPLIED:
            light.notes.append(f"{role}: {STEP_LABELS.get(status, status)} — {text_of(step, 'reason') or ''}")
        elif role == "flat" and masked:
            light.notes.append(
                f"flat: {masked} pixels below flat_min {number_of(step, 'flat_min')} clamped "
                "(flagged in the MASK extension)"
            )
        if status == APPLIED and role == "flat" and count_of(step, "low"):
            light.notes.append(
                f"flat: {count_of(step, 'low')} pixels below flat_low {number_of(step, 'flat_low')}: low "
                "response, vignetted (MASK bit 16)"
            )
        level = number_of(step, "level")
        if status == APPLIED and role == "saturation" and count_of(step, "flagged") and level is not None:
            light.notes.append(
                f"saturation: {count_of(step, 'flagged')} raw pixels at or above {level:.10g} ADU "
                f"({text_of(step, 'source')}) flagged (MASK bit 8)"
            )
    light.notes += [f"warning: {warning}" for warning in step_warnings(calibration.steps)]
    if calibration.raw_sha256 and frame.sha256 and calibration.raw_sha256 != frame.sha256:
        light.notes.append("the raw file changed after this calibration (its sha256 differs)")
    return light


def _add_masters_used(session: Session, lights: list[LightEntry]) -> None:
    by_id = {light.calibration_id: light for light in lights}
    if not by_id:
        return
    order = case({role: i for i, role in enumerate(KINDS)}, value=CalibrationMaster.role, else_=9)
    for ids in in_chunks(by_id):
        query = (
            select(CalibrationMaster, Master)
            .join(Master, Master.id == CalibrationMaster.master_id)
            .where(CalibrationMaster.calibration_id.in_(ids))
            .order_by(CalibrationMaster.calibration_id, order)
        )
        for link, master in session.execute(query):
            by_id[link.calibration_id].masters.append(_use(link, master))


def _use(link: CalibrationMaster, master: Master) -> MasterLink:
    return MasterLink(
        role=link.role,
        master_id=master.id,
        path=master.path,
        version=master.version,
        status=master.status,
        is_bad=master.is_bad,
        delta_temp=link.delta_temp,
        delta_time=link.delta_time,
        scale=link.scale,
        pinned=link.pinned,
    )


def _add_replacements(session: Session, lights: list[LightEntry]) -> None:
    """A superseded calibration's file name now holds a later calibration's output: say which."""
    old: dict[str, LightEntry] = {}
    for light in lights:
        if light.status != "current" and light.output:
            old[light.output] = light
    if not old:
        return
    for paths in in_chunks(old):
        query = (
            select(Calibration.path, func.max(Calibration.id))
            .where(Calibration.path.in_(paths), Calibration.status != "failed")
            .group_by(Calibration.path)
        )
        for path, newest in session.execute(query):
            if path is not None and newest > old[path].calibration_id:
                old[path].replaced_by = newest


def select_masters(session: Session, scope: ReportScope, used: set[int]) -> list[MasterEntry]:
    """The masters in scope, and those in ``used`` (masters the lights in scope used), by kind and keys."""
    if scope.run_id is not None:
        condition: Any = Master.run_id == scope.run_id
    elif scope.since is not None:
        condition = Master.created_at >= scope.since
    else:
        condition = Master.status == "current"
    kind_order = case({kind: i for i, kind in enumerate(KINDS)}, value=Master.kind, else_=9)
    query = (
        select(Master, condition.label("in_scope"))
        .where(condition | Master.id.in_(sorted(used)))
        .order_by(
            kind_order,
            Master.exptime,
            Master.filter,
            Master.temp_key,
            Master.instrument,
            Master.xbinning,
            Master.gain,
            Master.version,
            Master.id,
        )
    )
    masters = [_master(m, bool(in_scope)) for m, in_scope in session.execute(query)]
    _add_inputs(session, masters)
    return masters


def _master(m: Master, in_scope: bool) -> MasterEntry:

    keys = {name: getattr(m, name) for name in GROUP_KEYS[m.kind]}
    return MasterEntry(
        id=m.id,
        kind=m.kind,
        path=m.path,
        version=m.version,
        status=m.status,
        is_bad=m.is_bad,
        bad_reason=m.bad_reason,
        includes_bias=m.includes_bias,
        keys=keys,
        label=describe_keys(keys),
        n_inputs=m.n_inputs,
        median=m.stat_median,
        mean=m.stat_mean,
        std=m.stat_std,
        rejected_fraction=m.rejected_fraction,
        ccd_temp_mean=m.ccd_temp_mean,
        date_obs_mean=m.date_obs_mean,
        created_at=m.created_at,
        run_id=m.run_id,
        method=m.method,
        parameters=json_object(m.parameters),
        in_scope=in_scope,
        superseded_reason=_superseded_reason(m),
    )


def _superseded_reason(row: Master | Calibration) -> str | None:
    """Why a newer version replaced this row, where the catalog records it (schema revision 0002)."""
    reason = getattr(row, "superseded_reason", None)
    return str(reason) if reason else None


def _add_inputs(session: Session, masters: list[MasterEntry]) -> None:
    """Each master's input frames (path, changed since) and calibrators (role, path, scale)."""
    by_id = {m.id: m for m in masters}
    if not by_id:
        return
    for ids in in_chunks(by_id):
        inputs = (
            select(MasterInput.master_id, Frame.path, Frame.sha256, MasterInput.sha256)
            .join(Frame, Frame.id == MasterInput.frame_id)
            .where(MasterInput.master_id.in_(ids))
            .order_by(MasterInput.master_id, Frame.path)
        )
        for master_id, path, now, used in session.execute(inputs):
            by_id[master_id].inputs.append((path, now != used))
        calibrators = (
            select(MasterCalibrator.master_id, MasterCalibrator.role, Master.path, MasterCalibrator.scale)
            .join(Master, Master.id == MasterCalibrator.calibrator_id)
            .where(MasterCalibrator.master_id.in_(ids))
            .order_by(MasterCalibrator.master_id, MasterCalibrator.role)
        )
        for master_id, role, path, scale in session.execute(calibrators):
            by_id[master_id].calibrators.append((role, path, scale))


def select_runs(session: Session, scope: ReportScope, referenced: set[int]) -> list[RunEntry]:
    """The runs in scope (the run asked for; the runs started since the date) and the ``referenced`` ones.

    Raises
    ------
    NotFoundError
        ``--run ID`` names no run of the catalog.
    """
    if scope.run_id is not None:
        if not is_row_id(scope.run_id) or session.get(Run, scope.run_id) is None:
            newest = session.scalar(select(func.max(Run.id)))
            known = f"runs are 1 to {newest}" if newest else "the catalog has no runs yet"
            raise NotFoundError(f"--run {scope.run_id}: no such run ({known}); see the runs table")
        condition: Any = Run.id == scope.run_id
    elif scope.since is not None:
        condition = Run.started_at >= scope.since
    else:
        condition = Run.id.in_(sorted(referenced))
    query = select(Run, condition.label("in_scope")).where(condition | Run.id.in_(sorted(referenced)))
    return [_run(r, bool(in_scope)) for r, in_scope in session.execute(query.order_by(Run.id))]


def _run(r: Run, in_scope: bool) -> RunEntry:
    return RunEntry(
        id=r.id,
        command=r.command,
        status=r.status,
        started_at=r.started_at,
        finished_at=r.finished_at,
        arguments=json_object(r.arguments),
        versions={label: getattr(r, column) for column, label in VERSION_COLUMNS.items()},
        host=r.host,
        user=r.user,
        summary=json_object(r.summary),
        in_scope=in_scope,
    )


def select_drift(session: Session, masters: list[MasterEntry]) -> list[DriftSeries]:
    """The bias level and dark current over time of the bias and dark masters shown
    (:func:`ccdcal.report.levels.select_levels`)."""
    return select_levels(session, [(m.kind, m.keys) for m in masters])
