"""``ccdcal status`` on a large catalog: the pending work counted from the catalog (forced here on a small
one), in the same JSON keys as the plan, and the lines that point to ``ccdcal process --dry-run``."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import ccdcal.status as status_module
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Run
from ccdcal.catalog.queries import usable
from ccdcal.catalog.states import FAILED, MASTER_REPLACED, NOT_CALIBRATED, RAW_CHANGED
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.simulate import SimulatedNight, simulate_night
from ccdcal.status import (
    FRAMES_CHANGED,
    NO_MASTER,
    catalog_status,
    decision_line,
    frame_qa_lines,
    pending_lines,
)
from tests.frame_qa_rows import B5_REASON, D3_KEPT, T0, add_frame_qa_rows

KEYS = {"options_of_run", "masters_to_build", "lights", "current", "planned", "counts"}


@pytest.fixture
def night(tmp_path: Path) -> SimulatedNight:
    return simulate_night(tmp_path / "raw", seed=7, shape=(32, 40), n_light=3)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every catalog counts, as one beyond :data:`ccdcal.status.PLAN_LIMIT` does."""
    monkeypatch.setattr(status_module, "PLAN_LIMIT", 0)


def options(tmp_path: Path) -> ProcessOptions:
    return ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "calibrated", jobs=1)


def pending(catalog: Catalog) -> dict[str, Any]:
    return dict(catalog_status(catalog)["pending"])


def test_a_small_catalog_shows_the_plan(catalog: Catalog, night: SimulatedNight) -> None:
    ingest(catalog, [night.root])
    found = pending(catalog)
    assert found["planned"] is True
    assert set(found) >= KEYS
    assert found["counts"] == {"calibrate": 3, "current": 0}
    assert pending_lines(found)[0].startswith("Pending (what `ccdcal process` would do now")


@pytest.mark.usefixtures("counted")
def test_before_anything_is_built(catalog: Catalog, night: SimulatedNight) -> None:
    ingest(catalog, [night.root])
    found = pending(catalog)
    assert KEYS | {"groups_to_build", "listed"} <= set(found)
    assert (found["planned"], found["masters_to_build"], found["current"]) == (False, [], 0)
    assert found["counts"] == {NOT_CALIBRATED: 3}
    assert found["listed"] is True
    assert [(Path(x["path"]).name, x["outcome"], x["reason"]) for x in found["lights"]] == [
        (f"Light_00{i}.fits", "calibrate", NOT_CALIBRATED) for i in (1, 2, 3)
    ]
    groups = catalog_status(catalog)["groups"]
    assert len(found["groups_to_build"]) == sum(len(groups[kind]) for kind in ("bias", "dark", "flat"))
    assert {group["reason"] for group in found["groups_to_build"]} == {NO_MASTER}
    lines = pending_lines(found)
    assert lines[0].startswith("Pending (counted from the catalog; `ccdcal process --dry-run`")
    assert f"    3: {NOT_CALIBRATED}" in lines
    assert lines[-1].endswith(f"Light_003.fits: {NOT_CALIBRATED}")


