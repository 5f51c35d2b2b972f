"""The report's bias level and dark current over time: what each point is made of, on the simulated night
against the simulator's truth, and on hand-made masters for every rule (per build date, the newest master
of each exposure, overscan levels, older masters, notes), down to the page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master
from ccdcal.ingestion.core import ingest
from ccdcal.kernels.dark import fit_dark_current
from ccdcal.masters.build import build_masters
from ccdcal.masters.groups import MasterOptions
from ccdcal.report import ReportScope, gather
from ccdcal.report.data import ReportData, select_drift, select_masters
from ccdcal.report.html import Images, _drift, measured, render
from ccdcal.report.levels import OVERSCAN, DriftPoint, DriftSeries
from ccdcal.report.plots import drift_plot
from ccdcal.simulate import simulate_night
from ccdcal.trace.impact import mark_bad
from tests.conftest import real_set

# -- the simulated night -----------------------------------------------------------------------------------


def test_the_dark_current_of_the_simulated_night_is_the_simulators_within_5_percent(
    sqlite_catalog: Catalog, tmp_path: Path
) -> None:
    """The acceptance test of the issue: from every set of dark groups the report fits — the night as
    built, and again after a bias frame is dropped (the demo's case: its 5 s master's median jumped from
    0 to 0.5 ADU, the old plot from 0 to 0.1 ADU/s) — the dark current is the simulator's within 5 %."""
    night = simulate_night(tmp_path / "raw", seed=0)
    truth = night.truth["dark_current"] / night.truth["egain"]  # e-/s/px over e-/ADU: 0.08 ADU/s
    options = MasterOptions(masters_dir=tmp_path / "masters", kinds=("bias", "dark"))
    ingest(sqlite_catalog, [night.root])
    first = build_masters(sqlite_catalog, options)
    with sqlite_catalog.session() as session:  # the first build a day earlier: one point per build date
        for master in session.scalars(select(Master).where(Master.run_id == first.run_id)):
            master.created_at -= dt.timedelta(days=1)
        bias_frame = session.scalars(select(Frame.path).where(Frame.imagetyp == "bias")).first()
    assert bias_frame is not None
    mark_bad(sqlite_catalog, bias_frame, "dropped, as in the demo")
    second = build_masters(sqlite_catalog, options)
    assert [r.outcome for r in second.reports] == ["built"] * 5  # a new bias, so new darks
    data = gather(sqlite_catalog, ReportScope())

    [bias, dark] = data.drift
    assert [p.masters for p in dark.points] == [
        tuple(r.master_id for r in run.reports if r.kind == "dark") for run in (first, second)
    ]
    for point in dark.points:
        assert point.source == "4 exposures (2, 5, 60, 300 s)"
        assert point.resolved
        assert point.value == pytest.approx(truth, rel=0.05), (point.value, point.error, point.notes)
        assert point.error is not None
        assert 0 < point.error < 0.02 * truth
    assert dark.points[0].built == dark.points[1].built - dt.timedelta(days=1)
    assert dark.points[0].when == dark.points[1].when  # the same dark frames
    assert [p.source for p in bias.points] == ["clipped mean", "clipped mean"]
    for point in bias.points:
        assert point.error is not None
        assert point.value == pytest.approx(night.truth["bias_level"], abs=5 * point.error)


# -- hand-made masters -------------------------------------------------------------------------------------

DAYS = [dt.datetime(2026, 3, d, 9) for d in (11, 13, 15)]
NIGHT = dt.datetime(2026, 3, 10, 20)


