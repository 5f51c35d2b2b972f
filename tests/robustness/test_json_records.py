"""Every JSON shape ccdcal writes is read back by every reader (docs/design.md, Catalog: the JSON columns).

The catalog's JSON columns — ``calibrations.steps``, ``masters.parameters``, ``runs.arguments`` and
``runs.summary`` — have their shapes written down as TypedDicts next to their writers
(:mod:`ccdcal.lights.records`, :mod:`ccdcal.masters.groups`, :mod:`ccdcal.lights.options`,
:mod:`ccdcal.ingestion.core`, :mod:`ccdcal.lights.summary`). Here:

- every reader reads any JSON value at all (an older ccdcal's row, a row edited by hand) without raising;
- every value of a shape (hypothesis's ``from_type``), stored as the catalog stores it, is read right: the
  warnings are shown, the statuses compared, the problems listed, the options recovered;
- what the writers write is of those shapes: a night calibrated with every optional step, a light far below
  its bias (its level warning) and a light that fails, on SQLite and on PostgreSQL; and every command that
  reads the catalog (report, status, provenance, impact, audit) reads that catalog.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.engine import dumps_json
from ccdcal.catalog.models import Calibration, Frame, Master, Run
from ccdcal.catalog.queries import MatchRules
from ccdcal.cli import app
from ccdcal.errors import CcdcalError
from ccdcal.ingestion.core import IngestRecord
from ccdcal.kernels.options import StepOptions
from ccdcal.lights import plan, worker
from ccdcal.lights.optional import COMPARED_RECORDS, optional_changes
from ccdcal.lights.options import ProcessArguments, ProcessOptions
from ccdcal.lights.records import CalibrationSteps, StepRecord, mask_of, step_records, step_warnings
from ccdcal.lights.steps import APPLIED, ROLES
from ccdcal.lights.summary import ProcessRecord
from ccdcal.masters.build import _listed
from ccdcal.masters.frameqa import QaOptions
from ccdcal.masters.groups import (
    MasterParameters,
    MastersRecord,
    overscan_level,
    qa_warnings,
    recorded_level,
)
from ccdcal.report import data, html, levels, problems

#: Keys the readers look for, so that arbitrary JSON often holds them (with values of any type).
KNOWN_KEYS = sorted(
    {
        *ROLES,
        "bpm",
        *COMPARED_RECORDS,
        "warnings",
        "status",
        "reason",
        "scale",
        "flat_min",
        "flat_low",
        "low",
        "saturation",
        "option",
        "masked",
        "flagged",
        "qa",
        "level",
        "mean",
        "error",
        "steps",
        "overscan",
        "inputs",
        "rejected",
        "not_read",
        "unclassified",
        "masters",
        "problems",
        "keys",
        "outcome",
        "path",
        "kind",
        *(field.name for field in dataclasses.fields(ProcessOptions)),
        *ProcessArguments.__annotations__,
    }
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from([APPLIED, "planned", "skipped", "not_available", "cannot", "failed", "skipped"])
)
JSON = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=30,
)
EXAMPLES = settings(max_examples=150, deadline=None)


def stored(value: Any) -> Any:
    """``value`` as the catalog gives it back: written by :func:`dumps_json`, read by ``json.loads``."""
    return json.loads(dumps_json(value))


# -- what a shape allows --------------------------------------------------------------------------------


def conforms(value: Any, shape: Any) -> bool:
    """Whether a JSON value (as stored) is of ``shape``: a TypedDict (its keys, the required ones present,
    each value of its type), ``list[X]``, ``dict[str, X]``, a union, ``str``, ``int``, ``float`` (whole
    numbers too), ``bool`` or ``None``."""
    if shape is Any or shape is object:
        return True
    if typing.is_typeddict(shape):
        hints = typing.get_type_hints(shape)
        return (
            isinstance(value, dict)
            and set(value) <= set(hints)
            and shape.__required_keys__ <= set(value)
            and all(conforms(item, hints[key]) for key, item in value.items())
        )
    origin, args = typing.get_origin(shape), typing.get_args(shape)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and conforms(v, args[1]) for k, v in value.items()
        )
    if shape is type(None) or shape is None:
        return value is None
    if shape is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if shape is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, shape)


def test_the_shape_checker() -> None:
    assert conforms({"status": "applied", "masked": 3, "scale": None}, StepRecord)
    assert not conforms({"status": 3}, StepRecord)
    assert conforms({"warnings": ["x"], "flat": {}}, CalibrationSteps)
    assert not conforms({"warnings": "x"}, CalibrationSteps)
    assert not conforms({"nonsense": 1}, CalibrationSteps)


# -- transient rows the readers are given -----------------------------------------------------------------

NOW = dt.datetime(2026, 3, 14, 20)


def calibration(steps: Any) -> tuple[Calibration, Frame]:
    frame = Frame(id=1, path="/raw/l.fits", hdu=0, sha256="a" * 64, filter="R", exptime=60.0, ccd_temp=-10.0)
    row = Calibration(
        id=1, frame_id=1, path="/cal/l_cal.fits", status="current", steps=steps, created_at=NOW, run_id=1
    )
    row.raw_sha256 = "a" * 64
    return row, frame


def master(parameters: Any) -> Master:
    return Master(
        id=1,
        kind="flat",
        path="/m/master_flat.fits",
        version=1,
        status="current",
        is_bad=False,
        includes_bias=False,
        n_inputs=3,
        xbinning=2,
        ybinning=2,
        gain=120.0,
        filter="R",
        temp_key=-10.0,
        created_at=NOW,
        method="sigma_clipped_median",
        parameters=parameters,
    )


def run_entry(arguments: Any = None, summary: Any = None) -> data.RunEntry:
    return data.RunEntry(
        id=1,
        command="process",
        status="ok",
        started_at=NOW,
        finished_at=NOW,
        arguments=data.json_object(arguments),
        versions={},
        host=None,
        user=None,
        summary=data.json_object(summary),
    )


def read_steps(steps: Any) -> list[str]:
    """Every reader of ``calibrations.steps``; returns the report's notes on the light."""
    records, warnings = step_records(steps), step_warnings(steps)
    assert all(isinstance(key, str) and isinstance(r, typing.Mapping) for key, r in records.items())
    assert all(isinstance(w, str) for w in warnings)
    compared = plan.compared_steps(steps)
    for role in ROLES:
        values = compared[role]
        assert isinstance(values.get("status", ""), str)
        for key in ("scale", "flat_min"):
            assert values.get(key) is None or (isinstance(values[key], float) and math.isfinite(values[key]))
    assert all(isinstance(compared[key], dict) for key in COMPARED_RECORDS if key in compared)
    assert all(isinstance(change, str) for change in optional_changes(compared, {}, None))
    light = data._light(*calibration(steps))
    page = html._light(light, None, None)
    assert all(html.esc(note) in page for note in light.notes)
    return light.notes


