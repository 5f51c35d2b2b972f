"""The frame QA on the command line: ``ccdcal status -v`` and ``ccdcal masters --list -v`` (exact output,
JSON keys, exit statuses), on a catalog whose frame QA rows are written directly
(:mod:`tests.frame_qa_rows`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.cli import app
from tests.frame_qa_rows import B5_REASON, D3_KEPT, add_frame_qa_rows, sha

QA_LINES = [
    "Frame QA:",
    "  bias: 5 of 6 frames measured, 1 set aside",
    f"    frame:5 b5.fits set aside: {B5_REASON} (outlier_level rule)",
    "  dark: 3 of 3 frames measured, none set aside, 1 kept by a person",
    f"    frame:10 d3.fits kept by a person, over the outlier_noise rule: {D3_KEPT}",
    "  flat: 2 of 3 frames measured, none set aside",
]

LISTED = [
    "id  kind  file                  status   inputs  median  std  rejected",
    "1   bias  master_bias.fits      current  4       500     1.5  0.100%",
    "2   dark  master_dark_60s.fits  current  3       500     1.5  0.100%",
    "3   flat  master_flat_R.fits    current  3       500     1.5  0.100%",
]
LISTED_QA = [
    "",
    "master:1 bias master_bias.fits (current): 4 inputs, 1 set aside",
    "  frame  file     level  noise  diff noise  gradient  saturated",
    "  1      b1.fits  500.5      3         4.2     0.125     0.000%",
    "  2      b2.fits    501      3         4.2     0.125     0.000%",
    "  3      b3.fits  501.5      3         4.2     0.125     0.000%",
    "  4      b4.fits    502      3         4.2     0.125     0.000%",
    "  5      b5.fits    812      3         4.2     0.125     0.000%  set aside (outlier_level)",
    f"  frame:5 b5.fits set aside: {B5_REASON} (outlier_level rule)",
    "",
    "master:2 dark master_dark_60s.fits (current): 3 inputs",
    "  frame  file      level  noise  diff noise  gradient  saturated",
    "  8      d1.fits     512      3         4.2     0.125     0.000%",
    "  9      d2.fits  512.25      3         4.2     0.125     0.000%",
    "  10     d3.fits   512.5      3         9.1     0.125     0.000%",
    "",
    "master:3 flat master_flat_R.fits (current): 3 inputs",
    "  frame  file     level  noise  diff noise  gradient  saturated  signal",
    "  11     f1.fits  20011    140         4.2     0.125     0.010%   19511",
    "  12     f2.fits  20012    140         4.2     0.125     0.010%   19512",
    "  13     f3.fits     NA     NA          NA        NA         NA      NA",
]

STATISTICS = {
    "measured",
    "level",
    "noise",
    "diff_level",
    "diff_noise",
    "gradient",
    "saturated_fraction",
    "tail_fraction",
    "signal",
}


@pytest.fixture
def db(db_url: str) -> str:
    """A catalog with frame QA rows: SQLite in tmp_path, then a PostgreSQL database of its own."""
    with Catalog(db_url) as catalog:
        add_frame_qa_rows(catalog)
    return db_url


def invoke(db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--db", db, *args])
    return result.exit_code, result.stdout


def frame_qa_part(stdout: str) -> list[str]:
    """The lines from ``Frame QA:`` to the pending work."""
    lines = stdout.splitlines()
    start = lines.index("Frame QA:")
    end = next(i for i, line in enumerate(lines) if line.startswith("Pending"))
    return lines[start:end]


@pytest.mark.parametrize("where", ["after", "before"])
def test_status_v_shows_the_frames_set_aside(db: str, where: str) -> None:
    args = ["status", "-v"] if where == "after" else ["-v", "status"]
    status, stdout = invoke(db, *args)
    assert status == 0
    assert frame_qa_part(stdout) == QA_LINES
    # placed after what the catalog holds, before the pending work
    assert stdout.splitlines()[stdout.splitlines().index("Frame QA:") - 1] == "  /raw/b6.fits: hot column"


def test_status_without_v_shows_no_frame_qa(db: str) -> None:
    status, stdout = invoke(db, "status")
    assert status == 0
    assert "Frame QA" not in stdout
    assert "set aside" not in stdout
    status, quiet = invoke(db, "status", "-q")
    assert (status, quiet) == (0, "")


def test_status_v_json_has_the_frame_qa(db: str) -> None:
    status, stdout = invoke(db, "status", "-v", "--json")
    assert status == 0
    found = json.loads(stdout)
    assert list(found)[-1] == "frame_qa"
    assert set(found["frame_qa"]) == {"kinds", "frames"}
    assert found["frame_qa"]["kinds"]["bias"] == {
        "frames": 6,
        "measured": 5,
        "set_aside": 1,
        "kept_by_person": 0,
    }
    assert [(f["frame_id"], f["decision"], f["decided_by"]) for f in found["frame_qa"]["frames"]] == [
        (5, "set_aside", "rule"),
        (10, "kept", "person"),
    ]
    assert set(found["frame_qa"]["frames"][0]) == {
        "frame_id",
        "path",
        "kind",
        "decision",
        "decided_by",
        "rule",
        "reason",
        "numbers",
        "decided_at",
        "run_id",
    }
    status, plain = invoke(db, "status", "--json")
    assert status == 0
    assert "frame_qa" not in json.loads(plain)


def test_masters_list_v_shows_the_inputs_statistics_and_the_frames_set_aside(db: str) -> None:
    status, stdout = invoke(db, "masters", "--list", "-v")
    assert status == 0
    assert stdout.splitlines() == LISTED + LISTED_QA
    status, plain = invoke(db, "masters", "--list")
    assert (status, plain.splitlines()) == (0, LISTED)


def test_masters_list_v_of_a_master_built_before_frame_qa(db: str) -> None:
    """A master whose inputs were never measured says so in one line instead of a table of NA."""
    from sqlalchemy import delete

    from ccdcal.catalog.models import FrameStat

    with Catalog(db) as catalog, catalog.session() as session:
        session.execute(delete(FrameStat).where(FrameStat.kind == "dark"))
    status, stdout = invoke(db, "masters", "--list", "-v")
    assert status == 0
    lines = stdout.splitlines()
    start = lines.index("master:2 dark master_dark_60s.fits (current): 3 inputs")
    assert lines[start : start + 3] == [
        "master:2 dark master_dark_60s.fits (current): 3 inputs",
        "  inputs not measured (built before frame QA)",
        "",
    ]


def test_masters_list_v_json_has_the_inputs_and_the_frames_set_aside(db: str) -> None:
    status, stdout = invoke(db, "masters", "--list", "-v", "--json")
    assert status == 0
    rows = {row["id"]: row for row in json.loads(stdout)}
    assert [i["frame_id"] for i in rows[1]["inputs"]] == [1, 2, 3, 4]
    assert set(rows[1]["inputs"][0]) == {"frame_id", "path", "sha256", "changed"} | STATISTICS
    assert rows[1]["inputs"][0] | {"path": None} == {
        "frame_id": 1,
        "path": None,
        "sha256": sha(1),
        "changed": False,
        "measured": True,
        "level": 500.5,
        "noise": 3.0,
        "diff_level": 0.0,
        "diff_noise": 4.2,
        "gradient": 0.125,
        "saturated_fraction": 0.0,
        "tail_fraction": 0.0001,
        "signal": None,
    }
    (b5,) = rows[1]["set_aside"]
    assert set(b5) == {"frame_id", "path", "sha256", "rule", "reason"} | STATISTICS
    assert (b5["frame_id"], b5["rule"], b5["reason"], b5["level"]) == (5, "outlier_level", B5_REASON, 812.0)
    assert rows[2]["set_aside"] == []
    assert rows[3]["inputs"][2]["measured"] is False
    assert rows[3]["inputs"][2]["level"] is None
    status, plain = invoke(db, "masters", "--list", "--json")
    assert status == 0
    assert all("inputs" not in row and "set_aside" not in row for row in json.loads(plain))


def test_masters_list_v_shows_no_frames_of_a_bad_pixel_mask(db: str) -> None:
    from ccdcal.catalog.models import Master
    from tests.frame_qa_rows import T0

    with Catalog(db) as catalog, catalog.session() as session:
        session.add(
            Master(
                id=4,
                kind="bpm",
                path="/m/bpm.fits",
                sha256="4" * 64,
                identity="bpm",
                n_inputs=0,
                method="bpm",
                parameters={},
                created_at=T0,
            )
        )
    status, stdout = invoke(db, "masters", "--list", "-v")
    assert status == 0
    assert "4   bpm   bpm.fits" in stdout
    assert stdout.splitlines()[len(LISTED) + 1 :] == LISTED_QA
    assert "master:4" not in stdout