def add_master(session: Any, kind: str, built: dt.datetime, **values: Any) -> Master:
    """A master row as ``ccdcal masters`` writes it; ``level=(mean, error)`` is recorded as its level."""
    level = values.pop("level", None)
    parameters = values.pop("parameters", {})
    if level is not None:
        parameters["level"] = {"mean": level[0], "error": level[1], "std": 1.0, "pixels": 100}
        parameters["level"] |= {"sigma": 3.0, "maxiters": 5}
    fields: dict[str, Any] = {
        "xbinning": 1,
        "ybinning": 1,
        "gain": 100.0,
        "temp_key": -10.0,
        "status": "current",
        "includes_bias": False,
        "date_obs_mean": NIGHT,
        "stat_median": 0.0,
    } | values
    number = session.scalar(select(Master.id).order_by(Master.id.desc()).limit(1)) or 0
    master = Master(
        kind=kind,
        path=f"/m/{kind}_{number + 1}.fits",
        sha256=f"{number + 1:064d}",
        identity=f"{number + 1:064d}",
        n_inputs=5,
        method="sigma_clipped_median",
        created_at=built,
        parameters=parameters,
        **fields,
    )
    session.add(master)
    session.flush()
    return master


def overscan(*levels: float) -> dict[str, Any]:
    inputs = [{"frame_id": i, "level": level} for i, level in enumerate(levels, 1)]
    return {
        "steps": {"uncertainty": False, "overscan": {"mode": "auto", "method": "median", "inputs": inputs}}
    }


def test_the_bias_level_per_build_date_overscan_clipped_mean_or_median(catalog: Catalog) -> None:
    with catalog.session() as session:
        old = add_master(session, "bias", DAYS[0], stat_median=500.0, status="superseded")  # older ccdcal
        add_master(session, "bias", DAYS[1], level=(501.0, 0.01), status="superseded")  # replaced that day
        same_day = add_master(session, "bias", DAYS[1] + dt.timedelta(hours=3), level=(500.5, 0.01))
        same_day.status = "superseded"
        scanned = add_master(
            session, "bias", DAYS[2], level=(1.5, 0.02), parameters=overscan(1000.0, 1002.0, 1004.0)
        )
        add_master(session, "bias", DAYS[2], level=(499.0, 0.01), is_bad=True)  # marked bad: no point
        add_master(session, "bias", DAYS[0], level=(800.0, 0.01), temp_key=-20.0)  # not shown
        add_master(session, "dark", DAYS[0], level=(530.0, 0.1), exptime=300.0, includes_bias=True)
        masters = select_masters(session, ReportScope(), set())
        masters = [m for m in masters if m.keys["temp_key"] == -10.0]
        series = select_drift(session, masters)
    assert [(s.kind, s.label) for s in series] == [("bias", "b1x1 g100 C-10")]  # the darks hold the bias
    points = series[0].points
    assert [(p.built, p.value, p.error, p.source, p.masters) for p in points] == [
        (DAYS[0].date(), 500.0, None, "median", (old.id,)),
        (DAYS[1].date(), 500.5, 0.01, "clipped mean", (same_day.id,)),
        (DAYS[2].date(), 1003.5, pytest.approx((4 / 3 + 0.02**2) ** 0.5), OVERSCAN, (scanned.id,)),
    ]
    assert points[0].notes == (
        "built by an older ccdcal, which recorded no clipped mean: its median is shown",
    )
    assert points[1].notes == ()
    assert points[2].notes == (
        "overscan level 1002 ± 1.2 ADU subtracted from its 3 inputs (their mean)",
        "the master holds 1.5 ± 0.02 ADU more (its clipped mean)",
    )


