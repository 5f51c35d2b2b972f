"""Masters change only when their pixels would: options that act on lights only never version a master,
every master carries its UNCERT, and a superseded master of the identity to build is made current again
(docs/design.md, Catalog, ``identity``). Issue 18, item 5: the demo ended with 21 masters."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Master
from ccdcal.files.cardtext import history_lines
from ccdcal.ingestion.core import ingest
from ccdcal.kernels.combine import ClipParams
from ccdcal.kernels.options import LIGHT_STEP_FIELDS, MASTER_STEP_FIELDS, StepOptions
from ccdcal.kernels.overscan import OverscanPlan, parse_section
from ccdcal.lights.options import MASTER_FIELDS, ProcessOptions
from ccdcal.lights.pipeline import dry_run, process
from ccdcal.masters.build import build_masters
from ccdcal.masters.calibrators import master_identities
from ccdcal.masters.groups import GroupPlan, MasterOptions
from ccdcal.masters.optional import InputSteps
from ccdcal.simulate import simulate_night
from ccdcal.trace.impact import impact, mark_bad, mark_good
from tests.conftest import with_step_options
from tests.processed_night import BIAS, processed_night


def rows(catalog: Catalog, model: Any) -> list[Any]:
    with catalog.session() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def master_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("master_*.fits"))


def options(root: Path, **changes: Any) -> ProcessOptions:
    values: dict[str, Any] = {"masters_dir": root / "masters", "output_dir": root / "calibrated", "jobs": 1}
    return ProcessOptions(**with_step_options(values | changes))


def test_lights_options_build_no_master_on_the_demo_night(db_url: str, tmp_path: Path) -> None:
    """``process`` with and without ``--uncertainty``, ``--cosmic-rays``, ``--no-bpm``, in turns and
    together, on the demo's night (``ccdcal simulate --seed 1``): seven masters and a mask, built once."""
    night = simulate_night(tmp_path / "raw", seed=1)
    folder = tmp_path / "masters"
    with Catalog(db_url) as catalog:
        ingest(catalog, [night.root])
        first = process(catalog, options(tmp_path))
        assert first.exit_code == 0, first.problem_lines()
        assert len(first.masters_of("built")) == 7
        masks = build_masters(catalog, MasterOptions(masters_dir=folder, bpm=True))
        assert [r.outcome for r in masks.reports] == ["current"] * 7 + ["built"]
        built = master_files(folder)
        assert len(built) == 8
        for master in rows(catalog, Master):
            if master.kind != "bpm":  # every master carries its combine's uncertainty
                assert fits.getheader(master.path, "UNCERT")["UTYPE"] == "StdDevUncertainty"
                assert fits.getheader(master.path)["UNCERTEX"] == "UNCERT"
                assert master.parameters["steps"] == {
                    "uncertainty": True,
                    "saturation": {
                        "option": None,
                        "levels": [
                            {
                                "level": 65535.0,
                                "source": "data type",
                                "detail": "BITPIX 16, BZERO 32768",
                                "count": master.n_inputs,
                            }
                        ],
                        "samples": 0,
                    },
                }

        toggles = [
            {"uncertainty": True, "readnoise": 3.5},
            {"cosmic_rays": True},
            {"no_bpm": True},
            {"uncertainty": True, "readnoise": 3.5, "cosmic_rays": True, "no_bpm": True},
            {},
        ]
        for changes in toggles:
            planned = dry_run(catalog, options(tmp_path, **changes))
            assert {m.outcome for m in planned.masters} == {"current"}, changes
            summary = process(catalog, options(tmp_path, **changes))
            assert summary.exit_code == 0, (changes, summary.problem_lines())
            assert {m.outcome for m in summary.masters} == {"current"}, changes
            assert len(summary.of("calibrated")) == 3, changes  # the lights' steps changed
            assert master_files(folder) == built, changes
        assert process(catalog, options(tmp_path)).nothing_done
        again = build_masters(
            catalog, MasterOptions(masters_dir=folder, bpm=True, optional=StepOptions(uncertainty=True))
        )
        assert {r.outcome for r in again.reports} == {"current"}  # every master has its UNCERT already

        masters = rows(catalog, Master)
        assert len(masters) == 8
        assert {(m.status, m.version) for m in masters} == {("current", 1)}
        with_all = [c for c in rows(catalog, Calibration) if "uncertainty" in c.steps]
        assert with_all
        assert {json.dumps(c.steps["uncertainty"]["masters"], sort_keys=True) for c in with_all} == {
            json.dumps({"bias": True, "dark": True, "flat": True}, sort_keys=True)
        }
    assert master_files(folder) == built


