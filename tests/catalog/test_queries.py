"""Grouping of raw frames and master matching in SQL, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master, MasterCalibrator, MasterInput
from ccdcal.catalog.queries import MatchRules, epoch_seconds, grouped_frames, unusable_masters
from ccdcal.catalog.ranking import best_masters_ranked
from ccdcal.catalog.selection import TARGET_KEYS, best_masters, select_master

NIGHT = dt.datetime(2026, 3, 14, 20, 0, 0)
CAMERA = {
    "instrument": "Cam",
    "xbinning": 1,
    "ybinning": 1,
    "gain": 100.0,
    "offset": 10.0,
    "readout_mode": None,
    "naxis1": 80,
    "naxis2": 64,
}
TARGET = {**CAMERA, "ccd_temp": -10.0, "date_obs": NIGHT}
_serial = itertools.count(1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """A fresh catalog on SQLite, and on PostgreSQL (skipped when no server answers)."""
    url = str(tmp_path / "q.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with Catalog(url) as catalog:
        yield catalog


def add_master(catalog: Catalog, **values: Any) -> int:
    """Insert a master row (a current bias of CAMERA at -10 °C by default); return its id."""
    n = next(_serial)
    row = {
        "kind": "bias",
        "path": f"/masters/m{n}.fits",
        "sha256": f"{n:064x}",
        "identity": f"{n:064x}",
        "n_inputs": 3,
        "method": "sigma_clipped_median",
        **CAMERA,
        "temp_key": -10.0,
        "ccd_temp_mean": -10.0,
        "date_obs_mean": NIGHT,
        "status": "current",
        **values,
    }
    with catalog.session() as session:
        master = Master(**row)
        session.add(master)
        session.flush()
        return master.id


DEFAULT_RULES = MatchRules()


def chosen(catalog: Catalog, kind: str, rules: MatchRules = DEFAULT_RULES, **target: Any) -> int | None:
    """The master chosen for one target; the set-based select and the numpy ranking, for a light with the
    same values, agree."""
    values = {**TARGET, **target}
    with catalog.session() as session:
        master = select_master(session, kind, values, rules)
        light = Frame(
            path=f"/raw/light{next(_serial)}.fits",
            size=1,
            mtime=0.0,
            status="ok",
            imagetyp="light",
            **{key: values.get(key) for key in TARGET_KEYS},
        )
        session.add(light)
        session.flush()
        best = best_masters(session, kind, Frame.id == light.id, rules)
        ranked = best_masters_ranked(session, kind, Frame.id == light.id, rules)
        session.delete(light)
    assert best.get(light.id) == (master.id if master else None)
    assert ranked.get(light.id) == (master.id if master else None)
    return master.id if master else None


# -- select_master -------------------------------------------------------------------------------------


def test_same_camera_keys_match(cat: Catalog) -> None:
    bias = add_master(cat)
    assert chosen(cat, "bias") == bias
    for key, other in (
        ("gain", 200.0),
        ("xbinning", 2),
        ("naxis1", 81),
        ("instrument", "Other"),
        ("offset", 0.0),
    ):
        assert chosen(cat, "bias", **{key: other}) is None, key
    assert chosen(cat, "dark") is None
    assert chosen(cat, "flat") is None


def test_temperature_just_inside_and_just_outside_the_tolerance(cat: Catalog) -> None:
    bias = add_master(cat, ccd_temp_mean=-10.1)
    assert chosen(cat, "bias", ccd_temp=-8.1) == bias  # |Δ| = 2.0000000000000004 in binary: inside
    assert chosen(cat, "bias", ccd_temp=-12.1) == bias
    assert chosen(cat, "bias", ccd_temp=-8.09) is None
    assert chosen(cat, "bias", ccd_temp=-12.11) is None
    assert chosen(cat, "bias", MatchRules(temp_tolerance=0.5), ccd_temp=-9.7) == bias
    assert chosen(cat, "bias", MatchRules(temp_tolerance=0.5), ccd_temp=-9.5) is None


def test_null_keys_match_null_only(cat: Catalog) -> None:
    with_gain = add_master(cat)
    without_gain = add_master(cat, gain=None)
    assert chosen(cat, "bias") == with_gain
    assert chosen(cat, "bias", gain=None) == without_gain
    with_mode = add_master(cat, readout_mode="High Gain")
    assert chosen(cat, "bias", readout_mode="High Gain") == with_mode
    assert chosen(cat, "bias", readout_mode=None) == with_gain


def test_a_frame_without_temperature_takes_only_masters_without_one(cat: Catalog) -> None:
    cooled = add_master(cat)
    assert chosen(cat, "bias", ccd_temp=None) is None
    uncooled = add_master(cat, ccd_temp_mean=None, temp_key=None)
    assert chosen(cat, "bias", ccd_temp=None) == uncooled
    assert chosen(cat, "bias") == cooled


def test_nearest_temperature_then_nearest_time_then_newest(cat: Catalog) -> None:
    far_in_time = add_master(cat, date_obs_mean=NIGHT - dt.timedelta(days=3))
    near_in_time = add_master(cat, date_obs_mean=NIGHT + dt.timedelta(hours=5))
    assert chosen(cat, "bias") == near_in_time
    assert chosen(cat, "bias", date_obs=NIGHT - dt.timedelta(days=2, hours=23)) == far_in_time
    warmer_but_now = add_master(cat, ccd_temp_mean=-9.0, date_obs_mean=NIGHT)
    assert chosen(cat, "bias", ccd_temp=-10.0) == near_in_time  # temperature first
    assert chosen(cat, "bias", ccd_temp=-9.2) == warmer_but_now
    twin = add_master(cat, date_obs_mean=NIGHT + dt.timedelta(hours=5))
    assert chosen(cat, "bias") == twin  # same ΔT and Δt: the newest
    undated = add_master(cat, date_obs_mean=None, ccd_temp_mean=-10.0)
    assert chosen(cat, "bias") == twin  # a master without a date comes after dated ones
    assert chosen(cat, "bias", date_obs=None) == undated  # no date to compare: the newest


def test_superseded_and_bad_masters_are_never_chosen(cat: Catalog) -> None:
    old = add_master(cat, status="superseded", date_obs_mean=NIGHT)
    bad = add_master(cat, is_bad=True, bad_reason="light leak", date_obs_mean=NIGHT)
    assert chosen(cat, "bias") is None
    good = add_master(cat, date_obs_mean=NIGHT - dt.timedelta(days=30))
    assert chosen(cat, "bias") == good
    with cat.session() as session:
        session.execute(update(Master).where(Master.id == good).values(is_bad=True))
    assert chosen(cat, "bias") is None
    assert {old, bad}.isdisjoint({chosen(cat, "bias")})


def test_dark_exposure_must_match_without_scaling(cat: Catalog) -> None:
    dark = add_master(cat, kind="dark", exptime=300.0)
    assert chosen(cat, "dark", exptime=300.0) == dark
    assert chosen(cat, "dark", exptime=300.0001) == dark  # 3e-7 relative: within 1e-6
    assert chosen(cat, "dark", exptime=301.0) is None
    assert chosen(cat, "dark", exptime=None) is None
    assert chosen(cat, "dark", MatchRules(exptime_tolerance=0.01), exptime=301.0) == dark


def test_dark_scaling_prefers_the_nearest_longer_dark(cat: Catalog) -> None:
    scaled = MatchRules(dark_scale=True)
    d60 = add_master(cat, kind="dark", exptime=60.0)
    d300 = add_master(cat, kind="dark", exptime=300.0)
    d600 = add_master(cat, kind="dark", exptime=600.0)
    assert chosen(cat, "dark", scaled, exptime=100.0) == d300  # longer preferred over the nearer 60 s
    assert chosen(cat, "dark", scaled, exptime=300.0) == d300
    assert chosen(cat, "dark", scaled, exptime=50.0) == d60
    assert chosen(cat, "dark", scaled, exptime=900.0) == d600  # none longer: the nearest shorter
    assert chosen(cat, "dark", exptime=100.0) is None  # scaling off: the exposure must match


def test_dark_scaling_never_takes_a_dark_holding_the_bias(cat: Catalog) -> None:
    scaled = MatchRules(dark_scale=True)
    with_bias = add_master(cat, kind="dark", exptime=120.0, includes_bias=True)
    zero = add_master(cat, kind="dark", exptime=0.0)
    assert chosen(cat, "dark", scaled, exptime=100.0) is None
    assert chosen(cat, "dark", scaled, exptime=120.0) is None
    assert chosen(cat, "dark", exptime=120.0) == with_bias  # at its own exposure, unscaled
    assert chosen(cat, "dark", exptime=0.0) == zero
    d300 = add_master(cat, kind="dark", exptime=300.0)
    assert chosen(cat, "dark", scaled, exptime=120.0) == d300
    with cat.session() as session:
        exact = select_master(session, "dark", {**TARGET, "exptime": 120.0}, exclude_with_bias=True)
        assert exact is None


def test_flats_match_their_filter_and_null_matches_null(cat: Catalog) -> None:
    red = add_master(cat, kind="flat", filter="R")
    unfiltered = add_master(cat, kind="flat", filter=None)
    assert chosen(cat, "flat", filter="R") == red
    assert chosen(cat, "flat", filter=None) == unfiltered
    assert chosen(cat, "flat", filter="Ha") is None
    assert chosen(cat, "flat", filter="r") is None


def test_epoch_seconds_orders_by_time(cat: Catalog) -> None:
    from sqlalchemy import DateTime, literal, select

    with cat.session() as session:
        a = session.scalar(select(epoch_seconds(literal(NIGHT, DateTime()))))
        b = session.scalar(select(epoch_seconds(literal(NIGHT + dt.timedelta(seconds=90), DateTime()))))
    assert b - a == pytest.approx(90.0, abs=1e-3)


# -- grouped_frames ------------------------------------------------------------------------------------


def add_frame(catalog: Catalog, kind: str, **values: Any) -> int:
    n = next(_serial)
    row = {
        "path": f"/raw/{kind}_{n}.fits",
        "sha256": f"{n:064x}",
        "size": 1000,
        "mtime": 0.0,
        "status": "ok",
        "imagetyp": kind,
        **CAMERA,
        "temp_key": -10.0,
        "ccd_temp": -10.1,
        "exptime": 0.0,
        "date_obs": NIGHT + dt.timedelta(minutes=n),
        **values,
    }
    with catalog.session() as session:
        frame = Frame(**row)
        session.add(frame)
        session.flush()
        return frame.id


def groups(catalog: Catalog, kind: str) -> list[list[int]]:
    with catalog.session() as session:
        rows = grouped_frames(session, kind)
    by_number: dict[int, list[int]] = {}
    for row in rows:
        by_number.setdefault(row["group_number"], []).append(row["id"])
        assert row["group_size"] == sum(1 for r in rows if r["group_number"] == row["group_number"])
    numbers = [row["group_number"] for row in rows]
    assert numbers == sorted(numbers)  # one group's rows are contiguous
    return sorted(by_number.values())


def test_groups_split_on_every_key_of_their_kind(cat: Catalog) -> None:
    b1 = [add_frame(cat, "bias") for _ in range(3)]
    b_warm = add_frame(cat, "bias", temp_key=0.0, ccd_temp=0.2)
    b_gain = add_frame(cat, "bias", gain=200.0)
    b_long = add_frame(cat, "bias", exptime=0.001, filter="R")  # exposure and filter do not split biases
    b_na = add_frame(cat, "bias", temp_key=None, ccd_temp=None)
    assert groups(cat, "bias") == sorted([[*b1, b_long], [b_warm], [b_gain], [b_na]])

    d10 = [add_frame(cat, "dark", exptime=10.0) for _ in range(2)]
    d30 = add_frame(cat, "dark", exptime=30.0)
    assert groups(cat, "dark") == sorted([d10, [d30]])

    red = [add_frame(cat, "flat", filter="R", exptime=e) for e in (2.0, 3.0)]
    ha = add_frame(cat, "flat", filter="Ha")
    none = add_frame(cat, "flat", filter=None)
    assert groups(cat, "flat") == sorted([red, [ha], [none]])


def test_unusable_frames_never_enter_a_group(cat: Catalog) -> None:
    good = [add_frame(cat, "bias") for _ in range(2)]
    add_frame(cat, "bias", status="rejected")
    add_frame(cat, "bias", status="missing")
    add_frame(cat, "bias", is_bad=True, bad_reason="satellite")
    add_frame(cat, "light")
    add_frame(cat, None)
    assert groups(cat, "bias") == [good]


def test_group_rows_carry_what_a_master_needs(cat: Catalog) -> None:
    late = add_frame(cat, "dark", exptime=5.0, date_obs=NIGHT + dt.timedelta(hours=2), hdu=1)
    early = add_frame(cat, "dark", exptime=5.0, date_obs=NIGHT)
    with cat.session() as session:
        rows = grouped_frames(session, "dark")
    assert [r["id"] for r in rows] == [early, late]  # by DATE-OBS within the group
    assert {"path", "hdu", "sha256", "exptime", "ccd_temp", "date_obs", "temp_key", "gain"} <= set(rows[0])
    assert rows[1]["hdu"] == 1


def test_a_group_is_ordered_by_date_obs_then_path(cat: Catalog) -> None:
    """As ``ORDER BY date_obs, path`` (SQLite's rows are sorted in Python group by group: the same). A
    frame without DATE-OBS comes first on SQLite, last on PostgreSQL, as each orders NULL."""
    same = NIGHT + dt.timedelta(hours=3)
    later_b = add_frame(cat, "bias", path="/raw/b/Bias_2.fits", date_obs=same)
    later_a = add_frame(cat, "bias", path="/raw/a/Bias_9.fits", date_obs=same)
    undated = add_frame(cat, "bias", path="/raw/z/Bias_1.fits", date_obs=None)
    early = add_frame(cat, "bias", path="/raw/z/Bias_0.fits", date_obs=NIGHT)
    other = add_frame(cat, "bias", path="/raw/0/Bias.fits", gain=200.0, date_obs=None)
    with cat.session() as session:
        rows = grouped_frames(session, "bias")
    dated = [early, later_a, later_b]
    sqlite = cat.url.get_backend_name() == "sqlite"
    assert [r["id"] for r in rows] == ([undated, *dated] if sqlite else [*dated, undated]) + [other]
    assert [(r["group_number"], r["group_size"]) for r in rows] == [(1, 4)] * 4 + [(2, 1)]


# -- masters that may not be used (mark-bad) -------------------------------------------------------------


def link_input(catalog: Catalog, master: int, frame: int) -> None:
    with catalog.session() as session:
        session.add(MasterInput(master_id=master, frame_id=frame, sha256="0" * 64))


def link_calibrator(catalog: Catalog, master: int, calibrator: int, role: str) -> None:
    with catalog.session() as session:
        session.add(MasterCalibrator(master_id=master, role=role, calibrator_id=calibrator))


def unusable(catalog: Catalog) -> set[int]:
    with catalog.session() as session:
        return set(session.scalars(unusable_masters()))


def test_a_bad_input_or_calibrator_makes_a_master_unusable_down_the_chain(cat: Catalog) -> None:
    bias = add_master(cat)
    dark = add_master(cat, kind="dark", exptime=60.0)
    flat = add_master(cat, kind="flat", filter="R")
    other_flat = add_master(cat, kind="flat", filter="Ha")
    frame = add_frame(cat, "bias")
    link_input(cat, bias, frame)
    link_calibrator(cat, dark, bias, "bias")
    link_calibrator(cat, flat, dark, "dark")
    assert unusable(cat) == set()
    assert chosen(cat, "flat", filter="R") == flat
    with cat.session() as session:
        session.execute(update(Frame).where(Frame.id == frame).values(is_bad=True, bad_reason="hot column"))
    assert unusable(cat) == {bias, dark, flat}  # the bias, the dark made with it, the flat made with that
    assert chosen(cat, "bias") is None
    assert chosen(cat, "dark", exptime=60.0) is None
    assert chosen(cat, "flat", filter="R") is None
    assert chosen(cat, "flat", filter="Ha") == other_flat
    with cat.session() as session:
        session.execute(update(Frame).where(Frame.id == frame).values(is_bad=False))
        session.execute(update(Master).where(Master.id == dark).values(is_bad=True))
    assert unusable(cat) == {dark, flat}
    assert chosen(cat, "bias") == bias
