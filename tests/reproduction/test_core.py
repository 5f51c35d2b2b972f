"""``ccdcal reproduce`` as a library call: every result of a reduction with every step made again bit for
bit, and each kind of change since — a raw byte, a master byte, a recorded parameter — found and named."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Master, Run
from ccdcal.errors import NotFoundError, UsageError
from ccdcal.reproduction.core import INPUT_KEYS, PRODUCT_KEYS, RESULT_KEYS, Reproduction, reproduce
from ccdcal.trace.provenance import provenance
from tests.reproduction.conftest import Reduced, calibration_of, flipped, master_of


def every_result(catalog: Catalog) -> list[str]:
    """Every current calibration and every master, as ids."""
    with catalog.reading() as session:
        calibrations = session.scalars(select(Calibration.id).where(Calibration.status == "current"))
        refs = [f"calibration:{i}" for i in calibrations]
        refs += [f"master:{i}" for i in session.scalars(select(Master.id))]
    return refs


@contextmanager
def edited_steps(catalog: Catalog, calibration_id: int, change: Any) -> Iterator[None]:
    """``calibrations.steps`` of one row changed by ``change(steps)`` for the length of the block."""
    with catalog.session() as session:
        row = session.get(Calibration, calibration_id)
        assert row is not None
        kept = dict(row.steps)
        steps = {key: dict(value) if isinstance(value, dict) else value for key, value in kept.items()}
        change(steps)
        session.execute(update(Calibration).where(Calibration.id == calibration_id).values(steps=steps))
    try:
        yield
    finally:
        with catalog.session() as session:
            session.execute(update(Calibration).where(Calibration.id == calibration_id).values(steps=kept))


@contextmanager
def edited_parameters(catalog: Catalog, master_id: int, change: Any) -> Iterator[None]:
    with catalog.session() as session:
        row = session.get(Master, master_id)
        assert row is not None
        kept = dict(row.parameters)
        parameters = dict(kept)
        change(parameters)
        session.execute(update(Master).where(Master.id == master_id).values(parameters=parameters))
    try:
        yield
    finally:
        with catalog.session() as session:
            session.execute(update(Master).where(Master.id == master_id).values(parameters=kept))


def reasons(result: Reproduction) -> str:
    return "\n".join(result.lines())


# -- bit for bit -------------------------------------------------------------------------------------------


def test_every_result_of_the_night_is_reproduced_bit_for_bit(night: Reduced) -> None:
    with night.catalog() as catalog:
        refs = every_result(catalog)
        results = {ref: reproduce(catalog, ref) for ref in refs}
        light = calibration_of(catalog, "Light_001")
    assert {ref: r.exit_code for ref, r in results.items()} == dict.fromkeys(refs, 0)
    kinds = {r.products[0].recipe.kind for r in results.values()}
    assert kinds == {"light", "bias", "dark", "flat", "bpm"}
    # every step of a light took part: a scaled dark, the flat, the bad-pixel mask, uncertainty, cosmic rays
    assert light.dark_scale_factor == pytest.approx(0.2)
    assert {"bias", "dark", "flat", "bpm", "uncertainty", "cosmic_rays"} <= set(light.steps)
    result = results[f"calibration:{light.id}"]
    assert [u.name for u in result.products[0].units] == ["PRIMARY", "MASK", "UNCERT"]
    assert result.lines() == [
        f"calibration:{light.id} Light_001_cal.fits: reproduced bit for bit (PRIMARY, MASK, UNCERT)"
    ]
    assert result.products[0].recipe.depends_on == ["cosmic_rays"]


def test_the_overscan_ccd_is_reproduced_bit_for_bit_with_its_lineage(ccd: Reduced) -> None:
    with ccd.catalog() as catalog:
        refs = every_result(catalog)
        results = {ref: reproduce(catalog, ref, deep=True) for ref in refs}
        light = calibration_of(catalog, "light_0")
    assert {ref: r.exit_code for ref, r in results.items()} == dict.fromkeys(refs, 0)
    assert light.steps["overscan"]["method"] == "poly:1"
    assert {"bpm", "uncertainty", "cosmic_rays"} <= set(light.steps)
    deep = results[f"calibration:{light.id}"]
    assert [p.recipe.kind for p in deep.products] == ["light", "bias", "flat", "bpm", "flat"][
        : len(deep.products)
    ]
    assert {"overscan_fit", "cosmic_rays"} <= set(deep.products[0].recipe.depends_on)


def test_deep_makes_every_master_of_the_lineage_again(night: Reduced) -> None:
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_001")
        tree = provenance(catalog, f"calibration:{light.id}").tree
        result = reproduce(catalog, f"calibration:{light.id}", deep=True)
    lineage = {node.ref for node in tree.walk() if node.node == "master"}
    refs = [p.recipe.ref for p in result.products]
    assert refs[0] == f"calibration:{light.id}"
    assert sorted(refs[1:]) == sorted(lineage)
    assert len(refs) == len(set(refs))
    assert result.exit_code == 0
    assert all(line.startswith("  master:") for line in result.lines()[1:])
    assert all(p.outcome == "reproduced" for p in result.products)


# -- what changed since ------------------------------------------------------------------------------------


def test_a_changed_raw_byte_names_the_raw_file_with_both_sha256(night: Reduced) -> None:
    raw = night.raw / "LIGHT" / "Light_001.fits"
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_001")
        with flipped(raw) as (before, after):
            result = reproduce(catalog, f"calibration:{light.id}")
        again = reproduce(catalog, f"calibration:{light.id}")
    assert result.exit_code == 1
    assert result.lines() == [
        f"calibration:{light.id} Light_001_cal.fits: not reproduced: an input is no longer what was recorded",
        f"  raw light frame:{light.frame_id} {raw} has sha256 {after}, recorded {before}: restore it from "
        "a backup (`ccdcal audit --search DIR` finds a moved copy), or `ccdcal masters` and `ccdcal "
        "process` make new results from what it holds now",
    ]
    (product,) = result.products
    assert product.outcome == "input_changed"
    assert [(s.input.role, s.file) for s in product.inputs if s.file != "ok"] == [("light", "changed")]
    assert again.exit_code == 0


def test_a_changed_raw_byte_of_a_master_input_names_it(night: Reduced) -> None:
    raw = night.raw / "BIAS" / "Bias_002.fits"
    with night.catalog() as catalog:
        bias = master_of(catalog, "bias")
        light = calibration_of(catalog, "Light_002")
        with flipped(raw) as (before, after):
            alone = reproduce(catalog, f"master:{bias.id}")
            shallow = reproduce(catalog, f"calibration:{light.id}")
            deep = reproduce(catalog, f"calibration:{light.id}", deep=True)
    assert alone.exit_code == 1
    assert "  raw frame frame:" in alone.lines()[1]
    assert f"{raw} has sha256 {after}, recorded {before}: " in alone.lines()[1]
    assert shallow.exit_code == 0  # the light's own inputs are its masters, as recorded
    assert deep.exit_code == 1
    assert deep.products[0].outcome == "reproduced"
    changed = [p for p in deep.products if p.outcome != "reproduced"]
    assert [p.recipe.ref for p in changed] == [f"master:{bias.id}"]
    assert "    raw frame frame:" in "\n".join(deep.lines())


def test_a_changed_master_byte_names_the_master(night: Reduced) -> None:
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_001")
        flat = master_of(catalog, "flat", filter="R")
        with flipped(flat.path, at=2000) as (before, after):
            used = reproduce(catalog, f"calibration:{light.id}")
            itself = reproduce(catalog, f"master:{flat.id}")
    assert used.exit_code == 1
    assert used.lines()[1] == (
        f"  master flat master:{flat.id} {flat.path} has sha256 {after}, recorded {before}: restore it from "
        "a backup, or build the masters again (`ccdcal masters`)"
    )
    assert itself.exit_code == 1
    name = Path(flat.path).name
    assert itself.lines()[:3] == [
        f"master:{flat.id} {name}: not reproduced: the file is no longer what the catalog recorded",
        f"  the flat master {flat.path} has sha256 {after}, recorded {before}: it was changed after ccdcal "
        "wrote it; restore it from a backup, or build the masters again (`ccdcal masters`)",
        "  PRIMARY: 1 of 3,072 pixels differ (max |Δ| " + itself.lines()[2].split("max |Δ| ")[1],
    ]
    assert itself.products[0].outcome == "file_changed"


def test_a_changed_recorded_parameter_gives_the_statistics_of_the_difference(night: Reduced) -> None:
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_001")
        ref = f"calibration:{light.id}"

        def clamp_more(steps: dict[str, Any]) -> None:
            steps["flat"]["flat_min"] = 0.99

        with edited_steps(catalog, light.id, clamp_more):
            result = reproduce(catalog, ref)
        with catalog.session() as session:
            session.execute(
                update(Calibration).where(Calibration.id == light.id).values(dark_scale_factor=0.5)
            )
        try:
            scaled = reproduce(catalog, ref)
        finally:
            with catalog.session() as session:
                session.execute(
                    update(Calibration).where(Calibration.id == light.id).values(dark_scale_factor=0.2)
                )
        bias = master_of(catalog, "bias")

        def clip_harder(parameters: dict[str, Any]) -> None:
            parameters["sigma_lower"] = parameters["sigma_upper"] = 0.6

        with edited_parameters(catalog, bias.id, clip_harder):
            master = reproduce(catalog, f"master:{bias.id}")
        assert reproduce(catalog, ref).exit_code == 0
    assert result.exit_code == 1
    lines = result.lines()
    assert lines[0] == f"{ref} Light_001_cal.fits: not reproduced: it differs from the recorded file"
    assert lines[1].startswith("  PRIMARY: ")
    assert "of 3,072 pixels differ (max |Δ| " in lines[1]
    primary = result.products[0].units[0]
    assert primary.difference is not None
    assert 0 < primary.difference["pixels"] < 3072
    assert any(line.startswith("  MASK: ") for line in lines)
    assert any("the same versions now" in line for line in lines)
    assert "depends on the version of ccdproc and astroscrappy" in reasons(result)
    assert scaled.exit_code == 1
    assert scaled.lines()[1].startswith("  PRIMARY: ")
    assert master.exit_code == 1
    assert master.lines()[1].startswith("  PRIMARY: ")
    assert master.lines()[-1].startswith("  every input has its recorded sha256 and the software is the same")


def test_a_row_of_an_older_ccdcal_is_reproduced_saying_what_it_lacks(night: Reduced) -> None:
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_002")
        dark = master_of(catalog, "dark", exptime=300.0)

        def older(steps: dict[str, Any]) -> None:
            del steps["flat"]["flat_min"]

        with edited_steps(catalog, light.id, older):
            result = reproduce(catalog, f"calibration:{light.id}")
        with edited_parameters(catalog, dark.id, lambda p: p.pop("input_ids")):
            master = reproduce(catalog, f"master:{dark.id}")
    assert result.exit_code == 0
    assert result.products[0].recipe.assumed == [
        "the flat's --flat-min is not recorded (a calibration of an older ccdcal): 0.01, the default, is used"
    ]
    assert master.exit_code == 0


def test_reproduce_only_reads(night: Reduced, tmp_path: Path) -> None:
    listing = sorted(p.name for folder in (night.masters, night.calibrated) for p in folder.iterdir())
    with night.catalog() as catalog, catalog.reading() as session:
        runs = session.scalar(select(func.count()).select_from(Run))
    url = night.db if night.db.startswith("postgresql") else f"sqlite:///{night.db}?mode=ro"
    with Catalog(url) as catalog:
        refs = every_result(catalog)
        assert all(reproduce(catalog, ref).exit_code == 0 for ref in refs[:2])
        with catalog.reading() as session:
            assert session.scalar(select(func.count()).select_from(Run)) == runs
    assert sorted(p.name for folder in (night.masters, night.calibrated) for p in folder.iterdir()) == listing


def test_what_ccdcal_did_not_make_or_does_not_know_is_refused(night: Reduced) -> None:
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_001")
        with pytest.raises(UsageError, match=r"^frame:1: a raw frame \("):
            reproduce(catalog, "frame:1")
        with pytest.raises(NotFoundError, match=r"^master:99999: no master with id 99999 in the catalog$"):
            reproduce(catalog, "master:99999")
        with catalog.session() as session:
            session.execute(
                update(Calibration).where(Calibration.id == light.id).values(status="failed", error="boom")
            )
        try:
            with pytest.raises(
                UsageError, match=rf"^calibration:{light.id} failed \(boom\): it has no output"
            ):
                reproduce(catalog, f"calibration:{light.id}")
        finally:
            with catalog.session() as session:
                session.execute(
                    update(Calibration).where(Calibration.id == light.id).values(status="current", error=None)
                )


def test_the_json_keys_are_stable(night: Reduced) -> None:
    with night.catalog() as catalog:
        light = calibration_of(catalog, "Light_001")
        data = reproduce(catalog, str(light.path), deep=True).as_dict()
    assert tuple(data) == RESULT_KEYS
    assert data["target"] == f"calibration:{light.id}"
    assert data["outcome"] == "reproduced"
    assert set(data["versions"]) == {"then", "now"}
    assert set(data["versions"]["now"]) == {"ccdcal", "numpy", "astropy", "ccdproc", "python"}
    for product in data["products"]:
        assert tuple(product) == PRODUCT_KEYS
        assert all(tuple(item) == INPUT_KEYS for item in product["inputs"])
        assert all(
            set(hdu) == {"name", "recorded", "reproduced", "same", "difference"} for hdu in product["hdus"]
        )
    assert data["products"][0]["depends_on"] == {"cosmic_rays": ["ccdproc", "astroscrappy"]}
