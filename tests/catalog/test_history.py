"""``state_changes``: revision 0007 gives a catalog of the previous release its known past; every change of
state is recorded; the catalog read back as it stood at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, insert, inspect, select

from ccdcal.catalog.db import SCHEMA_HEAD, Catalog, make_engine
from ccdcal.catalog.history import as_text
from ccdcal.catalog.models import Calibration, Frame, Master, StateChange
from ccdcal.errors import UsageError
from tests.catalog.test_db import _at_revision

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def _rows(catalog: Catalog) -> list[tuple[Any, ...]]:
    with catalog.reading() as session:
        changes = session.scalars(select(StateChange).order_by(StateChange.at, StateChange.id))
        return [(c.at, c.table_name, c.row_id, c.column_name, c.old, c.new, c.run_id) for c in changes]


def _catalog_at_0006(url: str) -> None:
    """A catalog of the previous release (revision 0006): two versions of a bias group, a frame marked
    bad by a run and another gone missing, a light calibrated twice."""
    _at_revision(url, "0006")
    engine = make_engine(url)
    with engine.begin() as conn:
        tables = {name: Table(name, MetaData(), autoload_with=conn) for name in ("runs", "frames", "masters")}
        tables["calibrations"] = Table("calibrations", MetaData(), autoload_with=conn)
        run = {"arguments": {}, "status": "ok", "ccdcal_version": "0.9"}
        conn.execute(
            insert(tables["runs"]),
            [
                run | {"id": 1, "command": "ingest", "started_at": _at(0)},
                run | {"id": 2, "command": "process", "started_at": _at(1)},
                run
                | {
                    "id": 3,
                    "command": "mark-bad",
                    "started_at": _at(2),
                    "arguments": {"target": "frame:1", "path": "/raw/b1.fits", "reason": "hot column"},
                },
                run | {"id": 4, "command": "process", "started_at": _at(3)},
                run | {"id": 5, "command": "ingest", "started_at": _at(4)},
            ],
        )
        frame = {
            "size": 1,
            "mtime": 1.0,
            "status": "ok",
            "is_bad": False,
            "bad_reason": None,
            "ingested_at": _at(0),
            "run_id": 1,
        }
        conn.execute(
            insert(tables["frames"]),
            [
                frame
                | {
                    "id": 1,
                    "path": "/raw/b1.fits",
                    "imagetyp": "bias",
                    "is_bad": True,
                    "bad_reason": "hot column",
                },
                frame
                | {"id": 2, "path": "/raw/b2.fits", "imagetyp": "bias", "status": "missing", "run_id": 5},
                frame | {"id": 3, "path": "/raw/l1.fits", "imagetyp": "light"},
            ],
        )
        master = {
            "kind": "bias",
            "sha256": "0" * 64,
            "identity": "i",
            "includes_bias": False,
            "n_inputs": 3,
            "method": "sigma_clipped_median",
            "parameters": {},
            "is_bad": False,
            "superseded_reason": None,
        }
        conn.execute(
            insert(tables["masters"]),
            [
                master
                | {
                    "id": 1,
                    "path": "/m/b.fits",
                    "version": 1,
                    "status": "superseded",
                    "superseded_reason": "input b1.fits marked bad (hot column)",
                    "created_at": _at(1),
                    "run_id": 2,
                },
                master
                | {
                    "id": 2,
                    "path": "/m/b_v2.fits",
                    "version": 2,
                    "status": "current",
                    "created_at": _at(3),
                    "run_id": 4,
                },
            ],
        )
        calibration = {"frame_id": 3, "steps": {}, "superseded_reason": None}
        conn.execute(
            insert(tables["calibrations"]),
            [
                calibration
                | {
                    "id": 1,
                    "status": "superseded",
                    "created_at": _at(1.5),
                    "superseded_reason": "new bias master b_v2.fits (replaces b.fits)",
                    "run_id": 2,
                },
                calibration | {"id": 2, "status": "failed", "created_at": _at(2.5), "run_id": 2},
                calibration | {"id": 3, "status": "current", "created_at": _at(3.5), "run_id": 4},
            ],
        )
    engine.dispose()


def test_a_catalog_of_the_previous_release_upgrades_with_its_known_past(db_url: str) -> None:
    """Revision 0007 upgrades a catalog at 0006 (SQLite and PostgreSQL): ``state_changes`` and the
    masters' validity columns are added, and what the rows and runs tell is recorded."""
    _catalog_at_0006(db_url)
    with Catalog(db_url) as catalog:
        assert catalog.revision_on_open == "0006"
        assert catalog.current_revision() == SCHEMA_HEAD
        columns = {c["name"] for c in inspect(catalog.engine).get_columns("masters")}
        assert {"valid_from", "valid_to"} <= columns
        assert _rows(catalog) == [
            (_at(1), "masters", 1, "status", None, "current", 2),
            (_at(2), "frames", 1, "is_bad", "false", "true", 3),
            (_at(2), "frames", 1, "bad_reason", None, "hot column", 3),
            (_at(3), "masters", 1, "status", "current", "superseded", None),
            (_at(3), "masters", 1, "superseded_reason", None, "input b1.fits marked bad (hot column)", None),
            (_at(3), "masters", 2, "status", None, "current", 4),
            (_at(3.5), "calibrations", 1, "status", "current", "superseded", None),
            (
                _at(3.5),
                "calibrations",
                1,
                "superseded_reason",
                None,
                "new bias master b_v2.fits (replaces b.fits)",
                None,
            ),
            (_at(4), "frames", 2, "status", "ok", "missing", 5),
        ]
        # and read back as it stood
        catalog.as_of = _at(2.5)
        with catalog.reading() as session:
            masters = {m.id: (m.status, m.superseded_reason) for m in session.scalars(select(Master))}
            frames = {f.id: (f.status, f.is_bad, f.bad_reason) for f in session.scalars(select(Frame))}
            calibrations = {c.id: c.status for c in session.scalars(select(Calibration))}
        assert masters == {1: ("current", None)}
        assert frames == {1: ("ok", True, "hot column"), 2: ("ok", False, None), 3: ("ok", False, None)}
        assert calibrations == {1: "current", 2: "failed"}
        catalog.as_of = _at(1.9)
        with catalog.reading() as session:
            assert session.get(Frame, 1).is_bad is False
        with pytest.raises(UsageError, match="--as-of"), catalog.session():
            pass


