"""Every grouping and matching select uses an index (EXPLAIN on SQLite and PostgreSQL)."""

from __future__ import annotations

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.explain import check_plans, planned_statements, query_plan, table_scans


def test_the_checked_statements() -> None:
    names = set(planned_statements())
    assert {"group bias", "group dark", "group flat"} <= names
    assert {"match dark of every light", "match dark of every light (dark scaling)"} <= names
    assert {"targets of every light", "candidate darks", "count the lights by state"} <= names
    assert "count the lights by state (latest calibrations grouped)" in names
    assert {"count the frames by status and kind", "unclassified frames"} <= names
    assert "masters with an input gone" in names
    assert len(names) == 19


def test_a_full_scan_is_seen() -> None:
    assert table_scans(["SCAN frames", "SEARCH masters USING INDEX ix_masters_match (kind=?)"]) == ["frames"]
    assert table_scans(["  ->  Seq Scan on masters  (cost=0.00..1.01 rows=1 width=4)"]) == ["masters"]
    assert table_scans(["SCAN unusable", "SCAN (subquery-6)"]) == []
    assert table_scans(["SCAN frames USING COVERING INDEX ix_frames_status"]) == []  # the index alone
    assert table_scans(["SCAN frames USING INDEX ix_frames_group"]) == ["frames"]  # every row visited


def test_sqlite_plans_use_indexes(sqlite_catalog: Catalog) -> None:
    with sqlite_catalog.session() as session:
        plan = query_plan(session, planned_statements()["match dark of every light"])
        assert any("USING INDEX ix_masters_match" in line for line in plan), plan
        counts = query_plan(session, planned_statements()["count the frames by status and kind"])
        assert counts == ["SCAN frames USING COVERING INDEX ix_frames_status"], counts  # no sort either
        assert check_plans(session) == {name: [] for name in planned_statements()}


def test_postgresql_plans_use_indexes(pg_url: str) -> None:
    with Catalog(pg_url) as catalog, catalog.session() as session:
        plan = query_plan(session, planned_statements()["match flat of every light"])
        assert any("Index" in line for line in plan), plan
        assert check_plans(session) == {name: [] for name in planned_statements()}