def read_parameters(parameters: Any) -> list[str]:
    """Every reader of ``masters.parameters``; returns the QA warnings read."""
    warnings = qa_warnings(parameters)
    level, overscan = recorded_level(parameters), overscan_level(parameters)
    assert level is None or all(math.isfinite(x) for x in level)
    assert overscan is None or math.isfinite(overscan[0])
    bias = master(parameters)
    bias.kind, bias.filter, bias.date_obs_mean, bias.stat_median = "bias", None, NOW, 500.0
    point = levels._bias_point(bias)
    assert point is not None or (level and overscan and not math.isfinite(level[0] + overscan[0]))
    assert point is None or point.source == (
        ("overscan level + clipped mean" if level else "overscan level")
        if overscan
        else ("clipped mean" if level else "median")
    )
    dark = master(parameters)
    dark.kind, dark.filter, dark.exptime, dark.date_obs_mean = "dark", None, 300.0, NOW
    point = levels._dark_point(NOW.date(), [dark])
    assert level is not None or point is None
    html._drift_kind("dark", [levels.DriftSeries("dark", "x", [point] if point else [])], None)
    entry = data._master(master(parameters), True)
    assert entry.warnings == warnings
    page = html._master(entry, None)
    assert all(html.esc(w) in page for w in warnings)
    assert _listed(master(parameters))["warnings"] == warnings
    return warnings


