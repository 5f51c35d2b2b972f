"""``ccdcal provenance --from-header``: the tree read from FITS headers alone equals the catalog's."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from sqlalchemy import select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Master, MasterInput
from ccdcal.cli import app
from ccdcal.errors import NotFoundError, UsageError
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.simulate import simulate_night
from ccdcal.trace.headertrace import history_text, trace_header
from ccdcal.trace.provenance import NODE_KEYS, Node, provenance
from tests.conftest import fitsverify_counts
from tests.processed_night import BIAS, DARK, FLAT, Night, processed_night


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Night:
    return processed_night(tmp_path_factory.mktemp("headers"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def facts(node: Node) -> tuple[Any, ...]:
    """What a header can tell of a node: its type, role, name, path, sha256 and file state, and below."""
    return (
        node.node,
        node.role,
        node.name,
        node.path,
        node.sha256,
        node.file,
        [facts(c) for c in node.children],
    )


def test_an_output_traced_from_headers_equals_the_catalog_tree(done: Night) -> None:
    output = done.calibrated / "Light_002_cal.fits"
    from_headers = trace_header(output, [done.root])
    with Catalog(done.db) as catalog:
        from_catalog = provenance(catalog, str(output))
    assert from_headers.source == "header"
    assert from_headers.tree.file == "unchecked"  # nothing records the file itself
    from_headers.tree.file = "ok"
    assert facts(from_headers.tree) == facts(from_catalog.tree)
    assert from_headers.exit_code == 0
    dark = from_headers.tree.children[2]
    assert (dark.name, dark.match) == (
        DARK[300],
        {"delta_temp": None, "delta_time": None, "scale": 1.0, "pinned": None},
    )


def test_without_the_other_folders_the_names_and_hashes_are_still_told(done: Night) -> None:
    result = trace_header(done.calibrated / "Light_001_cal.fits")
    light, bias, dark, flat = result.tree.children
    assert [(n.node, n.role, n.name, n.path, n.file) for n in (light, bias, dark, flat)] == [
        ("frame", "light", "Light_001.fits", None, "not_found"),
        ("master", "bias", BIAS, None, "not_found"),
        ("master", "dark", DARK[60], None, "not_found"),
        ("master", "flat", FLAT["R"], None, "not_found"),
    ]
    with Catalog(done.db) as catalog, catalog.session() as session:
        recorded = {m.path: m.sha256 for m in session.scalars(select(Master))}
    assert bias.sha256 == recorded[str(done.masters / BIAS)]
    assert flat.sha256 == recorded[str(done.masters / FLAT["R"])]
    assert result.exit_code == 0
    assert result.files() == {"not_found": 4, "unchecked": 1}


def test_masters_carry_the_sha256_of_each_input(done: Night) -> None:
    path = done.masters / FLAT["Ha"]
    header = fits.getheader(path)
    with Catalog(done.db) as catalog, catalog.session() as session:
        master = session.scalars(select(Master).where(Master.path == str(path))).one()
        used = dict(
            session.execute(
                select(MasterInput.sha256, MasterInput.frame_id).where(MasterInput.master_id == master.id)
            ).all()
        )
    names = [header[f"IMCMB{i:03d}"] for i in range(1, 4)]
    hashes = [header[f"IMSHA{i:03d}"] for i in range(1, 4)]
    assert names == [f.name for f in done.raw_named("Flat_Ha_")]
    assert set(hashes) == set(used)
    assert "IMCMB004" not in header
    assert f"bias subtracted: {BIAS} sha256 " in history_text(header)
    assert fitsverify_counts(path) == (0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        assert CCDData.read(path, unit="adu").shape == (48, 64)


def test_a_changed_input_shows_in_a_master_traced_from_its_header(tmp_path: Path, runner: CliRunner) -> None:
    night = processed_night(tmp_path)
    changed = night.raw("Flat_R_002.fits")
    changed.write_bytes(changed.read_bytes().replace(b"Active filter name", b"Active filter NAME", 1))
    result = trace_header(night.masters / FLAT["R"], [night.root])
    states = {(n.name, n.file) for n in result.tree.walk()}
    assert ("Flat_R_002.fits", "changed") in states
    assert ("Flat_R_001.fits", "ok") in states
    assert result.exit_code == 1
    cli = runner.invoke(
        app, ["provenance", "--from-header", str(night.masters / FLAT["R"]), "--search", str(night.root)]
    )
    assert cli.exit_code == 1
    assert cli.stdout.splitlines()[0].startswith(f"master {night.masters / FLAT['R']} sha256 ")
    assert any(
        line.endswith(f"{changed} sha256 {result.tree.children[-2].sha256[:12]} ✗ CHANGED")
        for line in cli.stdout.splitlines()
    )
    assert cli.stdout.splitlines()[-1] == "Files: 1 changed, 10 ok, 1 unchecked"


def test_a_moved_master_is_found_under_a_search_folder(tmp_path: Path) -> None:
    night = processed_night(tmp_path)
    archive = tmp_path / "archive"
    shutil.move(night.masters, archive)
    result = trace_header(night.calibrated / "Light_001_cal.fits", [archive, night.root / "raw"])
    assert {n.path for n in result.tree.children[1:]} == {
        str(archive / BIAS),
        str(archive / DARK[60]),
        str(archive / FLAT["R"]),
    }
    assert {n.file for n in result.tree.walk()} == {"ok", "unchecked"}


def test_the_cli_json_and_errors(done: Night, runner: CliRunner, tmp_path: Path) -> None:
    output = done.calibrated / "Light_001_cal.fits"
    result = runner.invoke(
        app, ["provenance", "--from-header", str(output), "--search", str(done.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["source"], data["target"]) == ("header", str(output))
    stack = [data["tree"]]
    while stack:
        node = stack.pop()
        assert list(node) == list(NODE_KEYS)
        assert node["id"] is None
        stack += node["children"]
    raw = done.raw("Bias_001.fits")
    refused = runner.invoke(app, ["provenance", "--from-header", str(raw)])
    assert (refused.exit_code, refused.stderr) == (
        2,
        f"Error: {raw}: its header holds no ccdcal provenance (no BIASCOR/DARKCOR/FLATCOR, HISTORY or "
        "IMCMBnnn cards written by ccdcal); give a calibrated file or a master written by ccdcal\n",
    )
    absent = tmp_path / "absent.fits"
    missing = runner.invoke(app, ["provenance", "--from-header", str(absent)])
    assert (missing.exit_code, missing.stderr) == (2, f"Error: {absent}: no such file\n")
    with pytest.raises(UsageError):
        trace_header(raw)
    with pytest.raises(NotFoundError):
        trace_header(absent)


#: Raw file names a header must give back exactly (ccdcal.files.cardtext).
ODD_NAMES = (
    "M 51 light 1.fits",
    'it\'s a "light".fits',
    "Lumière_星雲_Ω.fits",
    "two  spaces and 100% and back\\slash.fits",
    "a light whose name is far longer than one HISTORY card can hold, " * 2 + "cut over cards.fits",
)


def test_odd_raw_names_are_read_back_from_the_headers(tmp_path: Path) -> None:
    """Every name ccdcal writes into HISTORY and IMCMBnnn comes back exactly: the raw lights of the outputs
    and the inputs of a master are found again under the search folder."""
    night = simulate_night(tmp_path / "raw", seed=5, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=5)
    lights = sorted(night.files["light"])
    renamed = [light.rename(light.with_name(name)) for light, name in zip(lights, ODD_NAMES, strict=True)]
    bias = sorted(night.files["bias"])[0]
    odd_bias = bias.rename(bias.with_name("Biäs #1 \u00a0(nbsp).fits"))
    options = ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "out", jobs=1)
    with Catalog(tmp_path / "c.db") as catalog:
        ingest(catalog, [tmp_path / "raw"])
        summary = process(catalog, options)
        assert summary.exit_code == 0, summary.problem_lines()
        outputs = {x.path: x.output for x in summary.lights}
    for raw in renamed:
        output = Path(outputs[str(raw)])
        assert fitsverify_counts(output)[1] == 0
        traced = trace_header(output, [tmp_path / "raw"])
        light = traced.tree.children[0]
        assert (light.role, light.name, light.path, light.file) == ("light", raw.name, str(raw), "ok")
    master = tmp_path / "masters" / BIAS
    inputs = trace_header(master, [tmp_path / "raw"]).tree.children
    assert odd_bias.name in [n.name for n in inputs]
    assert {n.file for n in inputs} == {"ok"}
    assert fitsverify_counts(master)[1] == 0