def test_values_are_stored_as_text() -> None:
    assert as_text(True) == "true"
    assert as_text(False) == "false"
    assert as_text(None) is None
    assert as_text(dt.datetime(2026, 3, 1, 2, 3, 4, 5)) == "2026-03-01 02:03:04.000005"
    assert as_text("current") == "current"


def test_a_frame_read_again_and_a_forced_type_read_as_they_stood(catalog: Catalog, tmp_path: Path) -> None:
    """A file rewritten and read again by a later ingest keeps the time it was first catalogued, and its
    sha256 and type as they were read then; a type forced by ``--imagetyp`` is recorded too."""
    import time

    import numpy as np
    from astropy.io import fits

    from ccdcal.ingestion.core import ingest

    path = tmp_path / "raw" / "f.fits"
    path.parent.mkdir()
    header = fits.Header({"IMAGETYP": "LIGHT", "EXPTIME": 10.0})
    fits.PrimaryHDU(np.zeros((4, 4), np.uint16), header).writeto(path)
    ingest(catalog, [tmp_path / "raw"])
    with catalog.reading() as session:
        first = session.scalars(select(Frame)).one()
    time.sleep(0.01)
    between = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    time.sleep(0.01)
    fits.PrimaryHDU(np.ones((4, 4), np.uint16), header).writeto(path, overwrite=True)
    ingest(catalog, [tmp_path / "raw"], imagetyp="flat")
    with catalog.reading() as session:
        now = session.scalars(select(Frame)).one()
    assert (now.ingested_at, now.imagetyp) == (first.ingested_at, "flat")
    assert now.sha256 != first.sha256
    catalog.as_of = between
    with catalog.reading() as session:
        then = session.scalars(select(Frame)).one()
    assert (then.id, then.sha256, then.imagetyp, then.imagetyp_source) == (
        first.id,
        first.sha256,
        "light",
        first.imagetyp_source,
    )
