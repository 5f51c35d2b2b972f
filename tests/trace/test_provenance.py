"""``ccdcal provenance``: the tree of a calibrated file or a master from the catalog, checked on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.catalog.targets import find_target
from ccdcal.cli import app
from ccdcal.errors import NotFoundError, UsageError
from ccdcal.files.fitsio import sha256_file
from ccdcal.lights.pipeline import process
from ccdcal.trace.provenance import MATCH_KEYS, NODE_KEYS, Node, provenance
from tests.processed_night import BIAS, DARK, FLAT, Night, processed_night


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, module_db_url: str) -> Night:
    """A processed night that the tests of this module only read (on SQLite, then PostgreSQL)."""
    return processed_night(tmp_path_factory.mktemp("provenance"), db=module_db_url)


@pytest.fixture
def fresh(tmp_path: Path, db_url: str) -> Night:
    """A processed night of one test (which may change its files)."""
    return processed_night(tmp_path, db=db_url)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def shape(node: Node) -> tuple[Any, ...]:
    """A tree as (node, role, file name, children)."""
    return (node.node, node.role, node.name, [shape(child) for child in node.children])


def expected_tree(n: Night) -> tuple[Any, ...]:
    """Light_001 (R, 60 s): light; bias; dark 60 s (its bias, its inputs); flat R (bias, dark 2 s with its
    bias, its inputs)."""

    def inputs(prefix: str) -> list[tuple[Any, ...]]:
        return [("frame", "input", f.name, []) for f in n.raw_named(prefix)]

    bias = ("master", "bias", BIAS, inputs("Bias_"))
    return (
        "calibration",
        None,
        "Light_001_cal.fits",
        [
            ("frame", "light", "Light_001.fits", []),
            bias,
            ("master", "dark", DARK[60], [bias, *inputs("Dark_60s_")]),
            (
                "master",
                "flat",
                FLAT["R"],
                [bias, ("master", "dark", DARK[2], [bias, *inputs("Dark_2s_")]), *inputs("Flat_R_")],
            ),
        ],
    )


def test_the_tree_of_a_calibrated_file_is_exactly_its_masters_and_raw_frames(done: Night) -> None:
    with Catalog(done.db) as catalog:
        result = provenance(catalog, str(done.calibrated / "Light_001_cal.fits"))
        with catalog.session() as session:
            calibration = session.scalars(
                select(Calibration).where(Calibration.path.like("%Light_001_cal.fits"))
            ).one()
            links = {
                link.role: link
                for link in session.scalars(
                    select(CalibrationMaster).where(CalibrationMaster.calibration_id == calibration.id)
                )
            }
            masters = {m.id: m for m in session.scalars(select(Master))}
            frames = {f.path: f for f in session.scalars(select(Frame))}
    assert shape(result.tree) == expected_tree(done)
    assert (result.source, result.target, result.exit_code) == ("catalog", f"calibration:{calibration.id}", 0)
    root = result.tree
    assert (root.id, root.sha256, root.status, root.run_id) == (
        calibration.id,
        calibration.sha256,
        "current",
        2,
    )
    assert root.sha256 == sha256_file(done.calibrated / "Light_001_cal.fits")
    for node in root.walk():
        assert node.file == "ok", node.path
        assert node.path is not None
        assert node.sha256 == sha256_file(node.path)
        if node.node == "master":
            assert (node.id, node.path) == (masters[node.id].id, masters[node.id].path)
        if node.node == "frame":
            assert node.id == frames[node.path].id
    for child in root.children[1:]:
        link = links[child.role or ""]
        assert child.id == link.master_id
        assert child.match == {
            "delta_temp": link.delta_temp,
            "delta_time": link.delta_time,
            "scale": link.scale,
            "pinned": False,
        }
        assert child.match["delta_temp"] is not None
    flat_dark = root.children[3].children[1]
    assert flat_dark.match is not None
    assert flat_dark.match["scale"] == pytest.approx(1.0)  # the 2 s dark for 2 s R flats
    assert result.files() == {"ok": 1 + 1 + 4 + 4 * 3}  # output, light, 4 masters, their inputs: once each


def test_the_json_schema_is_stable(done: Night) -> None:
    with Catalog(done.db) as catalog:
        data = provenance(catalog, str(done.calibrated / "Light_002_cal.fits")).as_dict()
    assert list(data) == ["source", "target", "files", "tree"]
    nodes = [data["tree"]]
    count = 0
    while nodes:
        node = nodes.pop()
        count += 1
        assert list(node) == list(NODE_KEYS)
        assert node["match"] is None or list(node["match"]) == list(MATCH_KEYS)
        assert node["file"] == "ok"
        assert isinstance(node["created_at"], str)
        nodes += node["children"]
    assert count == 1 + 1 + 4 + (1 + 4 + 3) + (1 + 4 + (1 + 4 + 3) + 3)
    assert json.loads(json.dumps(data)) == data


def test_targets_are_paths_or_ids(done: Night) -> None:
    with Catalog(done.db) as catalog, catalog.session() as session:
        output = find_target(session, str(done.calibrated / "Light_001_cal.fits"))
        assert output.kind == "calibration"
        assert find_target(session, output.ref) == output
        bias = find_target(session, str(done.masters / BIAS))
        assert (bias.kind, bias.path) == ("master", str(done.masters / BIAS))
        assert find_target(session, f"master:{bias.id}") == bias
        raw = find_target(session, str(done.raw("Dark_2s_001.fits")))
        assert raw.kind == "frame"
        with pytest.raises(NotFoundError, match=r"^master:999: no master with id 999 in the catalog$"):
            find_target(session, "master:999")
        with pytest.raises(UsageError, match=r"^flat:3: not an id ccdcal knows; use calibration:N"):
            find_target(session, "flat:3")
        with pytest.raises(NotFoundError, match=r"nowhere\.fits: not in the catalog"):
            find_target(session, str(done.root / "nowhere.fits"))


def test_a_master_and_a_raw_frame(done: Night) -> None:
    with Catalog(done.db) as catalog:
        dark = provenance(catalog, str(done.masters / DARK[300]))
        frame = provenance(catalog, str(done.raw("Light_002.fits")))
    assert shape(dark.tree) == (
        "master",
        None,
        DARK[300],
        [
            ("master", "bias", BIAS, [("frame", "input", f.name, []) for f in done.raw_named("Bias_")]),
            *(("frame", "input", f.name, []) for f in done.raw_named("Dark_300s_")),
        ],
    )
    assert dark.tree.children[0].match == {
        "delta_temp": None,
        "delta_time": None,
        "scale": None,
        "pinned": False,
    }
    assert shape(frame.tree) == ("frame", None, "Light_002.fits", [])
    assert (frame.tree.kind, frame.tree.file) == ("light", "ok")


def test_a_changed_raw_frame_and_a_missing_master_show_and_exit_1(fresh: Night, runner: CliRunner) -> None:
    changed = fresh.raw("Dark_60s_002.fits")
    changed.write_bytes(changed.read_bytes() + b"\0" * 2880)
    (fresh.masters / BIAS).unlink()
    result = runner.invoke(
        app, ["--db", str(fresh.db), "provenance", str(fresh.calibrated / "Light_001_cal.fits")]
    )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "Files: 1 changed, 1 missing, 16 ok"
    assert sum("✗ MISSING" in line for line in lines) == 4  # the bias, and as calibrator of each master
    (line,) = [line for line in lines if "Dark_60s_002.fits" in line]
    assert line.endswith("✗ CHANGED")
    data = json.loads(
        runner.invoke(app, ["--db", str(fresh.db), "provenance", "calibration:1", "--json"]).stdout
    )
    assert data["files"] == {"changed": 1, "missing": 1, "ok": 16}


def test_the_cli_prints_a_tree(done: Night, runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["--db", str(done.db), "provenance", str(done.calibrated / "Light_001_cal.fits")]
    )
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"calibration:1 {done.calibrated / 'Light_001_cal.fits'} sha256 ")
    assert lines[0].endswith(" ✓ ok")
    assert lines[1].startswith("├── light frame:")
    assert f"{done.raw('Light_001.fits')} sha256 " in lines[1]
    assert lines[2].startswith(f"├── bias master:1 {done.masters / BIAS} ΔT ")
    assert " °C, Δt " in lines[2]
    assert lines[2].endswith(" ✓ ok")
    assert "│   │   └── (3 files listed above)" in lines  # the bias again, under the dark
    assert lines[-1] == "Files: 18 ok"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Error: give a FILE or ID, or --from-header FILE (not both)\n"),
        (
            ["master:1", "--from-header", "x.fits"],
            "Error: give a FILE or ID, or --from-header FILE (not both)\n",
        ),
        (["master:1", "--search", "."], "Error: --search is used with --from-header only\n"),
        (["master:77"], "Error: master:77: no master with id 77 in the catalog\n"),
        (["frame:x"], None),
    ],
)
def test_usage_errors(done: Night, runner: CliRunner, args: list[str], message: str | None) -> None:
    result = runner.invoke(app, ["--db", str(done.db), "provenance", *args])
    assert result.exit_code == 2
    if message is not None:
        assert result.stderr == message
    else:
        path = Path("frame:x").resolve()
        assert result.stderr.startswith(
            f"Error: {path}: not in the catalog (no calibrated file, master or raw"
        )


def test_no_catalog_is_not_created(tmp_path: Path, runner: CliRunner) -> None:
    db = tmp_path / "none.db"
    result = runner.invoke(app, ["--db", str(db), "provenance", "master:1"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: no catalog at {db}; check --db (or CCDCAL_DB) and the current folder, or run `ccdcal "
        "ingest` first to create one\n",
    )
    assert not db.exists()


def test_a_superseded_calibration_tells_why_and_that_its_file_was_replaced(
    fresh: Night, runner: CliRunner
) -> None:
    from dataclasses import replace

    with Catalog(fresh.db) as catalog:
        process(catalog, replace(fresh.options(), flat_min=0.02))  # another output
        old = provenance(catalog, "calibration:1")
        now = provenance(catalog, str(fresh.calibrated / "Light_001_cal.fits"))
    assert (old.tree.status, old.tree.superseded_reason, old.tree.file) == (
        "superseded",
        "--flat-min changed",
        "replaced",
    )
    assert old.exit_code == 0
    assert (now.tree.id, now.tree.status, now.tree.file) == (3, "current", "ok")
    result = runner.invoke(app, ["--db", str(fresh.db), "provenance", "calibration:1"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith(
        f"calibration:1 {fresh.calibrated / 'Light_001_cal.fits'} [superseded: --flat-min changed] sha256 "
    )
    assert result.stdout.splitlines()[0].endswith(" replaced by a newer calibration")
