"""Bad-pixel masks: built by ``masters --bpm`` with provenance, ORed into MASK by ``process``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Master, MasterCalibrator
from ccdcal.cli import app
from ccdcal.files.fitsio import sha256_file
from ccdcal.ingestion.core import ingest
from ccdcal.kernels.options import StepOptions
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.masters.build import build_masters
from ccdcal.masters.groups import MasterOptions
from ccdcal.simulate import SimulatedNight, simulate_night
from tests.conftest import fitsverify_counts

NAME = "master_bpm_b2x2_g120_sNA_CNA.fits"


@pytest.fixture
def night(tmp_path: Path) -> SimulatedNight:
    return simulate_night(tmp_path / "raw", seed=8, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2)


def rows(catalog: Catalog, model: Any, **where: Any) -> list[Any]:
    with catalog.session() as session:
        order = model.id if hasattr(model, "id") else model.role
        return list(session.scalars(select(model).filter_by(**where).order_by(order)))


def test_bpm_master_from_the_dark_and_the_flat(
    catalog: Catalog, tmp_path: Path, night: SimulatedNight
) -> None:
    ingest(catalog, [night.root])
    options = MasterOptions(masters_dir=tmp_path / "masters", bpm=True)
    summary = build_masters(catalog, options)
    (report,) = [r for r in summary.reports if r.kind == "bpm"]
    assert (report.outcome, Path(report.path or "").name) == ("built", NAME)
    (bpm,) = rows(catalog, Master, kind="bpm")
    darks = {m.id: m for m in rows(catalog, Master, kind="dark")}
    flats = {m.id: m for m in rows(catalog, Master, kind="flat")}
    sources = {c.role: c.calibrator_id for c in rows(catalog, MasterCalibrator, master_id=bpm.id)}
    assert darks[sources["dark"]].exptime == 300  # the longest dark shows the most hot pixels
    assert sources["flat"] == max(flats)
    assert (bpm.n_inputs, bpm.method, bpm.instrument, bpm.xbinning) == (0, "bpm", "ZWO ASI294MM Pro", 2)
    mask = fits.getdata(bpm.path)
    assert mask.dtype == np.uint8
    truth = {(y, x) for y, x, rate in night.truth["hot_pixels"] if rate * 300 * 4 > 30}  # > 30 ADU in 300 s
    found = {tuple(int(v) for v in p) for p in np.argwhere(mask)}
    assert truth <= found
    assert len(found) <= len(night.truth["hot_pixels"]) + 10
    counts = bpm.parameters["counts"]
    assert counts["bad"] == int(mask.sum())
    header = fits.getheader(bpm.path)
    assert (header["IMAGETYP"], header["BPMDARK"], header["NBADPIX"]) == (
        "MASTER BPM",
        Path(darks[sources["dark"]].path).name,
        counts["bad"],
    )
    assert fitsverify_counts(Path(bpm.path)) == (0, 0)
    again = build_masters(catalog, options)
    assert [r.outcome for r in again.reports if r.kind == "bpm"] == ["current"]

    processed = process(
        catalog, ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "out", jobs=1)
    )
    assert len(processed.of("calibrated")) == 2
    for light in processed.lights:
        (calibration,) = rows(catalog, Calibration, id=light.calibration_id)
        links = {c.role: c.master_id for c in rows(catalog, CalibrationMaster, calibration_id=calibration.id)}
        assert links["bpm"] == bpm.id
        assert calibration.steps["bpm"]["flagged"] == counts["bad"]
        assert calibration.steps["bpm"]["master_id"] == bpm.id
        out_mask = fits.getdata(calibration.path, "MASK")
        np.testing.assert_array_equal((out_mask & 2) != 0, mask != 0)
        assert fits.getheader(calibration.path)["BPMCOR"] == NAME
        assert fitsverify_counts(Path(calibration.path)) == (0, 0)
        assert light.masters()["bpm"] == NAME
    skipped = process(
        catalog,
        ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "out", jobs=1, no_bpm=True),
    )
    assert {light.reason for light in skipped.of("calibrated")} == {"bad-pixel mask no longer applied"}
    for calibration in rows(catalog, Calibration, status="current"):
        assert "bpm" not in calibration.steps
        with fits.open(calibration.path) as hdul:
            assert "MASK" not in hdul or not (hdul["MASK"].data & 2).any()


def test_a_ctrl_c_during_the_bpm_commit_keeps_the_committed_file(
    catalog: Catalog, tmp_path: Path, night: SimulatedNight, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog's sessions raise a Ctrl-C after a commit it arrived during: the mask's row is then in
    the catalog, and its file must stay."""
    ingest(catalog, [night.root])
    build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters"))
    commit = Session.commit

    def interrupted(session: Session) -> None:
        mask = any(isinstance(o, Master) and o.kind == "bpm" for o in list(session.identity_map.values()))
        commit(session)
        if mask:
            raise KeyboardInterrupt

    monkeypatch.setattr(Session, "commit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", bpm=True))
    monkeypatch.undo()
    (bpm,) = rows(catalog, Master, kind="bpm")
    assert Path(bpm.path).name == NAME
    assert sha256_file(bpm.path) == bpm.sha256


def test_a_bpm_whose_dark_is_marked_bad_is_not_used(
    catalog: Catalog, tmp_path: Path, night: SimulatedNight
) -> None:
    ingest(catalog, [night.root])
    build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", bpm=True))
    (bpm,) = rows(catalog, Master, kind="bpm")
    (link,) = rows(catalog, MasterCalibrator, master_id=bpm.id, role="dark")
    with catalog.session() as session:
        dark = session.get(Master, link.calibrator_id)
        assert dark is not None
        dark.is_bad, dark.bad_reason = True, "light leak"
    from ccdcal.masters.bpm import select_bpm

    with catalog.session() as session:
        assert select_bpm(session, {"instrument": "ZWO ASI294MM Pro", "xbinning": 2, "ybinning": 2}) is None


def test_masters_bpm_on_the_command_line(tmp_path: Path, night: SimulatedNight) -> None:
    db = str(tmp_path / "c.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "ingest", str(night.root)]).exit_code == 0
    result = runner.invoke(app, ["--db", db, "masters", "--bpm", "--masters-dir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Masters (run 2): 8 built, 0 already current, 0 skipped\n")
    assert f"  built {tmp_path / 'm' / NAME} (0 frames)\n" in result.stdout
    listed = runner.invoke(app, ["--db", db, "masters", "--list"])
    assert " bpm " in listed.stdout


@pytest.mark.postgres
def test_bpm_and_steps_on_postgresql(pg_url: str, night: SimulatedNight, tmp_path: Path) -> None:
    with Catalog(pg_url) as catalog:
        ingest(catalog, [night.root])
        optional = StepOptions(uncertainty=True, readnoise=3.5)
        build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", bpm=True, optional=optional))
        (bpm,) = rows(catalog, Master, kind="bpm")
        options = ProcessOptions(
            masters_dir=tmp_path / "masters",
            output_dir=tmp_path / "out",
            jobs=1,
            optional=optional,
        )
        summary = process(catalog, options)
        assert len(summary.of("calibrated")) == 2
        for calibration in rows(catalog, Calibration, status="current"):
            links = {c.role for c in rows(catalog, CalibrationMaster, calibration_id=calibration.id)}
            assert links == {"bias", "dark", "flat", "bpm"}
            assert calibration.steps["uncertainty"]["gain_source"] == "EGAIN"
            assert calibration.steps["bpm"]["master_id"] == bpm.id
        assert process(catalog, options).nothing_done
