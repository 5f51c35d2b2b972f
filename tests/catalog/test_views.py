"""The provenance views (migration 0002) and every SQL recipe of the README, on a processed catalog.

The README's queries are read from its "SQL recipes" section and run as they are written (the example
paths ``/data/...`` point at this test's folder), on SQLite and on PostgreSQL; each must return the rows
worked out here from the simulated night, independently of SQL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from sqlalchemy import create_engine, make_url, select, text, update

from ccdcal import __version__
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Run, StateChange
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.simulate import SimulatedNight, simulate_night
from ccdcal.trace.impact import mark_bad
from tests.conftest import ROOT, _pg_admin_url

README = ROOT / "README.md"

BIAS = "master_bias_b2x2_g120_sNA_C-10.fits"
DARKS = [f"master_dark_b2x2_g120_{t}s_C-10.fits" for t in (2, 5, 60, 300)]
DARK_300_V2 = "master_dark_b2x2_g120_300s_C-10_v2.fits"
FLAT_R, FLAT_HA = "master_flat_b2x2_g120_sNA_C-10_R.fits", "master_flat_b2x2_g120_sNA_C-10_Ha.fits"
BAD_DARK = "Dark_300s_001.fits"


def readme_queries(root: Path | None = None) -> dict[str, str]:
    """Title (the ``--`` comment line above it) → query, for every query of the README's SQL recipes,
    with the example folder ``/data/`` replaced by ``root``."""
    section = README.read_text().split("\n## SQL recipes\n", 1)[1].split("\n## ", 1)[0]
    queries: dict[str, str] = {}
    for block in re.findall(r"```sql\n(.*?)```", section, re.DOTALL):
        title, lines = None, []
        for line in block.splitlines():
            if line.startswith("-- "):
                title, lines = line[3:].strip(), []
            elif line.strip():
                lines.append(line)
                if line.rstrip().endswith(";"):
                    assert title is not None, f"a query without a -- title: {lines[0]}"
                    assert title not in queries, f"two queries titled {title!r}"
                    queries[title] = "\n".join(lines)
                    title = None
        assert title is None, f"unfinished query {title!r}"
    if root is not None:
        queries = {
            t: q.replace("'/data/", f"'{root}/").replace("'0.1.0'", f"'{__version__}'")
            for t, q in queries.items()
        }
    return queries


def run_query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with Catalog(url) as catalog, catalog.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


def build_night(url: str, root: Path) -> SimulatedNight:
    """A processed night with some history, in ``root`` (``raw/``, ``masters/``, ``calibrated/``).

    Runs: 1 ingest (a text file named ``notes.fits`` is rejected); 2 process (Light_004 is given a CCD
    temperature no master matches: not calibrated); 3 mark-bad of Dark_300s_001; 4 ingest (Light_002 was
    edited: changed); 5 process (the 300 s dark rebuilt, Light_002 and Light_003 calibrated again).
    """
    night = simulate_night(root / "raw", seed=11, shape=(48, 64), n_bias=6, n_dark=4, n_flat=3, n_light=4)
    (root / "raw" / "LIGHT" / "notes.fits").write_text("not a FITS file\n")
    options = ProcessOptions(masters_dir=root / "masters", output_dir=root / "calibrated", jobs=1)
    with Catalog(url) as catalog:
        ingest(catalog, [night.root])
        with catalog.session() as session:
            session.execute(update(Frame).where(Frame.path.like("%Light_004%")).values(ccd_temp=5.0))
        assert process(catalog, options).exit_code == 1
        mark_bad(catalog, str(root / "raw" / "DARK" / BAD_DARK), "cosmic ray shower")
        fits.setval(root / "raw" / "LIGHT" / "Light_002.fits", "OBSERVER", value="test")
        ingest(catalog, [night.root])
        assert process(catalog, options).exit_code == 1
    return night


@dataclass
class Processed:
    url: str
    root: Path
    night: SimulatedNight


def _pg_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) is not installed")
    del psycopg
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"ccdcal_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # no server: skip, saying why
        admin.dispose()
        pytest.skip(f"no PostgreSQL server reachable at {_pg_admin_url()}: {exc}")
    try:
        yield make_url(_pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def processed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Processed]:
    """The night of :func:`build_night`, once per database kind."""
    root = tmp_path_factory.mktemp(f"views-{request.param}")
    if request.param == "sqlite":
        url = str(root / "ccdcal.db")
        yield Processed(url, root, build_night(url, root))
        return
    for url in _pg_database():
        yield Processed(url, root, build_night(url, root))


# -- what each README query must return -----------------------------------------------------------------


class _Any:
    """Equal to anything: a time column (SQLite returns text, PostgreSQL datetimes)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()