def read_arguments(arguments: Any) -> ProcessOptions | None:
    """Every reader of ``runs.arguments``: the report's table, the options ``status`` plans with
    (``None`` when the recorded options cannot be used: the defaults are planned with instead)."""
    html._runs([run_entry(arguments=arguments)])
    try:
        return ProcessOptions.from_arguments(arguments)
    except CcdcalError:
        return None


def read_summary(summary: Any) -> list[data.Problem]:
    """Every reader of ``runs.summary``: the report's problems of a run."""
    found = problems.from_runs([run_entry(summary=summary)])
    assert all(isinstance(p.subject, str) and isinstance(p.reason, str) for p in found)
    return found


# -- any JSON at all ----------------------------------------------------------------------------------------


@EXAMPLES
@given(JSON)
def test_every_reader_of_calibration_steps_reads_any_json(value: Any) -> None:
    read_steps(value)
    read_steps(stored(value))


@EXAMPLES
@given(JSON)
def test_every_reader_of_master_parameters_reads_any_json(value: Any) -> None:
    read_parameters(value)
    read_parameters(stored(value))


@EXAMPLES
@given(JSON)
def test_every_reader_of_run_arguments_and_summaries_reads_any_json(value: Any) -> None:
    for each in (value, stored(value)):
        read_arguments(each)
        read_summary(each)


# -- every value of the shapes written ------------------------------------------------------------------


@EXAMPLES
@given(st.from_type(CalibrationSteps))
def test_calibration_steps_of_every_shape_are_read(steps: CalibrationSteps) -> None:
    """The regression: a light with the level warning (``warnings``, a list) made ``ccdcal report`` fail."""
    kept = stored(steps)
    notes = read_steps(kept)
    warnings = kept.get("warnings", [])
    assert step_warnings(kept) == warnings
    assert [n for n in notes if n.startswith("warning: ")] == [f"warning: {w}" for w in warnings]
    assert set(step_records(kept)) == set(kept) - {"warnings", "mask"}
    assert mask_of(kept) == kept.get("mask")
    compared = plan.compared_steps(kept)
    for role in ROLES:
        assert compared[role].get("status") == kept.get(role, {}).get("status")
    for role, record in step_records(kept).items():
        status = record.get("status")
        if status is not None and status != APPLIED:
            assert any(note.startswith(f"{role}: ") for note in notes)


@EXAMPLES
@given(st.from_type(MasterParameters))
def test_master_parameters_of_every_shape_are_read(parameters: MasterParameters) -> None:
    kept = stored(parameters)
    assert read_parameters(kept) == kept.get("qa", {}).get("warnings", [])


@EXAMPLES
@given(st.from_type(ProcessArguments))
def test_process_arguments_of_every_shape_are_read(arguments: ProcessArguments) -> None:
    """Read, or refused as a whole with a ccdcal error (a value ccdcal would not take from the command line,
    such as an unknown overscan mode): ``status`` then plans with the default options."""
    read_arguments(stored(arguments))


@EXAMPLES
@given(st.one_of(st.from_type(IngestRecord), st.from_type(MastersRecord), st.from_type(ProcessRecord)))
def test_run_summaries_of_every_shape_are_read(summary: Any) -> None:
    kept = stored(summary)
    found = {(p.category, p.subject, p.reason) for p in read_summary(kept)}
    for key in ("rejected", "not_read"):  # each file listed once (the latest word on it)
        for item in kept.get(key, []):
            assert any(p[1] == item["path"] for p in found)
    for path in kept.get("unclassified", []):
        assert any(p[1] == path for p in found)
    for item in kept.get("problems", []):
        assert any(p[1] == item["path"] for p in found)
    masters = kept.get("masters")
    for item in masters if isinstance(masters, list) else []:
        if item["outcome"] == "skipped":
            assert any(p[0] == "master group skipped" for p in found)


# -- what the writers write --------------------------------------------------------------------------------