def test_mark_bad_then_mark_good_builds_only_at_the_mark_bad(db_url: str, tmp_path: Path) -> None:
    """A bias marked bad builds the bias, darks and flats again without it; marked good again, the first
    versions (files intact) are made current again: no file is written, and the lights calibrated with
    the second versions are calibrated again with the first."""
    night = processed_night(tmp_path, db=db_url, n_bias=4)
    first_files = master_files(night.masters)
    assert len(first_files) == 7
    bad = night.raw("Bias_002.fits")
    with Catalog(night.db) as catalog:
        first = {m.id: m for m in rows(catalog, Master)}
        mark_bad(catalog, str(bad), "hot column")
    rebuilt = night.process()
    assert rebuilt.exit_code == 0, rebuilt.problem_lines()
    assert len(rebuilt.masters_of("built")) == 7
    assert len(rebuilt.of("calibrated")) == 2
    second_files = master_files(night.masters)
    assert len(second_files) == 14  # built at the mark-bad: seven _v2

    with Catalog(night.db) as catalog:
        second = {m.id: m for m in rows(catalog, Master) if m.id not in first}
        good = mark_good(catalog, str(bad), "the column was a satellite")
        assert good.changed
        planned = dry_run(catalog, night.options())
        assert [m.outcome for m in planned.masters] == ["restore"] * 7
        assert {m.master_id for m in planned.masters} == set(first)
        assert len(planned.of("calibrate")) == 2
        assert len(rows(catalog, Master)) == 14  # the dry run wrote nothing
    restored = night.process()
    assert restored.exit_code == 0, restored.problem_lines()
    assert [m.outcome for m in restored.masters] == ["restored"] * 7
    assert restored.run_summary()["masters"] == {"built": 0, "restored": 7, "current": 0, "skipped": 0}
    assert {m.master_id for m in restored.masters} == set(first)
    assert restored.masters[0].reason == f"{BIAS} (version 1) made current again, its file intact"
    assert master_files(night.masters) == second_files  # no file written at the mark-good

    with Catalog(night.db) as catalog:
        masters = {m.id: m for m in rows(catalog, Master)}
        assert len(masters) == 14
        assert {i for i, m in masters.items() if m.status == "current"} == set(first)
        for i in first:  # the same rows, files and sha256, current again
            assert masters[i].superseded_reason is None
            assert (masters[i].path, masters[i].sha256, masters[i].version) == (
                first[i].path,
                first[i].sha256,
                first[i].version,
            )
        bias_v2 = next(m for i, m in masters.items() if i in second and m.kind == "bias")
        assert bias_v2.status == "superseded"
        assert bias_v2.superseded_reason == (
            f"{BIAS} (version 1) made current again, its file intact: 1 new input: Bias_002.fits"
        )
        calibrations = rows(catalog, Calibration)
        now = [c for c in calibrations if c.status == "current"]
        assert len(now) == 2
        with catalog.session() as session:
            used = set(
                session.scalars(
                    select(CalibrationMaster.master_id).where(
                        CalibrationMaster.calibration_id.in_([c.id for c in now])
                    )
                )
            )
        assert used <= set(first)  # calibrated with the good masters again
        assert all((c.superseded_reason or "").startswith("new bias master ") for c in calibrations[2:4])
        downstream = impact(catalog, str(bad))
        assert len(downstream.current_masters()) == 7  # the first versions are made from it again
    assert night.process().nothing_done