def expected(p: Processed, title: str) -> list[tuple[Any, ...]]:
    """The rows a README query must return, worked out from the night (not with SQL)."""
    raw, cal, masters = p.root / "raw", p.root / "calibrated", p.root / "masters"
    light = {i: str(raw / "LIGHT" / f"Light_00{i}.fits") for i in range(1, 5)}
    output = {i: str(cal / f"Light_00{i}_cal.fits") for i in range(1, 5)}
    answers: dict[str, Any] = {
        "frames per type and filter": lambda: [
            ("bias", None, 6),
            ("dark", None, 16),
            ("flat", "Ha", 3),
            ("flat", "R", 3),
            ("light", "Ha", 2),
            ("light", "R", 2),
        ],
        "every header card of one file": lambda: [
            (card.keyword, ANY, card.comment or None) for card in fits.getheader(light[1]).cards
        ],
        "frames whose CCD-TEMP was above -10 (any keyword, numerically)": lambda: sorted(
            (str(raw / rel), info["ccd_temp"])
            for rel, info in p.night.truth["frames"].items()
            if info["ccd_temp"] > -10
        ),
        "files that could not be catalogued, and why": lambda: [
            (str(raw / "LIGHT" / "notes.fits"), "not a FITS file (does not start with SIMPLE =)")
        ],
        "what changed since it was first ingested": lambda: [(light[2], ANY)],
        "the runs, with software versions": lambda: [
            (run, command, status, ANY, __version__, ANY)
            for run, command, status in (
                (5, "process", "partial"),
                (4, "ingest", "partial"),
                (3, "mark-bad", "ok"),
                (2, "process", "partial"),
                (1, "ingest", "partial"),
            )
        ],
        "which masters made this calibrated image, and why they were chosen": lambda: _masters_of(
            p, output[1]
        ),
        "all raw frames behind one calibrated file: its light, the frames of its masters and of their "
        "calibrators": lambda: sorted(
            [("light", "light", light[1])]
            + [
                (role, via, f)
                for role, via in (
                    ("bias", "input"),
                    ("dark", "bias"),
                    ("flat", "bias"),
                    ("flat", "dark/bias"),
                )
                for f in _raw(p, "Bias_")
            ]
            + [("dark", "input", f) for f in _raw(p, "Dark_60s_")]
            + [("flat", "dark", f) for f in _raw(p, "Dark_2s_")]
            + [("flat", "input", f) for f in _raw(p, "Flat_R_")]
        ),
        "every light calibrated with a given master (current and superseded calibrations)": lambda: [
            (light[3], output[3], "superseded", 2)
        ],
        "every current calibrated file that used a master bias, directly or through the darks and flats made "
        "with it": lambda: [(light[i], output[i]) for i in (1, 2, 3)],
        "calibrated files made by a given ccdcal version": lambda: [
            (output[1], "current", 2),
            (output[2], "superseded", 2),
            (output[2], "current", 5),
            (output[3], "superseded", 2),
            (output[3], "current", 5),
        ],
        "everything one run made: masters and calibrated files": lambda: [
            ("calibration", output[2], "current"),
            ("calibration", output[3], "current"),
            ("master", str(masters / DARK_300_V2), "current"),
        ],
        "lights never calibrated": lambda: [(light[4],)],
        "masters built from fewer than 5 frames": lambda: [
            ("dark", str(masters / DARKS[0]), 4),
            ("dark", str(masters / DARK_300_V2), 3),
            ("dark", str(masters / DARKS[1]), 4),
            ("dark", str(masters / DARKS[2]), 4),
            ("flat", str(masters / FLAT_HA), 3),
            ("flat", str(masters / FLAT_R), 3),
        ],
        "validity of the masters used by a light (NULL: open)": lambda: [
            (role, path, None, None) for role, path, *_ in _masters_of(p, output[1])
        ],
        "what changed between two dates (UTC): masters current or superseded, marks, calibrations "
        "superseded": lambda: _changes(p),
        "masters and calibrated files replaced by newer ones, and why": lambda: [
            ("calibration", output[2], "raw file changed"),
            ("calibration", output[3], f"new dark master {DARK_300_V2} (replaces {DARKS[3]})"),
            ("master", str(masters / DARKS[3]), f"input {BAD_DARK} marked bad (cosmic ray shower)"),
        ],
    }
    return answers[title]()