PATHS = st.sampled_from([Path("/data/masters"), Path("/data/out"), Path("/data/m2")])
STEPS = st.builds(
    StepOptions.parse,
    overscan=st.sampled_from(["auto", "off", "median", "poly:0", "poly:3"]),
    saturation=st.none() | st.floats(1, 1e6),
    uncertainty=st.booleans(),
    gain=st.none() | st.floats(0.01, 100),
    readnoise=st.none() | st.floats(0, 50),
    cosmic_rays=st.booleans(),
    cr_sigclip=st.floats(0.5, 20),
    cr_objlim=st.floats(0.5, 20),
)
OPTIONS = st.builds(
    ProcessOptions,
    masters_dir=PATHS,
    output_dir=PATHS,
    rules=st.builds(
        MatchRules,
        temp_tolerance=st.floats(0, 50),
        exptime_tolerance=st.floats(0, 0.5),
        dark_scale=st.booleans(),
    ),
    no_dark=st.booleans(),
    no_flat=st.booleans(),
    allow_missing=st.lists(st.sampled_from(ROLES), unique=True).map(tuple),
    flat_min=st.floats(1e-6, 0.5, exclude_max=True),
    flat_low=st.floats(0.5, 1, exclude_max=True),
    jobs=st.none() | st.integers(1, 1024),
    scheduler=st.none() | st.sampled_from(["local:2", "tcp://host:8786"]),
    redo=st.booleans(),
    min_frames=st.integers(1, 1000),
    mem_limit=st.integers(16 << 20, 1 << 40),
    optional=STEPS,
    no_bpm=st.booleans(),
    qa=st.builds(
        QaOptions,
        enabled=st.booleans(),
        outlier_sigma=st.floats(1, 1e6),
        temp_tolerance=st.floats(0, 100, exclude_min=True),
        flat_min_snr=st.floats(0, 1e6),
        flat_min_fraction=st.floats(0, 1, exclude_max=True),
        flat_max_saturated=st.floats(0, 1),
        flat_max_level=st.floats(0, 1, exclude_min=True),
        tail_fraction=st.floats(0, 1, exclude_min=True),
    ),
)


@EXAMPLES
@given(OPTIONS)
def test_the_options_a_process_run_records_are_read_back_as_given(options: ProcessOptions) -> None:
    recorded = stored(options.arguments())
    assert conforms(recorded, ProcessArguments)
    assert read_arguments(recorded) == options


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.one_of(st.from_type(CalibrationSteps), JSON))
@example(steps={"dark": {"scale": "abc", "status": 5}, "flat": {"flat_min": True}, "overscan": "text"})
@example(steps={"bias": {"status": ["applied"]}, "flat": {"flat_min": "0.5"}, "uncertainty": [1]})
@example(steps={"dark": {"scale": 10**30}, "bias": "applied", "cosmic_rays": {"status": "planned"}})
@example(steps=[1, 2])
def test_the_catalog_reads_calibration_steps_as_python_does(catalog: Catalog, steps: Any) -> None:
    """Planning reads ``calibrations.steps`` in SQL on SQLite (``json_extract``), in Python on PostgreSQL:
    both read every stored value as :func:`ccdcal.lights.plan.compared_steps` does."""
    with catalog.session() as session:
        if session.get(Frame, 1) is None:
            session.add(Frame(id=1, path="/raw/l.fits", size=1, mtime=0.0, status="ok", imagetyp="light"))
            session.flush()
            session.add(Calibration(id=1, frame_id=1, status="current", steps={}))
        session.execute(update(Calibration).where(Calibration.id == 1).values(steps=steps))
    with catalog.reading() as session:
        kept = session.scalar(select(Calibration.steps).where(Calibration.id == 1))
        previous, _used = plan._latest(session)[1]
    assert previous is not None
    assert previous.steps == plan.compared_steps(kept)


# -- a catalog written by every writer, read by every command ----------------------------------------------


