"""``ccdcal audit``: every recorded file hashed again; missing, changed and moved files; re-pointing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Master, Run
from ccdcal.cli import app
from ccdcal.files.fitsio import sha256_file
from ccdcal.files.hashing import hash_files
from ccdcal.trace.audit import audit
from ccdcal.trace.provenance import provenance
from tests.processed_night import BIAS, DARK, Night, processed_night

#: The simulated night: 3 biases, 3 darks at each of 4 exposures, 3 flats in R and Ha, 2 lights; 7 masters.
FILES = {"frame": 3 + 12 + 6 + 2, "master": 7, "calibration": 2}


@pytest.fixture
def night(tmp_path: Path, db_url: str) -> Night:
    return processed_night(tmp_path, db=db_url)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def ids(n: Night) -> dict[str, int]:
    """Catalog ids by file name."""
    with Catalog(n.db) as catalog, catalog.session() as session:
        found = {Path(p).name: i for i, p in session.execute(select(Frame.id, Frame.path))}
        found |= {Path(p).name: i for i, p in session.execute(select(Master.id, Master.path))}
        found |= {Path(p or "").name: i for i, p in session.execute(select(Calibration.id, Calibration.path))}
    return found


def test_a_clean_catalog_exits_0_and_the_audit_is_a_run(night: Night, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--db", str(night.db), "audit"])
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "Audit (run 3): 32 files checked (23 raw frames, 7 masters, 2 calibrated files): 32 ok\n",
        "",
    )
    with Catalog(night.db) as catalog:
        run = catalog.runs(limit=1)[0]
    assert (run.id, run.command, run.status) == (3, "audit", "ok")
    assert run.summary == {
        "checked": FILES,
        "counts": {"ok": 32, "changed": 0, "missing": 0, "unreadable": 0, "moved": 0, "repointed": 0},
    }


def test_modified_deleted_and_moved_files_exit_1_and_a_moved_one_is_repointed(
    night: Night, runner: CliRunner, tmp_path: Path
) -> None:
    raw = night.raw("Dark_60s_002.fits")
    raw.write_bytes(raw.read_bytes().replace(b"Sensor gain offset", b"Sensor gain OFFSET", 1))
    (night.masters / DARK[300]).unlink()
    elsewhere = tmp_path / "backup" / "2026-03-14"
    elsewhere.mkdir(parents=True)
    output = night.calibrated / "Light_001_cal.fits"
    recorded = sha256_file(output)
    shutil.move(output, elsewhere / output.name)
    named = ids(night)
    db = ["--db", str(night.db)]

    found = runner.invoke(app, [*db, "audit"])
    assert found.exit_code == 1
    assert found.stdout == (
        "Audit (run 3): 32 files checked (23 raw frames, 7 masters, 2 calibrated files): 29 ok, 1 changed, "
        "2 missing\n"
    )
    assert found.stderr.splitlines() == [
        f"  changed    frame:{named['Dark_60s_002.fits']} {raw} (sha256 {hash_prefix(night, raw)}… recorded, "
        f"{sha256_file(raw)[:12]}… on disk)",
        f"  missing    master:{named[DARK[300]]} {night.masters / DARK[300]}",
        f"  missing    calibration:{named['Light_001_cal.fits']} {output}",
        "Moved files are found by sha256 with --search PATH, and re-pointed with --fix-missing PATH",
    ]

    searched = runner.invoke(app, [*db, "audit", "--search", str(tmp_path / "backup"), "--json"])
    assert searched.exit_code == 1
    data = json.loads(searched.stdout)
    assert data["counts"] == {
        "ok": 29,
        "changed": 1,
        "missing": 1,
        "unreadable": 0,
        "moved": 1,
        "repointed": 0,
    }
    moved = data["problems"][2]
    assert moved == {
        "what": "calibration",
        "id": named["Light_001_cal.fits"],
        "path": str(output),
        "sha256": recorded,
        "state": "moved",
        "disk_sha256": None,
        "found": str(elsewhere / output.name),
        "repointed": False,
        "note": None,
    }

    fixed = runner.invoke(app, [*db, "audit", "--fix-missing", str(tmp_path / "backup")])
    assert fixed.exit_code == 1  # something drifted, even though the moved file is now re-pointed
    assert fixed.stdout.endswith("29 ok, 1 changed, 1 missing, 1 moved, 1 repointed\n")
    calibration = f"calibration:{named['Light_001_cal.fits']}"
    assert (
        f"  moved      {calibration} {output} → {elsewhere / output.name} (re-pointed)"
        in fixed.stderr.splitlines()
    )
    with Catalog(night.db) as catalog:
        tree = provenance(catalog, str(elsewhere / output.name))
    assert tree.tree.path == str(elsewhere / output.name)
    assert tree.tree.file == "ok"

    again = runner.invoke(app, [*db, "audit"])
    assert again.exit_code == 1
    assert again.stdout.endswith("30 ok, 1 changed, 1 missing\n")


def hash_prefix(n: Night, path: Path) -> str:
    with Catalog(n.db) as catalog, catalog.session() as session:
        sha = session.scalar(select(Frame.sha256).where(Frame.path == str(path)))
    assert sha is not None
    return sha[:12]


def test_a_moved_raw_frame_is_repointed_and_process_has_nothing_to_do(night: Night, tmp_path: Path) -> None:
    source = night.raw("Bias_002.fits")
    target = tmp_path / "attic" / "Bias_002.fits"
    target.parent.mkdir()
    shutil.move(source, target)
    calls: list[tuple[str, int, int]] = []
    with Catalog(night.db) as catalog:
        report = audit(
            catalog, search=[tmp_path / "attic"], fix=True, jobs=2, progress=lambda *call: calls.append(call)
        )
        assert calls[0] == ("Hashing recorded files", 0, 32)
        assert calls[32] == ("Hashing recorded files", 32, 32)
        assert calls[-1] == ("Searching for moved files", 1, 1)
        (item,) = report.problems
        assert (item.state, item.found, item.repointed) == ("moved", str(target), True)
        assert report.exit_code == 1
        with catalog.session() as session:
            frame = session.scalars(select(Frame).where(Frame.path == str(target))).one()
            assert (frame.status, frame.size, frame.mtime) == (
                "ok",
                target.stat().st_size,
                target.stat().st_mtime,
            )
        assert audit(catalog).exit_code == 0
    summary = night.process()
    assert summary.nothing_done, summary.headline()
    assert BIAS in {Path(m.path or "").name for m in summary.masters}


def test_a_moved_file_whose_new_path_is_catalogued_is_not_repointed(night: Night, tmp_path: Path) -> None:
    source = night.raw("Light_002.fits")
    copy = night.root / "raw" / "LIGHT" / "copy" / "Light_002.fits"
    copy.parent.mkdir()
    shutil.copy2(source, copy)
    with Catalog(night.db) as catalog:
        from ccdcal.ingestion.core import ingest

        ingest(catalog, [copy])
        source.unlink()
        report = audit(catalog, search=[copy.parent], fix=True)
    (item,) = report.problems
    assert (item.state, item.repointed) == (
        "missing",
        False,
    )  # the copy is a catalogued file, not a candidate


def test_a_file_moved_to_a_name_that_is_not_utf8_is_found_but_not_repointed(
    night: Night, tmp_path: Path, runner: CliRunner
) -> None:
    """The catalog stores paths as text (docs/design.md, Ingest): the moved file is shown with its bytes
    escaped and the fix, and its row keeps its path."""
    source = night.raw("Light_002.fits")
    folder = tmp_path / "moved"
    folder.mkdir()
    os.rename(source, os.fsencode(folder) + b"/Light_002_caf\xe9.fits")
    with Catalog(night.db) as catalog:
        report = audit(catalog, search=[folder], fix=True)
        (item,) = report.problems
        assert (item.state, item.found, item.repointed) == (
            "moved",
            f"{folder}/Light_002_caf\\xe9.fits",
            False,
        )
        assert item.note == (
            "not re-pointed: the file name Light_002_caf\\xe9.fits is not valid UTF-8 (byte \\xe9, perhaps "
            "latin-1): the catalog stores paths as text; rename the file (for example with convmv -f latin1 "
            "-t utf8 --notest), then run audit --fix-missing again"
        )
        with catalog.session() as session:
            assert session.scalar(select(Frame.path).where(Frame.id == item.id)) == str(source)
    shown = runner.invoke(app, ["--db", str(night.db), "audit", "--search", str(folder), "--json"])
    assert shown.exit_code == 1
    assert json.loads(shown.stdout)["problems"][0]["found"] == f"{folder}/Light_002_caf\\xe9.fits"


def test_hashing_reports_missing_and_unreadable_files(tmp_path: Path) -> None:
    present = tmp_path / "a.fits"
    present.write_bytes(b"x" * 10)
    hashed = hash_files([str(present), str(tmp_path / "gone.fits"), str(tmp_path), str(present)], jobs=2)
    assert len(hashed) == 3
    assert hashed[str(present)].state(sha256_file(present)) == "ok"
    assert hashed[str(present)].state("0" * 64) == "changed"
    assert hashed[str(present)].state(None) == "unchecked"
    assert hashed[str(tmp_path / "gone.fits")].state("0" * 64) == "missing"
    assert (hashed[str(tmp_path)].error, hashed[str(tmp_path)].state("0" * 64)) == (
        "unreadable: a folder",
        "unreadable",
    )


def test_the_audit_json_schema(night: Night, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--db", str(night.db), "audit", "--json", "--jobs", "1"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data == {
        "run": 3,
        "checked": FILES,
        "counts": {"ok": 32, "changed": 0, "missing": 0, "unreadable": 0, "moved": 0, "repointed": 0},
        "searched": [],
        "fix": False,
        "problems": [],
    }
    with Catalog(night.db) as catalog, catalog.session() as session:
        assert session.scalar(select(Run.arguments).where(Run.id == 3)) == {
            "search": [],
            "fix_missing": False,
            "jobs": 1,
        }