@pytest.mark.usefixtures("counted")
def test_the_lights_are_counted_in_a_second_connection_meanwhile(
    catalog: Catalog, night: SimulatedNight, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lights are counted by state in a thread of its own, the same counts (on SQLite too: both
    connections only read, neither takes the write lock)."""
    ingest(catalog, [night.root])
    threads: list[str] = []
    count = status_module.light_state_counts

    def spy(counted_catalog: Catalog) -> dict[str, int]:
        threads.append(threading.current_thread().name)
        return count(counted_catalog)

    monkeypatch.setattr(status_module, "light_state_counts", spy)
    found = pending(catalog)
    assert threads == ["ccdcal-status_0"]
    assert found["counts"] == {NOT_CALIBRATED: 3}
    assert found == status_module.pending_status(catalog, catalog_status(catalog)["groups"])


@pytest.mark.usefixtures("counted")
def test_after_a_run_then_changes(catalog: Catalog, night: SimulatedNight, tmp_path: Path) -> None:
    ingest(catalog, [night.root])
    run = process(catalog, options(tmp_path))
    found = pending(catalog)
    assert (found["options_of_run"], found["groups_to_build"], found["counts"]) == (run.run_id, [], {})
    assert (found["current"], found["lights"]) == (3, [])
    assert pending_lines(found) == ["Pending: nothing (3 lights calibrated)"]

    with catalog.session() as session:
        lights = session.scalars(select(Frame).where(usable("light")).order_by(Frame.path)).all()
        bias = session.scalars(select(Frame.id).where(usable("bias"))).first()
        session.execute(update(Frame).where(Frame.id == lights[0].id).values(sha256="0" * 64))
        session.execute(update(Frame).where(Frame.id == bias).values(is_bad=True, bad_reason="hot"))
    found = pending(catalog)
    assert found["counts"] == {RAW_CHANGED: 1, MASTER_REPLACED: 2}
    assert [x["reason"] for x in found["lights"]] == [RAW_CHANGED, MASTER_REPLACED, MASTER_REPLACED]
    assert [(g["kind"], g["reason"]) for g in found["groups_to_build"]] == [("bias", FRAMES_CHANGED)]

    add_failure(catalog, lights[2].id)
    found = pending(catalog)
    assert found["counts"][FAILED] == 1
    (last,) = [x for x in found["lights"] if x["outcome"] == "failed"]
    assert last["reason"] == f"{FAILED}: disk full"
    with catalog.session() as session:  # the latest calibration found either way, the same states
        by_form = []
        for grouped in (False, True):
            states = status_module.light_states(grouped)
            by_form.append(session.execute(select(states).order_by(states.c.id)).all())
    assert by_form[0] == by_form[1]
    assert {row.state for row in by_form[0]} == {RAW_CHANGED, MASTER_REPLACED, FAILED}


@pytest.mark.usefixtures("counted")
def test_too_many_to_list(catalog: Catalog, night: SimulatedNight) -> None:
    ingest(catalog, [night.root])
    found = dict(status_module.pending_status(catalog, catalog_status(catalog)["groups"], limit=2))
    assert (found["listed"], found["lights"], found["counts"]) == (False, [], {NOT_CALIBRATED: 3})
    assert pending_lines(found)[-1] == (
        "  (too many to list here: `ccdcal process --dry-run` lists them, with their masters)"
    )


def add_failure(catalog: Catalog, frame_id: int) -> None:
    """A newer, failed calibration of one light (its last attempt)."""
    with catalog.session() as session:
        session.add(Calibration(frame_id=frame_id, status="failed", error="disk full", steps={}))


@pytest.mark.parametrize(
    "arguments",
    [
        {"temp_tolerance": "warm"},
        {"overscan": "sideways"},
        {"temp_tolerance": None, "jobs": 0},
        ["not", "an object"],
    ],
    ids=["wrong-type", "refused-value", "refused-count", "not-an-object"],
)
def test_status_plans_with_the_defaults_when_the_last_runs_options_cannot_be_used(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path, arguments: Any
) -> None:
    """A process run's ``runs.arguments`` ccdcal did not write (a row edited by hand, another program's):
    the pending work is planned with the default options, and says so (``options_of_run`` is ``None``)."""
    ingest(catalog, [night.root])
    assert process(catalog, options(tmp_path)).exit_code == 0
    with catalog.session() as session:
        session.execute(update(Run).where(Run.command == "process").values(arguments=arguments))
    found = pending(catalog)
    assert found["options_of_run"] is None
    assert found["counts"] == {"calibrate": 3, "current": 0}  # the default folders hold no output


# -- frame QA (status -v) ----------------------------------------------------------------------------------

QA_KINDS_SHOWN = {
    "bias": {"frames": 6, "measured": 5, "set_aside": 1, "kept_by_person": 0},
    "dark": {"frames": 3, "measured": 3, "set_aside": 0, "kept_by_person": 1},
    "flat": {"frames": 3, "measured": 2, "set_aside": 0, "kept_by_person": 0},
}
QA_LINES = [
    "Frame QA:",
    "  bias: 5 of 6 frames measured, 1 set aside",
    f"    frame:5 b5.fits set aside: {B5_REASON} (outlier_level rule)",
    "  dark: 3 of 3 frames measured, none set aside, 1 kept by a person",
    f"    frame:10 d3.fits kept by a person, over the outlier_noise rule: {D3_KEPT}",
    "  flat: 2 of 3 frames measured, none set aside",
]


def test_status_shows_the_frame_qa_when_asked(catalog: Catalog) -> None:
    """Per kind the usable frames measured and set aside now; the frames set aside (not b6, marked bad
    since; not b7, judged in an older content; not f3, kept again by the rules) and the person's
    override, each with its rule and reason."""
    add_frame_qa_rows(catalog)
    found = catalog_status(catalog, frame_qa=True)["frame_qa"]
    assert found["kinds"] == QA_KINDS_SHOWN
    assert [
        {k: f[k] for k in ("frame_id", "kind", "decision", "decided_by", "rule")} for f in found["frames"]
    ] == [
        {
            "frame_id": 5,
            "kind": "bias",
            "decision": "set_aside",
            "decided_by": "rule",
            "rule": "outlier_level",
        },
        {"frame_id": 10, "kind": "dark", "decision": "kept", "decided_by": "person", "rule": "outlier_noise"},
    ]
    b5, d3 = found["frames"]
    assert (b5["path"], b5["reason"], b5["run_id"], b5["decided_at"]) == (
        "/raw/b5.fits",
        B5_REASON,
        2,
        "2026-12-01 21:01:00",
    )
    assert (d3["reason"], d3["numbers"], d3["run_id"]) == (D3_KEPT, {}, 3)
    json.dumps(found, allow_nan=False)  # JSON-ready as it is
    assert frame_qa_lines(found) == QA_LINES


def test_status_without_frame_qa_reads_none_of_it(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    add_frame_qa_rows(catalog)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the frame QA was read")

    monkeypatch.setattr(status_module, "frame_qa_status", refused)
    assert "frame_qa" not in catalog_status(catalog)


def test_status_frame_qa_as_the_catalog_stood(catalog: Catalog) -> None:
    """--as-of: the decisions and statistics of then (here: before any frame was measured or judged)."""
    add_frame_qa_rows(catalog)
    catalog.as_of = T0 + dt.timedelta(minutes=30)
    found = catalog_status(catalog, frame_qa=True)["frame_qa"]
    assert found["frames"] == []
    assert {kind: (c["measured"], c["set_aside"]) for kind, c in found["kinds"].items()} == {
        "bias": (0, 0),
        "dark": (0, 0),
        "flat": (0, 0),
    }


def test_frame_qa_lines_of_a_person_who_set_a_frame_aside() -> None:
    frame = {"frame_id": 3, "path": "/raw/b3.fits", "decision": "set_aside", "decided_by": "person"}
    assert decision_line(frame | {"rule": "person", "reason": "cosmic shower"}) == (
        "frame:3 b3.fits set aside by a person: cosmic shower"
    )
    assert decision_line(frame | {"rule": "light_leak", "reason": None}) == (
        "frame:3 b3.fits set aside by a person: (light_leak rule)"
    )
    kept = frame | {"decision": "kept", "rule": "person", "reason": None}
    assert decision_line(kept) == "frame:3 b3.fits kept by a person"
    nothing = {
        "kinds": {"bias": {"frames": 0, "measured": 0, "set_aside": 0, "kept_by_person": 0}},
        "frames": [],
    }
    assert frame_qa_lines(nothing) == ["Frame QA:", "  no calibration frames"]


@pytest.mark.usefixtures("counted")
def test_a_master_group_counts_the_frames_it_set_aside(catalog: Catalog) -> None:
    """Counted (a large catalog): a master made of its group's frames but those the frame QA set aside
    is the group's master as its frames are now."""
    add_frame_qa_rows(catalog)
    reasons = {g["kind"]: g["reason"] for g in pending(catalog)["groups_to_build"]}
    assert reasons == {"bias": FRAMES_CHANGED}  # b7: neither combined nor set aside
    with catalog.session() as session:
        session.execute(update(Frame).where(Frame.id == 7).values(is_bad=True, bad_reason="stars"))
    assert pending(catalog)["groups_to_build"] == []  # 4 combined + b5 set aside = its 5 frames