def test_the_dark_current_per_build_date_from_each_exposures_newest_master(catalog: Catalog) -> None:
    """Day 1 builds 60 s and 300 s darks; day 2 only a new 300 s one: its point fits day 1's 60 s dark
    with day 2's 300 s dark. Darks with the bias, marked bad or of an older ccdcal are left out."""
    with catalog.session() as session:
        d60 = add_master(session, "dark", DAYS[0], exptime=60.0, level=(4.8 + 0.5, 0.01))
        d300 = add_master(
            session, "dark", DAYS[0], exptime=300.0, level=(24.0 + 0.5, 0.02), status="superseded"
        )
        add_master(session, "dark", DAYS[0], exptime=120.0)  # an older ccdcal's: no level
        add_master(session, "dark", DAYS[0], exptime=600.0, level=(48.0, 0.02), includes_bias=True)
        add_master(session, "dark", DAYS[1], exptime=600.0, level=(90.0, 0.02), is_bad=True)
        new300 = add_master(
            session,
            "dark",
            DAYS[1],
            exptime=300.0,
            level=(26.0, 0.02),
            date_obs_mean=NIGHT + dt.timedelta(days=2),
        )
        series = select_drift(session, select_masters(session, ReportScope(), set()))
    [dark] = series
    assert (dark.kind, dark.label, dark.notes) == ("dark", "b1x1 g100 C-10", [])
    first, second = dark.points
    expected = fit_dark_current([60.0, 300.0], [5.3, 24.5], [0.01, 0.02])
    assert (first.value, first.error, first.built) == (expected.rate, expected.error, DAYS[0].date())
    assert first.value == pytest.approx(0.08)
    assert (first.masters, first.when, first.source) == ((d60.id, d300.id), NIGHT, "2 exposures (60, 300 s)")
    assert first.notes == (
        *expected.notes,
        f"offset at zero exposure {expected.offset:+.3g} ± {expected.offset_error:.2g} ADU",
        "1 master dark built by an older ccdcal left out (no clipped mean recorded)",
    )
    assert second.masters == (d60.id, new300.id)
    assert second.value == pytest.approx((26.0 - 5.3) / 240)
    assert second.when == NIGHT + dt.timedelta(days=1)  # the mean DATE-OBS of the two darks
    assert second.built == DAYS[1].date()


def test_one_exposure_short_darks_and_darks_without_a_level_say_so(catalog: Catalog) -> None:
    with catalog.session() as session:
        add_master(session, "dark", DAYS[0], exptime=300.0, level=(24.0, 0.02))
        add_master(session, "dark", DAYS[0], exptime=2.0, level=(0.13, 0.009), gain=200.0)
        add_master(session, "dark", DAYS[0], exptime=5.0, level=(0.31, 0.009), gain=200.0)
        add_master(session, "dark", DAYS[0], exptime=300.0, gain=300.0)  # an older ccdcal's
        add_master(session, "bias", DAYS[0], level=(500.0, 0.01))
        data = select_drift(session, select_masters(session, ReportScope(), set()))
    assert [(s.kind, s.label, len(s.points)) for s in data] == [  # in the order of the masters shown
        ("bias", "b1x1 g100 C-10", 1),
        ("dark", "b1x1 g200 C-10", 1),  # its 2 s dark is shown first
        ("dark", "b1x1 g100 C-10", 1),
        ("dark", "b1x1 g300 C-10", 0),
    ]
    short, one, older = data[1:]
    assert one.points[0].value == pytest.approx(0.08)
    assert one.points[0].resolved
    assert one.points[0].notes == (
        "one exposure (300 s): the rate is its level / exposure, which cannot be separated from a residual "
        "bias offset",
    )
    assert not short.points[0].resolved
    assert short.points[0].notes[-2].startswith("not resolved: the longest dark (5 s) holds 0.3")
    assert older.notes == [
        "dark current not measured: its 1 bias-subtracted master darks were built by an older ccdcal, which "
        "recorded no clipped mean; the next master darks built will have one"
    ]
    page = _drift_page(data)
    assert "Bias level: 1 bias group, 1 point. A single point: nothing to compare it with yet" in page
    assert (
        "Dark current: slope of the master darks&#x27; level against exposure: 2 camera set-ups, 2 points. "
        in page
    )
    assert "A single point for b1x1 g200 C-10; b1x1 g100 C-10" in page
    assert "0.080000 ± 6.7e-05 ADU/s</td>" in page
    assert "(not resolved)</td>" in page
    assert "one exposure (300 s): the rate is its level / exposure" in page
    assert "b1x1 g300 C-10: dark current not measured" in page
    assert page.count("<img ") == 2