def _changes(p: Processed) -> list[tuple[Any, ...]]:
    """Every state change of the night, from the ORM rows: a master bias, 4 darks and 2 flats current; a
    dark marked bad, its new version current and the old one superseded; 2 calibrations superseded."""
    with Catalog(p.url) as catalog, catalog.reading() as session:
        commands = {run.id: run.command for run in session.scalars(select(Run))}
        rows = session.scalars(select(StateChange).order_by(StateChange.at, StateChange.id)).all()
        found = [
            (ANY, c.table_name, c.row_id, c.column_name, c.old, c.new, commands.get(c.run_id or 0))
            for c in rows
        ]
    assert [(t, col, new) for _, t, _, col, _, new, _ in found if col == "is_bad"] == [
        ("frames", "is_bad", "true")
    ]
    assert sum(1 for _, t, _, col, _, new, _ in found if t == "calibrations" and new == "superseded") == 2
    return found


def _raw(p: Processed, prefix: str) -> list[str]:
    return [str(f) for kind in p.night.files.values() for f in kind if f.name.startswith(prefix)]


def _masters_of(p: Processed, output: str) -> list[tuple[Any, ...]]:
    """(role, master path, version, ΔT, Δt, scale, pinned) from the ORM rows of the current calibration."""
    names = {"bias": BIAS, "dark": DARKS[2], "flat": FLAT_R}
    with Catalog(p.url) as catalog, catalog.session() as session:
        calibration = session.scalars(
            select(Calibration).where(Calibration.path == output, Calibration.status == "current")
        ).one()
        links = session.scalars(
            select(CalibrationMaster).where(CalibrationMaster.calibration_id == calibration.id)
        )
        by_role = {link.role: link for link in links}
    assert set(by_role) == set(names)
    return [
        (role, str(p.root / "masters" / names[role]), 1, link.delta_temp, link.delta_time, link.scale, False)
        for role, link in sorted(by_role.items())
    ]


TITLES = list(readme_queries())


def test_the_readme_has_the_recipes_the_issue_asks_for() -> None:
    assert len(TITLES) >= 16
    for wanted in (
        "validity of the masters used by a light",
        "what changed between two dates",
        "all raw frames behind one calibrated file",
        "every light calibrated with a given master",
        "made by a given ccdcal version",
        "everything one run made",
        "lights never calibrated",
        "masters built from fewer than 5 frames",
    ):
        assert any(wanted in title for title in TITLES), wanted


@pytest.mark.parametrize("title", TITLES)
def test_each_readme_query_returns_the_expected_rows(processed: Processed, title: str) -> None:
    query = readme_queries(processed.root)[title]
    assert run_query(processed.url, query) == expected(processed, title)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_migration_goes_down_and_up_again(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Revision 0002 drops its views and columns on the way down (data kept), and makes them again."""
    from alembic import command

    from ccdcal.catalog.db import _alembic_config

    url = str(tmp_path / "c.db") if kind == "sqlite" else request.getfixturevalue("pg_url")
    with Catalog(url) as catalog:
        with catalog.session() as session:
            session.add(Frame(path="/raw/a.fits", sha256="0" * 64, size=1, mtime=0.0, status="ok"))
        with catalog.engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "0001")
        with catalog.engine.connect() as conn:
            names = set(conn.dialect.get_view_names(conn))
            assert {"calibration_provenance", "master_lineage"}.isdisjoint(names)
        with catalog.engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "head")
        with catalog.engine.connect() as conn:
            assert {"calibration_provenance", "master_lineage"} <= set(conn.dialect.get_view_names(conn))
            assert conn.execute(text("SELECT count(*) FROM master_lineage")).scalar() == 0
            assert conn.execute(text("SELECT path FROM frames")).scalar() == "/raw/a.fits"