def _night(root: Path) -> Path:
    """A simulated night whose frames have an overscan strip (BIASSEC, TRIMSEC), and a light already
    bias-subtracted (far below its master bias: the level warning)."""
    from ccdcal.simulate import simulate_night

    night = simulate_night(root, seed=13, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    for paths in night.files.values():
        for path in paths:
            with fits.open(path, mode="update") as hdul:
                hdul[0].header["BIASSEC"] = "[61:64,1:48]"
                hdul[0].header["TRIMSEC"] = "[1:60,1:48]"
    light = night.files["light"][0]
    with fits.open(light) as hdul:
        header, pixels = hdul[0].header.copy(), np.asarray(hdul[0].data, dtype=np.float64)
    subtracted = pixels.copy()
    subtracted[:, :60] = np.clip(pixels[:, :60] - 480, 0, None)  # not the overscan strip: it kept the bias
    subtracted = subtracted.astype(np.uint16)
    fits.PrimaryHDU(subtracted, header).writeto(light.parent / "Light_subtracted.fits")
    return night.root


def test_every_writer_writes_its_shapes_and_every_command_reads_them(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _night(tmp_path / "raw")
    db = ["--db", db_url]
    folders = ["--masters-dir", str(tmp_path / "masters")]
    runner = CliRunner()
    assert runner.invoke(app, [*db, "ingest", str(raw)]).exit_code == 0
    built = runner.invoke(app, [*db, "masters", "--bpm", "--uncertainty", *folders])
    assert built.exit_code == 0, built.output
    calibrate = worker._calibrate

    def failing(task: Any) -> Any:  # one light fails in its worker: recorded with its planned steps
        if task.path.endswith("Light_002.fits"):
            raise ValueError("the worker failed (a test)")
        return calibrate(task)

    monkeypatch.setattr(worker, "_calibrate", failing)
    options = ["--uncertainty", "--readnoise", "3.5", "--cosmic-rays", "--jobs", "1"]
    processed = runner.invoke(
        app, [*db, "process", *folders, "--output-dir", str(tmp_path / "cal"), *options, "--json"]
    )
    monkeypatch.undo()
    assert processed.exit_code == 1, processed.output
    outcomes = {Path(x["path"]).name: x["outcome"] for x in json.loads(processed.stdout)["lights"]}
    assert outcomes == {
        "Light_001.fits": "calibrated",
        "Light_002.fits": "failed",
        "Light_subtracted.fits": "calibrated",
    }
    with Catalog(db_url) as catalog, catalog.reading() as session:
        calibrations = session.scalars(select(Calibration)).all()
        masters = session.scalars(select(Master)).all()
        runs = session.scalars(select(Run)).all()
    steps = {Path(c.path or "").name: c.steps for c in calibrations}
    assert all(conforms(s, CalibrationSteps) for s in steps.values()), steps
    assert steps["Light_subtracted_cal.fits"]["warnings"][0].startswith("the light's level")
    assert {"overscan", "uncertainty", "cosmic_rays", "bpm"} <= set(steps["Light_001_cal.fits"])
    assert {steps["Light_002_cal.fits"][key]["status"] for key in ("overscan", "uncertainty")} == {"planned"}
    assert all(conforms(m.parameters, MasterParameters) for m in masters), [m.parameters for m in masters]
    assert {m.kind for m in masters} == {"bias", "dark", "flat", "bpm"}
    shapes = {"ingest": IngestRecord, "masters": MastersRecord, "process": ProcessRecord}
    for r in runs:
        assert conforms(r.summary, shapes[r.command]), (r.command, r.summary)
    (process_run,) = [r for r in runs if r.command == "process"]
    assert conforms(process_run.arguments, ProcessArguments)

    reads = [
        ["report", "-o", str(tmp_path / "report.html")],
        ["report", "--run", str(process_run.id), "-o", str(tmp_path / "run.html")],
        ["status", "--json"],
        ["audit"],
        ["masters", "--list", "--all", "--json"],
        *(["provenance", f"calibration:{c.id}", "--json"] for c in calibrations),
        *(["impact", f"master:{m.id}"] for m in masters),
    ]
    for args in reads:
        result = runner.invoke(app, [*db, *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        failed = [f"calibration:{c.id}" for c in calibrations if c.status == "failed"]
        expected = 1 if args[1:2] == failed else 0  # the failed light's output was never written
        assert result.exit_code == expected, (args, result.output)
    page = (tmp_path / "report.html").read_text()
    assert "warning: the light&#x27;s level" in page or "warning: the light's level" in page
