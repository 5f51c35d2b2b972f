"""Planning every light at once (matched with numpy, from rows read once) gives what planning each light
alone would: the same masters, steps, reasons and outputs, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame
from ccdcal.catalog.queries import MatchRules, usable
from ccdcal.ingestion.core import ingest
from ccdcal.lights.matching import Choices, match_light
from ccdcal.lights.options import ProcessOptions, match_options
from ccdcal.lights.pipeline import _rolled_back, dry_run, process
from ccdcal.lights.plan import _latest, compared_steps, paused_gc, plan_lights
from ccdcal.lights.steps import APPLIED, MatchedStep, Step
from ccdcal.simulate import SimulatedNight, simulate_night


@pytest.fixture
def night(tmp_path: Path) -> SimulatedNight:
    return simulate_night(tmp_path / "raw", seed=11, shape=(32, 40), n_light=6)


def options(tmp_path: Path, **changes: Any) -> ProcessOptions:
    values: dict[str, Any] = {"masters_dir": tmp_path / "masters", "output_dir": tmp_path / "calibrated"}
    return ProcessOptions(**(values | {"jobs": 1} | changes))


def one_by_one(catalog: Catalog, opts: ProcessOptions) -> list[dict[str, Any]]:
    """Each light matched alone, by the SQL select of each step (no batch)."""
    with _rolled_back(catalog) as session:
        match = match_options(session, opts)
        lights = session.scalars(select(Frame).where(usable("light")).order_by(Frame.path)).all()
        return [
            {role: step.as_json() for role, step in match_light(session, light, match).steps.items()}
            for light in lights
        ]


def planned(catalog: Catalog, opts: ProcessOptions) -> list[dict[str, Any]]:
    with _rolled_back(catalog) as session:
        reports = plan_lights(session, opts, match_options(session, opts))
        return [
            {role: s.as_json() for role, s in (r.match.steps if r.match else {}).items()} for r in reports
        ]


VARIANTS = [
    {},
    {"rules": MatchRules(dark_scale=True)},
    {"no_bias": True},
    {"rules": MatchRules(temp_tolerance=0.05)},  # some steps missing: the nearest master is named
    {"allow_missing": ("flat",), "no_dark": True},
]


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_every_light_at_once_matches_as_each_light_alone(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path, variant: int
) -> None:
    ingest(catalog, [night.root])
    process(catalog, options(tmp_path))  # masters to match against
    opts = options(tmp_path, **VARIANTS[variant])
    assert planned(catalog, opts) == one_by_one(catalog, opts)


def test_a_second_plan_sees_the_outputs_and_the_masters_of_the_first(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root])
    first = process(catalog, options(tmp_path))
    plan = dry_run(catalog, options(tmp_path))
    assert [light.outcome for light in plan.lights] == ["current"] * 6
    assert [light.output for light in plan.lights] == [light.output for light in first.lights]
    with catalog.session() as session:  # a bias frame marked bad: a new bias, every light again
        bias = session.scalars(select(Frame.id).where(usable("bias")).order_by(Frame.path)).first()
        session.execute(update(Frame).where(Frame.id == bias).values(is_bad=True, bad_reason="x"))
    plan = dry_run(catalog, options(tmp_path))
    assert {light.outcome for light in plan.lights} == {"calibrate"}
    assert all(light.reason and light.reason.startswith("new bias master") for light in plan.lights)
    (Path(first.lights[0].output or "")).unlink()
    with catalog.session() as session:
        session.execute(update(Frame).where(Frame.id == bias).values(is_bad=False, bad_reason=None))
    plan = dry_run(catalog, options(tmp_path))
    assert [light.outcome for light in plan.lights] == ["calibrate"] + ["current"] * 5
    assert plan.lights[0].reason == "output file missing"
    assert plan.lights[0].output == first.lights[0].output


def test_a_planned_light_carries_its_task_when_asked(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root])
    plan = dry_run(catalog, options(tmp_path))
    light = plan.lights[0]
    assert light.task_maker is not None
    task = light.task
    assert task is not None
    assert (task.frame_id, task.output) == (light.frame_id, light.output)
    assert light.task is task
    assert light.task_maker is None
    light.task = None
    assert light.task is None


def test_a_light_whose_output_name_the_file_system_refuses_is_not_calibrated(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    """Names are limited in bytes (255), not characters: an output name of exactly 255 bytes is written;
    one of 257, or a ``_v2`` that passes 255, is refused with the reason, before any file is written."""
    import shutil

    light = night.files["light"]
    exact = "N" * 246 + ".fits"  # output: 246 + len("_cal.fits") = 255 bytes
    too_long = "T" * 248 + ".fits"  # output: 257 bytes
    shutil.copyfile(light[0], light[0].parent / exact)
    (night.root / "OTHER").mkdir()
    shutil.copyfile(light[1], night.root / "OTHER" / exact)  # the same name: its output needs _v2
    shutil.copyfile(light[2], light[2].parent / too_long)
    ingest(catalog, [night.root])
    summary = process(catalog, options(tmp_path))
    by_name = {Path(x.path).name + ("*" if "OTHER" in x.path else ""): x for x in summary.lights}
    assert by_name[exact].outcome == "calibrated"
    assert Path(by_name[exact].output or "").name == "N" * 246 + "_cal.fits"
    for name in (exact + "*", too_long):
        report = by_name[name]
        assert report.outcome == "cannot"
        assert report.reason is not None
        assert "bytes, longer than the 255 the file system of" in report.reason
        assert report.reason.endswith(
            "rename the raw file to a shorter name, ingest it again, and run process again"
        )
    assert "258 bytes" in (by_name[exact + "*"].reason or "")
    assert "257 bytes" in (by_name[too_long].reason or "")
    assert summary.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "calibrated").iterdir() if p.suffix == ".fits") == sorted(
        Path(x.output or "").name for x in summary.lights if x.outcome == "calibrated"
    )


def test_a_plan_makes_the_steps_of_a_light_only_when_asked(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root])
    plan = dry_run(catalog, options(tmp_path))  # never calibrated: nothing to compare with
    matches = [light.match for light in plan.lights if light.match is not None]
    assert len(matches) == 6
    assert all(m._steps is None for m in matches)  # decided, no Step made
    shown = [m.masters() for m in matches]  # from the decisions
    assert all(set(names) == {"bias", "dark", "flat"} for names in shown)
    steps = [m.steps for m in matches]
    assert [m.masters() for m in matches] == shown  # the same from the steps
    assert all(s["dark"].status == APPLIED and s["dark"].delta_time is not None for s in steps)
    assert all(m.steps is s for m, s in zip(matches, steps, strict=True))  # made once


def test_a_matched_step_writes_its_reason_when_read() -> None:
    lazy = MatchedStep("dark", APPLIED, None, None, 0.1234, -5400.0, 2.0)
    told = Step(
        "dark", APPLIED, "nearest match: ΔT +0.12 °C, Δt -1.50 h, scaled x2", None, 0.1234, -5400.0, 2.0
    )
    assert lazy == told
    assert told == lazy
    assert lazy.as_json() == told.as_json()
    assert pickle.loads(pickle.dumps(lazy)) == told
    lazy.reason = "else"
    assert lazy.reason == "else"
    assert lazy != told


def test_the_garbage_collector_is_paused_then_restored() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_choices_answer_a_light_that_is_not_usable_with_a_select(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root])
    process(catalog, options(tmp_path))
    with catalog.session() as session:
        light = session.scalars(select(Frame).where(usable("light")).order_by(Frame.path)).first()
        assert light is not None
        batch = Choices(session, batch=True)
        target = {"id": -1, **{k: getattr(light, k) for k in ("instrument", "xbinning", "ybinning")}}
        target |= {k: getattr(light, k) for k in ("gain", "offset", "readout_mode", "naxis1", "naxis2")}
        target |= {"ccd_temp": light.ccd_temp, "date_obs": light.date_obs}
        alone = Choices(session)
        assert batch.select("bias", target, MatchRules()) is alone.select("bias", target, MatchRules())
        assert batch.pick("bias", {**target, "id": light.id}, MatchRules()) is not None


RECORDED_STEPS: list[dict[str, Any]] = [
    {},
    {
        "bias": {"status": "applied", "reason": "nearest match", "master_id": 1, "delta_temp": 0.1},
        "dark": {"status": "applied", "scale": 2.5, "pinned": False, "path": "/m/d.fits"},
        "flat": {"status": "applied", "flat_min": 0.01, "masked": 3, "norm_value": 1.0, "flat_low": 0.5},
        "saturation": {"status": "applied", "level": 65535.0, "source": "data type", "option": None},
    },
    {
        "bias": {"status": "skipped", "reason": "--no-bias: the darks contain the bias"},
        "dark": {"status": "not_available", "reason": "no dark frames"},
        "flat": {"status": "missing", "reason": "no flat in filter Ha"},
    },
    {
        "dark": {"status": "applied", "scale": 1, "reason": "ΔT +0.10 °C"},
        "flat": {"status": "applied", "flat_min": 0},
        "overscan": {"status": "applied", "method": "median", "biassec": "[1:2,3:4]", "trimsec": None},
        "uncertainty": {"status": "planned", "gain": 1.5, "readnoise": 4.0},
        "cosmic_rays": {"status": "applied", "sigclip": 4.5, "gain": 1.0, "readnoise": None, "n": [1, 2]},
        "warnings": ["a warning"],
        "saturation": {"status": "planned", "level": 40000, "source": "--saturation", "option": 40000},
    },
    {"bias": "not a record", "dark": {"scale": None}, "overscan": None, "uncertainty": {}},
]


def test_a_previous_calibration_is_read_as_planning_compares_it(
    catalog: Catalog, night: SimulatedNight
) -> None:
    """The values the database extracts from ``calibrations.steps`` are those of the whole JSON."""
    ingest(catalog, [night.root])
    with catalog.session() as session:
        lights = session.scalars(select(Frame.id).where(usable("light")).order_by(Frame.id)).all()
        for frame_id, steps in zip(lights, RECORDED_STEPS, strict=False):
            session.add(
                Calibration(frame_id=frame_id, status="current", path=f"/c/{frame_id}.fits", steps=steps)
            )
    with catalog.session() as session:
        latest = _latest(session)
        read = {frame_id: latest[frame_id][0] for frame_id in lights[: len(RECORDED_STEPS)]}
    for (frame_id, previous), steps in zip(read.items(), RECORDED_STEPS, strict=True):
        assert previous is not None
        assert (previous.frame_id, previous.path, previous.status) == (
            frame_id,
            f"/c/{frame_id}.fits",
            "current",
        )
        assert previous.steps == compared_steps(steps)
    assert compared_steps(RECORDED_STEPS[1]) == {
        "bias": {"status": "applied"},
        "dark": {"status": "applied", "scale": 2.5},
        "flat": {"status": "applied", "flat_min": 0.01, "flat_low": 0.5},
        "saturation": {"status": "applied"},  # --saturation not given
    }
    assert compared_steps(RECORDED_STEPS[3])["cosmic_rays"] == RECORDED_STEPS[3]["cosmic_rays"]
    assert compared_steps(RECORDED_STEPS[3])["saturation"] == {"status": "planned", "option": 40000}


@pytest.mark.postgres
def test_a_calibration_committed_while_the_history_is_read_is_left_to_its_run(
    pg_url: str, night: SimulatedNight
) -> None:
    """Another run commits a calibration (and its links) between the two selects of the history: on
    PostgreSQL the second sees it; it is not this plan's and is skipped, not a crash. (A SQLite session
    holds the write lock: nothing is committed meanwhile.)"""
    with Catalog(pg_url) as catalog:
        _committed_meanwhile(catalog, night)


def _committed_meanwhile(catalog: Catalog, night: SimulatedNight) -> None:
    from sqlalchemy import event, insert

    from ccdcal.catalog.models import CalibrationMaster, Master

    ingest(catalog, [night.root])
    with catalog.session() as session:
        light = session.scalars(select(Frame.id).where(usable("light")).order_by(Frame.id)).first()
        master = Master(
            kind="bias",
            path="/m/b.fits",
            sha256="0" * 64,
            identity="i",
            version=1,
            n_inputs=3,
            method="median",
        )
        session.add_all([master, Calibration(frame_id=light, status="current", path="/c/1.fits", steps={})])
    with catalog.session() as session:
        master_id = session.scalars(select(Master.id)).one()
    committed = []

    def another_run(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if committed or not statement.lstrip().startswith("SELECT calibrations.id"):
            return
        with catalog.engine.connect() as other:  # its own connection, committed now
            new = other.execute(
                insert(Calibration).values(frame_id=light, status="current", path="/c/2.fits", steps={})
            ).inserted_primary_key
            other.execute(
                insert(CalibrationMaster).values(calibration_id=new[0], role="bias", master_id=master_id)
            )
            other.commit()
        committed.append(new[0])

    event.listen(catalog.engine, "after_cursor_execute", another_run)
    try:
        with catalog.session() as session:
            latest = _latest(session)
    finally:
        event.remove(catalog.engine, "after_cursor_execute", another_run)
    assert committed
    previous, used = latest[light]
    assert previous is not None
    assert previous.path == "/c/1.fits"  # as the first select saw it; the other run's lights are busy
    assert used == {}