def test_a_master_without_uncert_leaves_its_term_out_until_built_again(db_url: str, tmp_path: Path) -> None:
    """A master an earlier ccdcal wrote without UNCERT (rewritten so here) is used as it is by a light
    asking --uncertainty, its term left out with a note; ``masters --uncertainty`` builds it again once."""
    night = processed_night(tmp_path, db=db_url)
    flat = night.masters / "master_flat_b2x2_g120_sNA_C-10_R.fits"
    with fits.open(flat) as hdul:
        primary = fits.PrimaryHDU(hdul[0].data, hdul[0].header)
    del primary.header["UNCERTEX"]
    flat.unlink()
    primary.writeto(flat)
    with Catalog(night.db) as catalog, catalog.session() as session:
        (row,) = session.scalars(select(Master).where(Master.path == str(flat)))
        row.sha256 = hashlib.sha256(flat.read_bytes()).hexdigest()
        row.parameters = {k: v for k, v in row.parameters.items() if k != "steps"}  # as written before
    with Catalog(night.db) as catalog:
        summary = process(
            catalog,
            dataclasses.replace(night.options(), optional=StepOptions(uncertainty=True, readnoise=3.5)),
        )
        assert summary.exit_code == 0, summary.problem_lines()
        assert {m.outcome for m in summary.masters} == {"current"}  # no master built for the lights
        (light,) = [c for c in rows(catalog, Calibration) if c.status == "current" and "Light_001" in c.path]
        assert light.steps["uncertainty"]["masters"] == {"bias": True, "dark": True, "flat": False}
        history = history_lines(str(h) for h in fits.getheader(light.path)["HISTORY"])
        assert (
            "uncertainty: the flat master master_flat_b2x2_g120_sNA_C-10_R.fits has no UNCERT (written by an "
            "earlier ccdcal): its term is left out; `ccdcal masters --uncertainty` builds it again with one"
        ) in history
        assert "uncertainty: propagated with the bias, dark masters' UNCERT (NDData rules)" in history
        assert np.all(np.isfinite(fits.getdata(light.path, "UNCERT")))

        again = build_masters(
            catalog, MasterOptions(masters_dir=night.masters, optional=StepOptions(uncertainty=True))
        )
        assert [(r.kind, r.outcome) for r in again.reports if r.outcome != "current"] == [("flat", "built")]
        (old,) = [m for m in rows(catalog, Master) if m.path == str(flat)]
        assert (old.status, old.superseded_reason) == (
            "superseded",
            "no UNCERT extension: built again with one (--uncertainty)",
        )
        assert {
            r.outcome for r in build_masters(catalog, MasterOptions(masters_dir=night.masters)).reports
        } == {"current"}
        recalibrated = process(
            catalog,
            dataclasses.replace(night.options(), optional=StepOptions(uncertainty=True, readnoise=3.5)),
        )
        assert [x.path for x in recalibrated.of("calibrated")] == [str(night.raw("Light_001.fits"))]


# -- the split, as data ---------------------------------------------------------------------------------


def test_which_options_version_a_master_is_declared_once() -> None:
    """Every optional step is declared either a master's or the lights' alone, and the lights' ones (with
    the process options the master build does not take) leave the master build's options as they are."""
    names = {f.name for f in dataclasses.fields(StepOptions)}
    assert set(MASTER_STEP_FIELDS) | set(LIGHT_STEP_FIELDS) == names
    assert not set(MASTER_STEP_FIELDS) & set(LIGHT_STEP_FIELDS)
    lights = StepOptions.parse(uncertainty=True, gain=2.0, readnoise=3.0, cosmic_rays=True)
    assert lights.for_masters() == StepOptions()
    assert StepOptions.parse(overscan="off", uncertainty=True).for_masters() == StepOptions.parse(
        overscan="off"
    )
    base = ProcessOptions()
    for item in dataclasses.fields(ProcessOptions):
        if item.name in MASTER_FIELDS:
            continue
        value = getattr(base, item.name)
        changed = {
            bool: lambda v: not v,
            Path: lambda v: Path("/elsewhere"),
        }.get(type(value), lambda v: v)(value)
        assert dataclasses.replace(base, **{item.name: changed}).master_options() == base.master_options()
    with_lights = dataclasses.replace(base, optional=lights, no_bpm=True, redo=True, flat_min=0.2)
    assert with_lights.master_options() == base.master_options()


