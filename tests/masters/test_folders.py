"""Masters and output folders owned by one catalog (ccdcal.masters.folders): two catalogs in one project
folder (``--db test.db`` beside ``./ccdcal.db``) never write into each other's ``masters/`` and
``calibrated/``; folders made before the markers are adopted by the catalog that knows their files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Run
from ccdcal.cli import app
from ccdcal.config.run import run_config
from ccdcal.errors import FolderOwnerError
from ccdcal.files.ownership import MARKER, read_marker
from ccdcal.simulate import simulate_night
from tests.config.test_run import seed_project


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for folder in folders
        for p in sorted(folder.iterdir())
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the working directory) with a raw night, ingested into ``./ccdcal.db`` and
    into ``test.db``."""
    night = simulate_night(tmp_path / "raw", seed=5, shape=(32, 40), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for db in ("ccdcal.db", "test.db"):
        assert runner.invoke(app, ["--db", db, "ingest", str(night.root)]).exit_code == 0
    return tmp_path


def test_a_second_catalog_in_the_same_project_is_refused_its_folders(project: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["process", "--jobs", "1"])
    assert first.exit_code == 0, first.output
    with Catalog("ccdcal.db") as catalog:
        owner = catalog.catalog_id
    for folder in ("masters", "calibrated"):
        marker = read_marker(project / folder)
        assert marker is not None
        assert (marker.catalog_id, marker.catalog) == (owner, str(project / "ccdcal.db"))
    before = snapshot(project / "masters", project / "calibrated")
    refused = runner.invoke(app, ["--db", "test.db", "process", "--jobs", "1"])
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert refused.stderr == (
        f"Error: the masters folder {project / 'masters'} belongs to another catalog (id {owner}; it is "
        f"{project / 'ccdcal.db'}): use another --masters-dir, or work on the catalog that owns it (--db)\n"
    )
    masters = runner.invoke(app, ["--db", "test.db", "masters"])
    assert masters.exit_code == 2
    assert masters.stderr.startswith(f"Error: the masters folder {project / 'masters'} belongs to another")
    output_only = runner.invoke(app, ["--db", "test.db", "process", "--masters-dir", "m2", "--jobs", "1"])
    assert output_only.exit_code == 2
    assert output_only.stderr.startswith(
        f"Error: the output folder {project / 'calibrated'} belongs to another catalog (id {owner}"
    )
    assert output_only.stderr.rstrip().endswith(
        "use another --output-dir, or work on the catalog that owns it (--db)"
    )
    assert snapshot(project / "masters", project / "calibrated") == before
    with Catalog("test.db") as other:
        with other.reading() as session:  # refused before its run began
            assert session.scalars(select(Run.command)).all() == ["ingest"]
        other_id = other.catalog_id
    assert not (project / "m2" / "master_bias_b2x2_g120_sNA_C-10.fits").exists()
    elsewhere = runner.invoke(
        app, ["--db", "test.db", "process", "--masters-dir", "m2", "--output-dir", "c2", "--jobs", "1"]
    )
    assert elsewhere.exit_code == 0, elsewhere.output
    assert read_marker(project / "m2") is not None
    assert [read_marker(project / f).catalog_id for f in ("m2", "c2")] == [other_id, other_id]  # type: ignore[union-attr]
    assert snapshot(project / "masters", project / "calibrated") == before


def test_folders_made_before_the_markers_are_adopted_by_their_catalog_only(project: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["process", "--jobs", "1"]).exit_code == 0
    for folder in ("masters", "calibrated"):
        (project / folder / MARKER).unlink()  # as an older ccdcal left them
    before = snapshot(project / "masters", project / "calibrated")
    refused = runner.invoke(app, ["--db", "test.db", "process", "--jobs", "1"])
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"Error: the masters folder {project / 'masters'} holds files ccdcal wrote (such as "
        f"master_bias_b2x2_g120_sNA_C-10.fits) that this catalog does not record, and no {MARKER} naming "
        "their catalog: use another --masters-dir, or work on the catalog that wrote them (--db)\n"
    )
    assert snapshot(project / "masters", project / "calibrated") == before
    again = runner.invoke(app, ["process", "--jobs", "1"])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.stdout
    with Catalog("ccdcal.db") as catalog:
        assert {read_marker(project / f).catalog_id for f in ("masters", "calibrated")} == {  # type: ignore[union-attr]
            catalog.catalog_id
        }


def test_ccdcal_run_claims_its_folders_before_it_ingests(tmp_path: Path) -> None:
    config = seed_project(tmp_path)
    folder = config.parent
    with Catalog(tmp_path / "other.db") as other:
        os.makedirs(folder / "calibrated")
        from ccdcal.masters.folders import own_folders

        own_folders(other, (folder / "calibrated", "output folder", "--output-dir"))
        other_id = other.catalog_id
    with pytest.raises(FolderOwnerError) as refused:
        run_config(config)
    assert str(refused.value) == (
        f"the output folder {folder / 'calibrated'} belongs to another catalog (id {other_id}; it is "
        f"{tmp_path / 'other.db'}): use another [CALIBRATION] output_dir, or work on the catalog that owns "
        "it (--db)"
    )
    with Catalog(folder / "ccdcal.db") as catalog, catalog.reading() as session:
        assert session.scalars(select(Run)).all() == []  # nothing ingested
    assert not (folder / "masters").exists()  # refused before any folder was made
