"""``ccdcal mark-bad``, ``mark-good``, ``impact``, and what the next ``ccdcal process`` does about it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Master, MasterInput, Run
from ccdcal.cli import app
from ccdcal.errors import UsageError
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.simulate import simulate_night
from ccdcal.trace.impact import impact, mark_bad, mark_good
from tests.processed_night import BIAS, DARK, SHAPE, Night, processed_night


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def rows(db: Path, model: type) -> list:
    with Catalog(db) as catalog, catalog.session() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def test_a_bad_raw_bias_rebuilds_exactly_what_it_touched(tmp_path: Path, runner: CliRunner) -> None:
    """Two cameras set-ups (gain 120 and 200): a bias of the first marked bad. Its bias master, the darks
    and flats made with it, and every light calibrated with those are rebuilt; the other set-up is not."""
    first = simulate_night(
        tmp_path / "raw" / "g120", seed=3, shape=SHAPE, n_bias=4, n_dark=3, n_flat=3, n_light=2
    )
    second = simulate_night(tmp_path / "raw" / "g200", seed=4, shape=SHAPE, n_dark=3, n_flat=3, n_light=2)
    for files in second.files.values():
        for path in files:
            fits.setval(path, "GAIN", value=200)
    db = tmp_path / "ccdcal.db"
    options = ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "calibrated", jobs=1)
    with Catalog(db) as catalog:
        ingest(catalog, [tmp_path / "raw"])
        assert process(catalog, options).exit_code == 0
    masters_before = {m.id: m for m in rows(db, Master)}
    calibrations_before = {c.id: c for c in rows(db, Calibration)}
    assert len(masters_before) == 14
    assert len(calibrations_before) == 4
    light_of = {f.id: f.path for f in rows(db, Frame)}
    g120 = {i for i, m in masters_before.items() if "_g120_" in m.path}
    first_lights = {c.id for c in calibrations_before.values() if "/g120/" in light_of[c.frame_id]}

    bad = first.root / "BIAS" / "Bias_002.fits"
    with Catalog(db) as catalog:
        marked = mark_bad(catalog, str(bad), "hot column")
    assert marked.headline() == (
        f"frame:{marked.target.id} {bad}: marked bad; 7 current masters and 2 current calibrated files "
        "downstream: `ccdcal process` rebuilds and recalibrates them"
    )
    shown = runner.invoke(app, ["--db", str(db), "impact", str(bad)])
    assert shown.exit_code == 0
    lines = shown.stdout.splitlines()
    assert lines[0] == (
        f"frame:{marked.target.id} {bad} (marked bad: hot column): 7 masters (7 current) and 2 calibrated "
        "files (2 current) downstream"
    )
    assert lines[1] == "Masters (7):"
    assert lines[2] == f"  current        master:{min(g120)} {tmp_path / 'masters' / BIAS}"
    assert lines[9] == "Calibrated files (2):"
    assert {m.id for m in marked.impact.current_masters()} == g120
    assert {c.id for c in marked.impact.current_calibrations()} == first_lights
    assert [m.kind for m in marked.impact.masters] == ["bias", "dark", "dark", "dark", "dark", "flat", "flat"]

    with Catalog(db) as catalog:
        summary = process(catalog, options)
    assert summary.exit_code == 0
    masters_after = {m.id: m for m in rows(db, Master)}
    superseded = {i for i, m in masters_after.items() if m.status == "superseded"}
    assert superseded == g120  # rebuilt exactly those, nothing else
    assert {r.path for r in summary.masters_of("built")} == {
        m.path for i, m in masters_after.items() if i not in masters_before
    }
    assert all(masters_after[i].status == "current" for i in set(masters_before) - g120)
    assert sorted(light.path for light in summary.of("calibrated")) == sorted(
        light_of[calibrations_before[i].frame_id] for i in first_lights
    )
    assert len(summary.of("current")) == 2  # the gain-200 lights: untouched
    after = {c.id: c for c in rows(db, Calibration)}
    assert {i for i, c in after.items() if c.status == "superseded"} == first_lights
    for i in first_lights:
        assert (after[i].superseded_reason or "").startswith(
            "new bias master master_bias_b2x2_g120_sNA_C-10_v2.fits"
        )
    old_bias = masters_before[min(g120)]
    assert masters_after[old_bias.id].superseded_reason == "input Bias_002.fits marked bad (hot column)"
    new_bias = next(
        m for m in masters_after.values() if m.kind == "bias" and m.status == "current" and "g120" in m.path
    )
    with Catalog(db) as catalog:
        with catalog.session() as session:
            query = select(MasterInput.frame_id).where(MasterInput.master_id == new_bias.id)
            used = set(session.scalars(query))
        after_impact = impact(catalog, str(bad))
    assert marked.target.id not in used
    assert len(used) == 3
    assert after_impact.current_masters() == []  # only the old versions were made from it
    assert after_impact.current_calibrations() == []
    with Catalog(db) as catalog:
        assert process(catalog, options).nothing_done


def test_a_bad_master_is_not_used_until_marked_good(db_url: str, tmp_path: Path, runner: CliRunner) -> None:
    night = processed_night(tmp_path, db=db_url)
    dark = night.masters / DARK[60]
    db = ["--db", str(night.db)]
    result = runner.invoke(app, [*db, "mark-bad", str(dark), "--reason", "stripes"])
    assert result.exit_code == 0, result.output
    (master,) = [m for m in rows(night.db, Master) if m.path == str(dark)]
    (light,) = [c for c in rows(night.db, Calibration) if "Light_001" in (c.path or "")]
    assert result.stdout == (
        f"master:{master.id} {dark}: marked bad; 0 current masters and 1 current calibrated files "
        "downstream: `ccdcal process` rebuilds and recalibrates them\n"
    )
    summary = night.process()
    assert summary.exit_code == 1
    (skipped,) = summary.masters_of("skipped")
    assert skipped.reason == (
        f"the dark master {DARK[60]} is marked bad (stripes) and its inputs are unchanged: mark the bad raw "
        "frames with `ccdcal mark-bad`, add new ones, or `ccdcal mark-good` it"
    )
    (cannot,) = summary.of("cannot")
    assert cannot.path == str(night.raw("Light_001.fits"))
    assert cannot.reason is not None
    assert cannot.reason.startswith("no dark at 60 s, ")
    assert cannot.reason.endswith(f"; {DARK[60]} is marked bad (stripes))")
    assert [c.status for c in rows(night.db, Calibration)] == ["current", "current"]  # kept as they were

    good = runner.invoke(app, [*db, "mark-good", f"master:{master.id}", "--reason", "stripes were the sky"])
    assert (good.exit_code, good.stdout) == (
        0,
        f"master:{master.id} {dark}: marked good; `ccdcal process` may use it again\n",
    )
    again = night.process()
    assert again.nothing_done, again.headline()
    assert rows(night.db, Calibration)[0].id == light.id


def test_a_bad_master_bias_blocks_what_was_made_with_it(db_url: str, tmp_path: Path) -> None:
    night = processed_night(tmp_path, db=db_url)
    with Catalog(night.db) as catalog:
        marked = mark_bad(catalog, str(night.masters / BIAS), "light leak")
    assert len(marked.impact.current_masters()) == 6  # 4 darks and 2 flats made with it
    assert len(marked.impact.current_calibrations()) == 2
    summary = night.process()
    assert summary.exit_code == 1
    assert [m.outcome for m in summary.masters] == ["skipped"] * 7
    assert summary.masters[1].reason is not None
    assert summary.masters[1].reason.startswith("no master bias matches the dark group")
    for light in summary.of("cannot"):
        assert light.match is not None
        step = light.match.steps["bias"]
        assert step.reason.startswith("no bias at ")
        assert step.reason.endswith(
            f"(no usable bias master for this camera; {BIAS} is marked bad (light leak))"
        )
    assert len(summary.of("cannot")) == 2


def test_mark_bad_errors_and_runs(db_url: str, tmp_path: Path, runner: CliRunner) -> None:
    night = processed_night(tmp_path, db=db_url)
    db = ["--db", str(night.db)]
    output = night.calibrated / "Light_001_cal.fits"
    refused = runner.invoke(app, [*db, "mark-bad", str(output), "--reason", "ugly"])
    assert (refused.exit_code, refused.stderr) == (
        2,
        f"Error: {output} is a calibrated file: mark its raw light (frame:N) or one of its masters "
        "(`ccdcal provenance calibration:1` shows them) bad instead\n",
    )
    empty = runner.invoke(app, [*db, "mark-bad", "frame:1", "--reason", "  "])
    assert (empty.exit_code, empty.stderr) == (
        2,
        "Error: --reason must say why the file is bad (it is kept in the catalog)\n",
    )
    assert runner.invoke(app, [*db, "mark-bad", "frame:1"]).exit_code == 2  # --reason is required
    unknown = runner.invoke(app, [*db, "impact", "frame:999"])
    assert (unknown.exit_code, unknown.stderr) == (
        2,
        "Error: frame:999: no frame with id 999 in the catalog\n",
    )
    first = runner.invoke(app, [*db, "mark-bad", "frame:1", "--reason", "satellite"])
    second = runner.invoke(app, [*db, "mark-bad", "frame:1", "--reason", "satellite trail"])
    assert first.exit_code == second.exit_code == 0
    assert second.stdout == f"frame:1 {night.raw('Bias_001.fits')}: already marked bad; reason updated\n"
    (frame,) = [f for f in rows(night.db, Frame) if f.id == 1]
    assert (frame.is_bad, frame.bad_reason) == (True, "satellite trail")
    never = runner.invoke(app, [*db, "mark-good", "frame:2"])
    assert never.stdout == f"frame:2 {night.raw('Bias_002.fits')}: was not marked bad\n"
    runs = rows(night.db, Run)
    assert [r.command for r in runs[2:]] == ["mark-bad", "mark-bad", "mark-good"]
    assert runs[3].arguments == {
        "target": "frame:1",
        "path": str(night.raw("Bias_001.fits")),
        "reason": "satellite trail",
    }
    assert runs[3].summary == {
        "was_bad": True,
        "overrode": None,
        "masters_downstream": 7,
        "calibrations_downstream": 2,
    }
    data = json.loads(runner.invoke(app, [*db, "impact", "frame:1", "--json"]).stdout)
    assert list(data) == ["target", "masters", "calibrations"]
    assert data["target"] == {
        "ref": "frame:1",
        "kind": "frame",
        "id": 1,
        "path": str(night.raw("Bias_001.fits")),
        "is_bad": True,
        "bad_reason": "satellite trail",
    }
    assert list(data["masters"][0]) == ["id", "kind", "path", "status", "is_bad"]
    assert list(data["calibrations"][0]) == ["id", "light_id", "light_path", "path", "status"]
    with Catalog(night.db) as catalog, pytest.raises(UsageError):
        mark_good(catalog, "calibration:1")


def test_a_light_marked_bad_lists_its_calibrations(db_url: str, tmp_path: Path) -> None:
    night: Night = processed_night(tmp_path, db=db_url)
    with Catalog(night.db) as catalog:
        result = mark_bad(catalog, str(night.raw("Light_002.fits")), "clouds")
    assert result.impact.masters == []
    assert [(c.light_path, c.status) for c in result.impact.calibrations] == [
        (str(night.raw("Light_002.fits")), "current")
    ]
    summary = night.process()
    assert [light.path for light in summary.lights] == [str(night.raw("Light_001.fits"))]
    assert summary.nothing_done


@pytest.mark.postgres
def test_mark_bad_impact_and_provenance_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    from ccdcal.trace.provenance import provenance

    night = processed_night(tmp_path, db=pg_url)
    with Catalog(pg_url) as catalog:
        marked = mark_bad(catalog, str(night.raw("Dark_300s_002.fits")), "cosmic rays")
        tree = provenance(catalog, str(night.calibrated / "Light_002_cal.fits"))
    assert [Path(m.path).name for m in marked.impact.current_masters()] == [DARK[300]]
    assert [Path(c.light_path).name for c in marked.impact.current_calibrations()] == ["Light_002.fits"]
    assert tree.exit_code == 0
    assert [(n.role, n.name) for n in tree.tree.children] == [
        ("light", "Light_002.fits"),
        ("bias", BIAS),
        ("dark", DARK[300]),
        ("flat", "master_flat_b2x2_g120_sNA_C-10_Ha.fits"),
    ]
    (bad,) = [n for n in tree.tree.walk() if n.name == "Dark_300s_002.fits"]
    assert (bad.is_bad, bad.bad_reason) == (True, "cosmic rays")
    summary = night.process()  # 2 darks of 300 s left: too few for a new master; the old one is not used
    (skipped,) = summary.masters_of("skipped")
    assert (
        skipped.reason
        == "2 dark frames in group ZWO ASI294MM Pro b2x2 g120 C-10 300s: fewer than --min-frames 3"
    )
    (cannot,) = summary.of("cannot")
    assert Path(cannot.path).name == "Light_002.fits"
    assert cannot.reason is not None
    assert cannot.reason.endswith(f"; {DARK[300]} has input Dark_300s_002.fits marked bad (cosmic rays))")
    assert [light.outcome for light in summary.lights] == ["current", "cannot"]