def _old_identity(plan: GroupPlan, params: ClipParams, steps: dict[str, Any] | None) -> str:
    """A master's identity as ccdcal computed it before every master carried its UNCERT."""
    payload: dict[str, Any] = {
        "kind": plan.kind,
        "inputs": sorted((f["id"], f["sha256"]) for f in plan.frames),
        "bias": None,
        "dark": None,
        "dark_scales": [],
        "includes_bias": plan.includes_bias,
        "params": params.as_dict(),
    }
    if steps is not None:
        payload["steps"] = steps
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@pytest.mark.parametrize("overscan", [False, True])
def test_masters_of_older_catalogs_keep_their_identity(overscan: bool) -> None:
    """A master built before is found under its identity: the one it was built with without
    --uncertainty, and the one it was built with --uncertainty (the same pixels) as the second."""
    frames = [{"id": i, "sha256": f"{i:064x}"} for i in (3, 1, 2)]
    plan = GroupPlan("bias", {}, frames)
    signature: dict[str, Any] | None = None
    if overscan:
        scan = OverscanPlan("median", parse_section("[61:70,1:40]", (40, 70)), None, 1)
        plan.input_steps = InputSteps("auto", scan)
        signature = scan.signature()
    params = ClipParams()
    plain, legacy = master_identities(plan, params)
    without = {"overscan": signature, "uncertainty": False} if overscan else None
    assert plain == _old_identity(plan, params, without)
    assert legacy == _old_identity(plan, params, {"overscan": signature, "uncertainty": True})


def test_a_mask_is_made_current_again_with_its_dark(db_url: str, tmp_path: Path) -> None:
    """A dark frame marked bad, then good: the 300 s dark and the bad-pixel mask made from it are built
    once without it, then the first versions made current again, each in one transaction."""
    night = processed_night(tmp_path, db=db_url)
    steps = dataclasses.replace(night.options(), min_frames=2)  # no identity holds --min-frames
    masks = MasterOptions(masters_dir=night.masters, min_frames=2, bpm=True)
    bad = night.raw("Dark_300s_002.fits")
    with Catalog(night.db) as catalog:
        (mask,) = [r for r in build_masters(catalog, masks).reports if r.outcome == "built"]
        assert mask.kind == "bpm"
        mark_bad(catalog, str(bad), "light leak")
        assert [r.kind for r in process(catalog, steps).masters_of("built")] == ["dark"]
        outcomes = [
            (r.kind, r.outcome) for r in build_masters(catalog, masks).reports if r.outcome != "current"
        ]
        assert outcomes == [("bpm", "built")]
        files = master_files(night.masters)
        assert len(files) == 10  # 7, the mask, then the dark and the mask without Dark_300s_002
        mark_good(catalog, str(bad))
        assert [(r.kind, r.outcome) for r in process(catalog, steps).masters if r.outcome != "current"] == [
            ("dark", "restored")
        ]
        again = [r for r in build_masters(catalog, masks).reports if r.outcome != "current"]
        assert [(r.kind, r.outcome, r.master_id) for r in again] == [("bpm", "restored", mask.master_id)]
        assert master_files(night.masters) == files
        (bpm_v2,) = [m for m in rows(catalog, Master) if m.kind == "bpm" and m.status == "superseded"]
        assert (bpm_v2.superseded_reason or "").startswith(
            "master_bpm_b2x2_g120_sNA_CNA.fits (version 1) made current again, its file intact: made from "
        )
        assert process(catalog, steps).exit_code == 0  # the lights take the mask made current again
        assert process(catalog, steps).nothing_done
