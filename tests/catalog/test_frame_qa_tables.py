"""Revision 0008 (frame QA): a catalog of the previous release (0007) gets ``frame_stats``, ``frame_qa`` and
``master_set_aside``, empty, with their indexes and foreign keys, on SQLite and PostgreSQL; its rows are
kept as they were."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import MetaData, Table, insert, inspect, select

from ccdcal.catalog.db import SCHEMA_HEAD, Catalog, make_engine
from ccdcal.catalog.models import Frame, FrameQa, FrameStat, Master, MasterInput, MasterSetAside, Run
from tests.catalog.test_db import _at_revision

T0 = dt.datetime(2026, 11, 30, 20, 0, 0)

#: The rows of the catalog at 0007, by table.
RUNS = [
    {"id": 1, "command": "ingest", "started_at": T0, "status": "ok"},
    {"id": 2, "command": "masters", "started_at": T0 + dt.timedelta(hours=1), "status": "ok"},
]
FRAMES = [
    {"id": i, "path": f"/raw/b{i}.fits", "sha256": f"{i:064x}", "hdu": 0, "imagetyp": "bias", "run_id": 1}
    for i in (1, 2, 3)
] + [{"id": 4, "path": "/raw/l1.fits", "sha256": f"{4:064x}", "hdu": 0, "imagetyp": "light", "run_id": 1}]
MASTERS = [
    {
        "id": 1,
        "kind": "bias",
        "path": "/m/master_bias.fits",
        "sha256": "a" * 64,
        "identity": "i",
        "version": 1,
        "n_inputs": 3,
        "status": "current",
        "created_at": T0 + dt.timedelta(hours=1),
        "valid_from": T0,
        "run_id": 2,
    }
]
INPUTS = [{"master_id": 1, "frame_id": i, "sha256": f"{i:064x}"} for i in (1, 2, 3)]


def _catalog_at_0007(url: str) -> None:
    """A catalog of the previous release (revision 0007): an ingest and a masters run, three biases and a
    light, a master bias made of the biases."""
    _at_revision(url, "0007")
    engine = make_engine(url)
    with engine.begin() as conn:
        tables = {
            name: Table(name, MetaData(), autoload_with=conn)
            for name in ("runs", "frames", "masters", "master_inputs")
        }
        conn.execute(
            insert(tables["runs"]), [run | {"arguments": {}, "ccdcal_version": "0.9"} for run in RUNS]
        )
        frame = {"size": 1, "mtime": 1.0, "status": "ok", "is_bad": False, "ingested_at": T0}
        conn.execute(insert(tables["frames"]), [frame | row for row in FRAMES])
        master = {"includes_bias": False, "method": "sigma_clipped_median", "parameters": {}, "is_bad": False}
        conn.execute(insert(tables["masters"]), [master | row for row in MASTERS])
        conn.execute(insert(tables["master_inputs"]), INPUTS)
    engine.dispose()


def _indexes(catalog: Catalog, table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    return {
        str(ix["name"]): (tuple(str(c) for c in ix["column_names"]), bool(ix["unique"]))
        for ix in inspect(catalog.engine).get_indexes(table)
    }


def _foreign_keys(catalog: Catalog, table: str) -> set[tuple[tuple[str, ...], str, str | None]]:
    return {
        (tuple(fk["constrained_columns"]), fk["referred_table"], (fk.get("options") or {}).get("ondelete"))
        for fk in inspect(catalog.engine).get_foreign_keys(table)
    }


def _values(row: Any, columns: dict[str, Any]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in columns}


def test_revision_0008_adds_the_frame_qa_tables_to_a_catalog_at_0007(db_url: str) -> None:
    _catalog_at_0007(db_url)
    with Catalog(db_url) as catalog:
        assert catalog.revision_on_open == "0007"
        assert catalog.current_revision() == SCHEMA_HEAD == "0008"
        assert {"frame_stats", "frame_qa", "master_set_aside"} <= set(
            inspect(catalog.engine).get_table_names()
        )
        assert _indexes(catalog, "frame_stats") == {
            "ix_frame_stats_file": (("sha256", "hdu"), True),
            "ix_frame_stats_frame_id": (("frame_id",), False),
            "ix_frame_stats_run_id": (("run_id",), False),
        }
        assert _indexes(catalog, "frame_qa") == {
            "ix_frame_qa_frame": (("frame_id", "sha256", "id"), False),
            "ix_frame_qa_sha256": (("sha256",), False),
            "ix_frame_qa_rule": (("rule",), False),
            "ix_frame_qa_decision": (("decision",), False),
            "ix_frame_qa_decided_at": (("decided_at",), False),
            "ix_frame_qa_run_id": (("run_id",), False),
        }
        assert _indexes(catalog, "master_set_aside") == {
            "ix_master_set_aside_frame_id": (("frame_id",), False),
            "ix_master_set_aside_rule": (("rule",), False),
        }
        assert _foreign_keys(catalog, "frame_stats") == {
            (("frame_id",), "frames", "CASCADE"),
            (("run_id",), "runs", None),
        }
        assert _foreign_keys(catalog, "frame_qa") == {
            (("frame_id",), "frames", "CASCADE"),
            (("run_id",), "runs", None),
        }
        assert _foreign_keys(catalog, "master_set_aside") == {
            (("master_id",), "masters", "CASCADE"),
            (("frame_id",), "frames", None),
        }
        assert inspect(catalog.engine).get_pk_constraint("master_set_aside")["constrained_columns"] == [
            "master_id",
            "frame_id",
        ]
        with catalog.reading() as session:
            # the new tables are empty: the frames are measured at the next `ccdcal masters`
            for model in (FrameStat, FrameQa, MasterSetAside):
                assert session.scalars(select(model)).all() == []
            # and what the catalog held is as it was
            runs = session.scalars(select(Run).order_by(Run.id)).all()
            assert [_values(r, RUNS[0]) for r in runs] == RUNS
            frames = session.scalars(select(Frame).order_by(Frame.id)).all()
            assert [_values(f, FRAMES[0]) for f in frames] == FRAMES
            assert all((f.status, f.is_bad) == ("ok", False) for f in frames)
            masters = session.scalars(select(Master)).all()
            assert [_values(m, MASTERS[0]) for m in masters] == MASTERS
            inputs = session.scalars(select(MasterInput).order_by(MasterInput.frame_id)).all()
            assert [_values(i, INPUTS[0]) for i in inputs] == INPUTS


def test_the_new_tables_take_rows_and_go_with_their_frame_or_master(db_url: str) -> None:
    """After the upgrade the models write to the tables; deleting a frame takes its statistics and
    decisions with it, deleting a master its set-aside rows (the foreign keys' ON DELETE CASCADE)."""
    _catalog_at_0007(db_url)
    with Catalog(db_url) as catalog:
        with catalog.session() as session:
            session.add(
                FrameStat(sha256=f"{3:064x}", hdu=0, frame_id=3, kind="bias", samples=100, level=812.0)
            )
            session.add(
                FrameQa(
                    frame_id=3,
                    sha256=f"{3:064x}",
                    rule="outlier_level",
                    decision="set_aside",
                    decided_by="rule",
                    numbers={"outlier_level": {"level": 812.0}},
                    reason="level 812 ADU",
                    run_id=2,
                )
            )
            session.add(
                MasterSetAside(master_id=1, frame_id=3, sha256=f"{3:064x}", rule="outlier_level", reason="x")
            )
        with catalog.session() as session:
            session.delete(session.get(Master, 1))
        with catalog.reading() as session:
            assert session.scalars(select(MasterSetAside)).all() == []
            assert len(session.scalars(select(FrameQa)).all()) == 1
        with catalog.session() as session:
            session.execute(MasterInput.__table__.delete())
            session.delete(session.get(Frame, 3))
        with catalog.reading() as session:
            assert session.scalars(select(FrameStat)).all() == []
            assert session.scalars(select(FrameQa)).all() == []


def test_revision_0008_downgrades_to_0007_without_the_tables(db_url: str) -> None:
    from alembic import command

    from ccdcal.catalog.db import _alembic_config

    _catalog_at_0007(db_url)
    Catalog(db_url).close()
    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0007")
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        assert not tables & {"frame_stats", "frame_qa", "master_set_aside"}
        assert conn.execute(select(Frame.id).order_by(Frame.id)).scalars().all() == [1, 2, 3, 4]
    engine.dispose()
