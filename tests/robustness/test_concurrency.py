"""Concurrent runs on one catalog: two ``ccdcal process`` started together calibrate each light exactly once
(their claims, ccdcal.lights.claims), build each master once, lose no row and never fail with "database is
locked"; an ingest running beside a process is safe. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Claim, Frame, HeaderCard, Master, Run
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.simulate import SimulatedNight, simulate_night
from tests.robustness.cli_runs import State, copy_catalog, start, state, temporaries

LIGHTS = 12
MASTERS = 7
SQLITE_TRIALS = 2
PG_TRIALS = 2


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> SimulatedNight:
    base = tmp_path_factory.mktemp("concurrency")
    night = simulate_night(
        base / "raw", seed=17, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=LIGHTS
    )
    with Catalog(base / "template.db") as catalog:
        ingest(catalog, [night.root], jobs=1)
    return night


@pytest.fixture(scope="module")
def reference(night: SimulatedNight) -> State:
    folder = night.root.parent / "reference"
    folder.mkdir()
    copy_catalog(night.root.parent / "template.db", folder / "c.db")
    options = ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated", jobs=1)
    with Catalog(folder / "c.db") as catalog:
        assert process(catalog, options).exit_code == 0
    return state(folder / "c.db", folder)


def together(folder: Path, db: str, *commands: list[str]) -> list[tuple[int, str, str]]:
    """Start the commands at once (each ``ccdcal --db DB ...`` in ``folder``); their exit statuses and
    outputs."""
    running = [start(["--db", db, *command], folder) for command in commands]
    outputs = [p.communicate(timeout=300) for p in running]
    return [(p.returncode, out, err) for p, (out, err) in zip(running, outputs, strict=True)]


PROCESS = ["process", "--json", "--jobs", "1", "--masters-dir", "masters", "--output-dir", "calibrated"]


def assert_exactly_once(db: str, folder: Path, reference: State, lights: int = LIGHTS) -> None:
    """One calibration row per light, all current; one master per group; no claim left; same results."""
    with Catalog(db) as catalog, catalog.session() as session:
        statuses = session.execute(
            select(Calibration.status, func.count()).group_by(Calibration.status)
        ).all()
        assert dict(statuses) == {"current": lights}
        per_light = session.execute(
            select(Calibration.frame_id, func.count()).group_by(Calibration.frame_id)
        ).all()
        assert {n for _, n in per_light} == {1}
        assert session.scalar(select(func.count()).select_from(CalibrationMaster)) == 3 * lights
        assert dict(session.execute(select(Master.status, func.count()).group_by(Master.status)).all()) == {
            "current": MASTERS
        }
        assert session.scalar(select(func.count()).select_from(Claim)) == 0
        assert {r for (r,) in session.execute(select(Run.status).where(Run.command == "process"))} == {"ok"}
    assert len(list((folder / "masters").glob("*.fits"))) == MASTERS
    assert temporaries(folder / "masters", folder / "calibrated") == []
    if lights == LIGHTS:
        assert state(db, folder) == reference


def two_processes(db: str, folder: Path, reference: State) -> tuple[int, int]:
    """Two ``ccdcal process`` at once; returns how many lights each calibrated."""
    results = together(folder, db, PROCESS, PROCESS)
    calibrated = []
    for status, out, err in results:
        assert status == 0, err
        assert err == ""  # in particular, no "database is locked"
        lights = json.loads(out)["lights"]
        assert {x["outcome"] for x in lights} <= {"calibrated", "busy", "current"}
        calibrated.append({x["path"] for x in lights if x["outcome"] == "calibrated"})
    assert not calibrated[0] & calibrated[1]
    assert len(calibrated[0] | calibrated[1]) == LIGHTS
    assert_exactly_once(db, folder, reference)
    return len(calibrated[0]), len(calibrated[1])


@pytest.mark.parametrize("trial", range(SQLITE_TRIALS))
def test_two_processes_on_one_sqlite_catalog(night: SimulatedNight, reference: State, trial: int) -> None:
    folder = night.root.parent / f"sqlite-{trial}"
    folder.mkdir()
    copy_catalog(night.root.parent / "template.db", folder / "c.db")
    shares = two_processes(str(folder / "c.db"), folder, reference)
    print(f"sqlite trial {trial}: lights calibrated by each run {shares}")


@pytest.mark.postgres
@pytest.mark.parametrize("trial", range(PG_TRIALS))
def test_two_processes_on_one_postgresql_catalog(
    night: SimulatedNight, reference: State, pg_url: str, tmp_path: Path, trial: int
) -> None:
    with Catalog(pg_url) as catalog:
        ingest(catalog, [night.root], jobs=1)
    shares = two_processes(pg_url, tmp_path, reference)
    print(f"postgresql trial {trial}: lights calibrated by each run {shares}")


def ingest_during_process(db: str, folder: Path, night: SimulatedNight, reference: State) -> None:
    more = simulate_night(folder / "more", seed=19, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=6)
    (processed, out, err), (ingested, _, ingest_err) = together(
        folder, db, PROCESS, ["ingest", "--jobs", "1", str(more.root / "LIGHT")]
    )
    assert (processed, err) == (0, "")
    assert (ingested, ingest_err) == (0, "")
    with Catalog(db) as catalog:
        options = ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated", jobs=1)
        summary = process(catalog, options)
    assert summary.exit_code == 0
    first = {x["path"] for x in json.loads(out)["lights"] if x["outcome"] == "calibrated"}
    second = {x.path for x in summary.of("calibrated")}
    assert not first & second
    assert len(first | second) == LIGHTS + 6
    assert_exactly_once(db, folder, reference, LIGHTS + 6)
    names = sorted(p.name for p in (folder / "calibrated").glob("*.fits"))
    assert names[:2] == ["Light_001_cal.fits", "Light_001_cal_v2.fits"]


def test_ingest_while_processing_on_sqlite(night: SimulatedNight, reference: State, tmp_path: Path) -> None:
    copy_catalog(night.root.parent / "template.db", tmp_path / "c.db")
    ingest_during_process(str(tmp_path / "c.db"), tmp_path, night, reference)


@pytest.mark.postgres
def test_ingest_while_processing_on_postgresql(
    night: SimulatedNight, reference: State, pg_url: str, tmp_path: Path
) -> None:
    with Catalog(pg_url) as catalog:
        ingest(catalog, [night.root], jobs=1)
    ingest_during_process(pg_url, tmp_path, night, reference)


def two_ingests(db: str, folder: Path) -> None:
    """Two ``ccdcal ingest`` of one tree started together: both succeed, each file catalogued once with
    its cards once (issue: the loser died with a UNIQUE violation on ``frames.path``)."""
    raw = simulate_night(folder / "raw", seed=23, shape=(32, 32), n_bias=20, n_dark=20, n_flat=20, n_light=60)
    files = sorted(raw.root.rglob("*.fits"))
    results = together(folder, db, ["ingest", "--jobs", "1", str(raw.root)], ["ingest", str(raw.root)])
    for code, out, err in results:
        assert (code, err) == (0, ""), out
    with Catalog(db) as catalog, catalog.reading() as session:
        paths = list(session.scalars(select(Frame.path)))
        cards = session.execute(select(HeaderCard.frame_id, func.count()).group_by(HeaderCard.frame_id)).all()
        runs = list(session.scalars(select(Run.status).where(Run.command == "ingest")))
    assert sorted(paths) == [str(f) for f in files]
    assert len(cards) == len(files)
    assert sum(n for _, n in cards) == first_cards(raw.root)  # every frame's cards once
    assert runs == ["ok", "ok"]


def test_two_ingests_at_once_on_sqlite(tmp_path: Path) -> None:
    two_ingests(str(tmp_path / "c.db"), tmp_path)


@pytest.mark.postgres
def test_two_ingests_at_once_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    two_ingests(pg_url, tmp_path)


def test_an_ingest_whose_snapshot_is_stale_catalogues_each_file_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made certain: another ingest catalogued the files after this one read what the catalog
    knew (its snapshot says nothing is known). The batch reads the rows again under the writers' lock:
    the files count as unchanged, none is inserted twice."""
    import ccdcal.ingestion.core as core

    db = db_url
    raw = simulate_night(tmp_path / "raw", seed=29, shape=(32, 32), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    with Catalog(db) as catalog:
        first = ingest(catalog, [raw.root], jobs=1)
        monkeypatch.setattr(core, "_known_under", lambda session, roots: {})
        second = ingest(catalog, [raw.root], jobs=1)
        with catalog.reading() as session:
            frames = session.scalar(select(func.count()).select_from(Frame))
            cards = session.scalar(select(func.count()).select_from(HeaderCard))
    assert (first.new, second.new, second.unchanged, second.changed) == (23, 0, 23, 0)
    assert frames == 23
    assert cards == first_cards(raw.root)


def first_cards(root: Path) -> int:
    """How many header cards the files under ``root`` hold (what one ingest catalogues)."""
    from astropy.io import fits

    total = 0
    for path in sorted(root.rglob("*.fits")):
        total += len(fits.getheader(path))
    return total
