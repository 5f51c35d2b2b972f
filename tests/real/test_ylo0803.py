"""SBIG STL-1001E / ST-402 (CCDSoft 5): dark series at 0 and +10 °C, and CCDSoft's auto-darked frames.

- master darks at 0 °C are built per exposure, and the 300 s one agrees with the 30 s one scaled by 10;
- the +10 °C dark is never matched to a 0 °C frame;
- the ``.FIT`` spectra that CCDSoft already dark-subtracted (their headers look raw) are told apart from
  their ``.NOAUTODARK.FIT`` twins: a warning names each light whose level is far below its master bias.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from sqlalchemy import select, update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import dry_run, process
from tests.conftest import real_set
from tests.real.conftest import every_result_reproduced

NEON = ("spec_neon_1series_1s.00000001", "spec_neon_1series_5s.00000001")


def test_dark_series_per_exposure_and_temperature(catalog: Catalog, tmp_path: Path) -> None:
    folder = real_set("ylo0803-ast443-stl1001")
    lights = tmp_path / "as-light"
    lights.mkdir()
    copy = shutil.copy(folder / "dark_series_0c_5m.00000002.DARK.FIT", lights / "cold_300s.fit")
    ingest(catalog, [folder])
    ingest(catalog, [lights], imagetyp="light")  # a 0 °C, 300 s frame to match darks to
    options = ProcessOptions(
        masters_dir=tmp_path / "masters", output_dir=tmp_path / "calibrated", jobs=1, min_frames=1
    )
    summary = process(catalog, options)
    with catalog.session() as session:
        darks = list(session.scalars(select(Master).where(Master.kind == "dark", Master.status == "current")))
        light = session.scalars(select(Frame).where(Frame.path == str(Path(copy).resolve()))).one()
        (calibration,) = session.scalars(select(Calibration).where(Calibration.frame_id == light.id))
        used = {
            c.role: c
            for c in session.scalars(select(CalibrationMaster).filter_by(calibration_id=calibration.id))
        }
    cold = {d.exptime: d for d in darks if d.temp_key == 0}
    assert sorted(cold) == [10, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300]
    assert cold[30].n_inputs == 5
    assert [(d.exptime, d.n_inputs) for d in darks if d.temp_key == 10] == [(300, 1)]
    warm = next(d for d in darks if d.temp_key == 10)

    # 300 s against 30 s x 10: the same dark current, within the noise
    long, short = (fits.getdata(cold[t].path).astype(np.float64) for t in (300, 30))
    difference = long - 10 * short
    noise = mad_std(difference)
    assert abs(np.median(difference)) < 0.25 * noise  # 12 ADU in 58: the levels agree
    assert noise < np.hypot(mad_std(long), 10 * mad_std(short))  # the pixel pattern agrees too
    hot = 10 * short > 2000
    assert hot.sum() > 50
    assert abs(np.median(long[hot] / (10 * short[hot])) - 1) < 0.05

    # the 0 °C light takes the 0 °C 300 s dark, never the +10 °C one (the ST-402 spectra in Clear
    # have no flat: not calibrated, and said so)
    assert [r.outcome for r in summary.lights if r.frame_id == light.id] == ["calibrated"]
    assert {Path(r.path).name for r in summary.of("cannot")} == {"spec_flat_field.FIT", "spec_lamp.FIT"}
    assert used["dark"].master_id == cold[300].id
    assert abs(used["dark"].delta_temp or 0) < 0.5
    assert warm.id not in {c.master_id for c in used.values()}
    every_result_reproduced(catalog)
    with catalog.session() as session:
        session.execute(
            update(Master).where(Master.id == cold[300].id).values(is_bad=True, bad_reason="test")
        )
    plan = dry_run(catalog, options)
    (report,) = [r for r in plan.lights if r.frame_id == light.id]
    assert report.outcome == "cannot"
    assert report.reason is not None
    # the only other 300 s dark is the +10 °C one: named as the nearest, not used
    assert report.reason.startswith("no dark at 300 s, -0.23 °C ±2 (nearest: 300 s at 9.78 °C")
    assert report.match is not None
    assert report.match.applied("dark") is None


def test_auto_darked_lights_are_told_from_their_twins(catalog: Catalog, tmp_path: Path) -> None:
    folder = real_set("ylo0803-ast443-stl1001")
    night = tmp_path / "st402"
    night.mkdir()
    for stem in NEON:
        for suffix in (".FIT", ".NOAUTODARK.FIT"):
            shutil.copy(folder / f"{stem}{suffix}", night)
    # The ST-402 has no bias frames here. The frame CCDSoft subtracted is each twin minus its auto-darked
    # copy (bias + 1 or 5 s of dark current): written as bias frames with the camera's own header.
    for i, stem in enumerate(NEON):
        with fits.open(folder / f"{stem}.NOAUTODARK.FIT") as raw, fits.open(folder / f"{stem}.FIT") as done:
            subtracted = raw[0].data.astype(np.int32) - done[0].data.astype(np.int32)
            header = raw[0].header.copy()
        header["IMAGETYP"], header["EXPTIME"], header["EXPOSURE"] = "Bias Frame", 0.0, 0.0
        fits.PrimaryHDU(subtracted.astype(np.uint16), header).writeto(night / f"bias_{i}.fit")
    ingest(catalog, [night])
    options = ProcessOptions(
        masters_dir=tmp_path / "masters", output_dir=tmp_path / "calibrated", jobs=1, min_frames=2
    )
    summary = process(catalog, options)
    assert summary.exit_code == 0
    assert len(summary.of("calibrated")) == 4
    warned = {Path(r.path).name: r.warnings for r in summary.lights}
    assert warned[f"{NEON[0]}.NOAUTODARK.FIT"] == warned[f"{NEON[1]}.NOAUTODARK.FIT"] == ()
    for stem in NEON:
        (warning,) = warned[f"{stem}.FIT"]
        assert warning.startswith("the light's level 1")  # 117 and 153 ADU
        assert "is far below its master bias master_bias_b1x1_gNA_sNA_C-5.fits (814" in warning
    lines = summary.problem_lines()
    assert sum("may already be bias- or dark-subtracted" in line for line in lines) == 2
    with catalog.session() as session:
        recorded = {
            Path(c.path or "").name: c.steps.get("warnings") for c in session.scalars(select(Calibration))
        }
    assert recorded[f"{NEON[0]}_cal.fits"] == list(warned[f"{NEON[0]}.FIT"])
    assert recorded[f"{NEON[0]}.NOAUTODARK_cal.fits"] is None
    every_result_reproduced(catalog)


def test_spectra_no_step_applies_to_are_not_written_unless_asked(tmp_path: Path) -> None:
    """The ST-402 spectra: no bias or dark of that camera (not available), no flat (missing, allowed).
    Nothing would change their pixels: they are listed with the reason, not written, exit 1; with
    --write-uncalibrated they are written, equal to the raw frames, and the summary says so."""
    from typer.testing import CliRunner

    from ccdcal.cli import app

    db = str(tmp_path / "c.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "ingest", str(real_set("ylo0803-ast443-stl1001"))]).exit_code == 0
    args = ["--db", db, "process", "--allow-missing", "flat", "--masters-dir", str(tmp_path / "m")]
    output = tmp_path / "o"
    refused = runner.invoke(app, [*args, "--output-dir", str(output)])
    assert refused.exit_code == 1
    assert "lights 0 calibrated, 0 already calibrated, 6 not calibrated, 0 failed" in refused.stdout
    assert "Calibrated:" not in refused.stdout
    assert "\nNot calibrated (6):\n" in refused.stderr
    lamp = real_set("ylo0803-ast443-stl1001") / "spec_lamp.FIT"
    assert (
        f"  {lamp}: nothing to calibrate it with: no bias frames in the catalog for this camera (SBIG ST-402 "
        "CCD Camera b1x1 765x510); no dark frames in the catalog for this camera (SBIG ST-402 CCD Camera "
        "b1x1 765x510); no flat in filter Clear, 0.19 °C ±2 (no usable flat master for this camera); allowed "
        "by --allow-missing flat; its output would be the raw frame, so it is not written "
        "(--write-uncalibrated writes it)\n"
    ) in refused.stderr
    assert not output.exists() or [p.name for p in output.glob("*.fits")] == []

    written = runner.invoke(app, [*args, "--output-dir", str(output), "--write-uncalibrated"])
    assert written.exit_code == 0, written.stderr
    assert "\nCalibrated: 6 without any calibration (--write-uncalibrated)\n" in written.stdout
    out = output / "spec_lamp_cal.fits"
    np.testing.assert_array_equal(fits.getdata(out), fits.getdata(lamp).astype(np.float32))
    history = " ".join(str(h).removesuffix("\\").strip() for h in fits.getheader(out)["HISTORY"])
    assert "no calibration step applied (--write-uncalibrated): the pixels are the raw frame's" in history
    with Catalog(db) as catalog, catalog.reading() as session:
        arguments = session.scalars(select(Calibration.steps).where(Calibration.path == str(out))).one()
    assert {arguments[r]["status"] for r in ("bias", "dark", "flat")} == {"not_available", "allowed_missing"}
    with Catalog(db) as catalog:
        every_result_reproduced(catalog)
