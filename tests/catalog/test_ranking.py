"""The numpy ranking of masters for every light agrees with the SQL selects, ties and NULLs included."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master
from ccdcal.catalog.queries import MatchRules, usable
from ccdcal.catalog.ranking import Targets, best_masters_ranked, rank_masters
from ccdcal.catalog.selection import TARGET_KEYS, best_masters, select_master

NIGHT = dt.datetime(2026, 3, 14, 20, 0, 0)
CAMERAS = [
    {"instrument": "Cam", "xbinning": 1, "ybinning": 1, "gain": 100.0, "offset": 10.0, "readout_mode": None},
    {
        "instrument": "Cam",
        "xbinning": 2,
        "ybinning": 2,
        "gain": 100.0,
        "offset": 10.0,
        "readout_mode": "fast",
    },
    {"instrument": None, "xbinning": 1, "ybinning": 1, "gain": None, "offset": None, "readout_mode": None},
]
SIZE = {"naxis1": 80, "naxis2": 64}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """A fresh catalog on SQLite, and on PostgreSQL (skipped when no server answers)."""
    url = str(tmp_path / "r.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with Catalog(url) as catalog:
        yield catalog


def maybe(rng: random.Random, value: Any, none: float = 0.1) -> Any:
    return None if rng.random() < none else value


def fill(catalog: Catalog, seed: int, n_lights: int = 80, n_masters: int = 90) -> None:
    """Lights and masters on a coarse grid of values, so that ties on temperature and time are common;
    some values NULL, some masters superseded, marked bad or holding the bias."""
    rng = random.Random(seed)
    temps = [-10.0, -10.5, -9.5, -11.0, -8.0, -12.1, -10.1]
    times = [NIGHT + dt.timedelta(hours=h, microseconds=u) for h in (-5, 0, 5, 10) for u in (0, 1, 500)]
    exposures = [None, 0.0, 30.0, 60.0, 60.00000001, 120.0, 300.0]
    filters = [None, "R", "Ha"]
    lights = []
    for n in range(n_lights):
        lights.append(
            {
                "path": f"/raw/light_{n}.fits",
                "size": 1,
                "mtime": 0.0,
                "status": "ok",
                "imagetyp": "light",
                **rng.choice(CAMERAS),
                **SIZE,
                "ccd_temp": maybe(rng, rng.choice(temps)),
                "date_obs": maybe(rng, rng.choice(times)),
                "exptime": rng.choice(exposures),
                "filter": rng.choice(filters),
                "is_bad": False,
            }
        )
    masters = []
    for n in range(n_masters):
        kind = rng.choice(["bias", "dark", "flat"])
        masters.append(
            {
                "kind": kind,
                "path": f"/masters/m{n}.fits",
                "sha256": f"{n:064x}",
                "identity": f"{n:064x}",
                "n_inputs": 3,
                "method": "sigma_clipped_median",
                **rng.choice(CAMERAS),
                **SIZE,
                "temp_key": -10.0,
                "ccd_temp_mean": maybe(rng, rng.choice(temps)),
                "date_obs_mean": maybe(rng, rng.choice(times)),
                "exptime": rng.choice(exposures) if kind == "dark" else None,
                "filter": rng.choice(filters) if kind == "flat" else None,
                "includes_bias": kind == "dark" and rng.random() < 0.3,
                "status": "superseded" if rng.random() < 0.1 else "current",
                "is_bad": rng.random() < 0.05,
            }
        )
    with catalog.session() as session:
        for model, rows in ((Frame, lights), (Master, masters)):
            if rows:
                session.execute(insert(model), rows)


VARIANTS = [
    ("bias", MatchRules(), {}),
    ("bias", MatchRules(temp_tolerance=0.5), {}),
    ("dark", MatchRules(), {"exclude_with_bias": True}),
    ("dark", MatchRules(), {"only_with_bias": True}),
    ("dark", MatchRules(), {}),
    ("dark", MatchRules(dark_scale=True), {"exclude_with_bias": True}),
    ("dark", MatchRules(dark_scale=True, exptime_tolerance=0.01), {}),
    ("flat", MatchRules(), {}),
    ("flat", MatchRules(temp_tolerance=0.0), {}),
]


@pytest.mark.parametrize("seed", [1, 2])
def test_the_ranking_equals_the_sql_selects(cat: Catalog, seed: int) -> None:
    fill(cat, seed)
    with cat.session() as session:
        targets = Targets.load(session, usable("light"))
        lights = session.scalars(select(Frame).where(usable("light"))).all()
        for kind, rules, flags in VARIANTS:
            ranked = rank_masters(session, kind, targets, rules, **flags)
            assert ranked == best_masters(session, kind, usable("light"), rules, **flags), (
                kind,
                rules,
                flags,
            )
            for light in lights:
                one = select_master(
                    session, kind, {k: getattr(light, k) for k in TARGET_KEYS}, rules, **flags
                )
                assert ranked.get(light.id) == (one.id if one else None), (kind, rules, flags, light.id)
            assert any(ranked.values()) or kind == "dark"


def test_a_small_block_gives_the_same_answer(cat: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    import ccdcal.catalog.ranking as ranking

    fill(cat, 4, n_lights=60)
    with cat.session() as session:
        whole = best_masters_ranked(session, "flat", usable("light"))
        monkeypatch.setattr(ranking, "BLOCK_PAIRS", 1)
        assert best_masters_ranked(session, "flat", usable("light")) == whole
        assert whole


def test_no_light_or_no_master(cat: Catalog) -> None:
    with cat.session() as session:
        assert best_masters_ranked(session, "bias", usable("light")) == {}
    fill(cat, 5, n_lights=0)
    with cat.session() as session:
        assert best_masters_ranked(session, "bias", usable("light")) == {}