def _drift_page(series: list[DriftSeries]) -> str:
    """The report's levels section of ``series``, with its plots."""
    plots = {
        kind: drift_plot(kind, [s for s in series if s.kind == kind and s.points])
        for kind in ("bias", "dark")
    }
    data = ReportData("c.db", ReportScope(), dt.datetime(2026, 3, 16), [], [], [], series)
    return _drift(data, Images(drift=plots))


def test_the_page_of_the_processed_night_shows_its_levels(night_data: Any) -> None:
    """The report of the conftest's night: its bias level and dark current, in the data and on the page."""
    data, page = night_data
    [bias, dark] = data.drift
    master_bias = data.masters[0]
    level = master_bias.parameters["level"]
    assert [(p.value, p.error, p.source, p.masters) for p in bias.points] == [
        (level["mean"], level["error"], "clipped mean", (master_bias.id,))
    ]
    [point] = dark.points
    assert point.masters == tuple(m.id for m in data.masters[1:5])
    assert point.source == "4 exposures (2, 5, 60, 300 s)"
    assert point.resolved
    assert point.value == pytest.approx(0.08, rel=0.05)
    assert f"{measured(point.value, point.error)} ADU/s</td>" in page
    assert "A single point: nothing to compare it with yet" in page


@pytest.fixture
def night_data(night: Any, tmp_path: Path) -> tuple[Any, str]:
    with Catalog(night.db) as catalog:
        data = gather(catalog, ReportScope())
    images = Images(
        drift={k: drift_plot(k, [s for s in data.drift if s.kind == k]) for k in ("bias", "dark")}
    )
    return data, render(data, images)


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (499.99281, 0.00689, "499.9928 ± 0.0069"),
        (0.0780496, 0.000809, "0.07805 ± 0.00081"),
        (1002.0, 1.1547, "1002.0 ± 1.2"),
        (24512.3, 230.0, "24512 ± 230"),
        (500.0, None, "500"),
        (7.0, 0.0, "7"),
        (1e-20, 1e-30, "1e-20 ± 1e-30"),
    ],
)
def test_a_value_is_shown_to_its_uncertainty(value: float, error: float | None, shown: str) -> None:
    assert measured(value, error) == shown


def test_a_point_without_error_is_drawn(tmp_path: Path) -> None:
    when = dt.datetime(2026, 3, 14, 18)
    series = [
        DriftSeries("bias", "b1x1", [DriftPoint(when, 500.0, None, when.date(), "median", (1,))]),
        DriftSeries(
            "bias",
            "b2x2",
            [DriftPoint(when, 400.0, 0.1, when.date(), "clipped mean", (2,), resolved=False)],
        ),
    ]
    assert drift_plot("bias", series).startswith(b"\x89PNG")


def test_the_bias_level_of_an_overscan_subtracted_bias_is_its_raw_level(
    sqlite_catalog: Catalog, tmp_path: Path
) -> None:
    """Lowell's LOIS biases are overscan-subtracted (BIASSEC): the master alone holds 0.59 ADU (its median
    1.00 was once plotted as the bias level). The bias level is the overscan level plus that."""
    folder = real_set("lowell-deadparrots-hall42")
    ingest(sqlite_catalog, [folder])
    build_masters(sqlite_catalog, MasterOptions(masters_dir=tmp_path / "masters", kinds=("bias",)))
    data = gather(sqlite_catalog, ReportScope())
    [master] = data.masters
    [series] = data.drift
    [point] = series.points
    residual = master.parameters["level"]
    levels = [item["level"] for item in master.parameters["steps"]["overscan"]["inputs"]]
    assert master.median == 1.0
    assert levels == [1625.0] * 7  # medians of integer data
    assert (series.kind, point.source) == ("bias", OVERSCAN)
    assert residual["mean"] == pytest.approx(0.59, abs=0.01)
    assert point.value == 1625.0 + residual["mean"]
    assert point.error == pytest.approx(residual["error"])
    assert point.notes == (
        "overscan level 1625 ADU subtracted from its 7 inputs (their mean)",
        f"the master holds {residual['mean']:.4g} ± {residual['error']:.2g} ADU more (its clipped mean)",
    )
