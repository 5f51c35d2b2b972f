"""``ccdcal process``: every light calibrated as ccdproc would, provenance rows, idempotent re-runs."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from sqlalchemy import func, select, update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master, MasterInput, Run
from ccdcal.errors import UsageError
from ccdcal.files.fitsio import sha256_file
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import dry_run, pending_work, process
from ccdcal.lights.records import step_records
from ccdcal.lights.summary import ProcessSummary
from ccdcal.simulate import SimulatedNight, simulate_night
from ccdcal.trace.headertrace import header_lines
from tests.conftest import fitsverify_counts, real_set, with_step_options

SHAPE = (64, 80)
NEW_BIAS = (
    "new bias master master_bias_b2x2_g120_sNA_C-10_v2.fits (replaces master_bias_b2x2_g120_sNA_C-10.fits)"
)


@pytest.fixture
def night(tmp_path: Path) -> SimulatedNight:
    """A simulated night: Light_001-002 in R at 60 s, Light_003-004 in Ha at 300 s."""
    return simulate_night(tmp_path / "raw", seed=5, shape=SHAPE, n_light=4)


def options(tmp_path: Path, **changes: Any) -> ProcessOptions:
    values: dict[str, Any] = {
        "masters_dir": tmp_path / "masters",
        "output_dir": tmp_path / "calibrated",
        "jobs": 1,
    }
    return ProcessOptions(**with_step_options(values | changes))


def run(catalog: Catalog, night: SimulatedNight, tmp_path: Path, **changes: Any) -> ProcessSummary:
    """Ingest the night (again), then process it."""
    ingest(catalog, [night.root])
    return process(catalog, options(tmp_path, **changes))


def rows(catalog: Catalog, model: Any, **where: Any) -> list[Any]:
    with catalog.session() as session:
        return list(session.scalars(select(model).filter_by(**where).order_by(model.id)))


def frame(catalog: Catalog, name: str) -> Frame:
    (found,) = [f for f in rows(catalog, Frame) if Path(f.path).name == name]
    return found


def current(catalog: Catalog, name: str) -> Calibration:
    """The current calibration of the light named ``name``."""
    (found,) = rows(catalog, Calibration, frame_id=frame(catalog, name).id, status="current")
    return found


def links(catalog: Catalog, calibration_id: int) -> dict[str, CalibrationMaster]:
    with catalog.session() as session:
        query = select(CalibrationMaster).where(CalibrationMaster.calibration_id == calibration_id)
        return {link.role: link for link in session.scalars(query)}


def master(catalog: Catalog, master_id: int) -> Master:
    (found,) = rows(catalog, Master, id=master_id)
    return found


def set_frames(catalog: Catalog, token: str, **values: Any) -> None:
    """Update the catalog rows of the frames whose file name contains ``token``."""
    ids = [f.id for f in rows(catalog, Frame) if token in Path(f.path).name]
    assert ids
    with catalog.session() as session:
        session.execute(update(Frame).where(Frame.id.in_(ids)).values(**values))


def add_frame(source: Path, name: str, change: Any) -> Path:
    """A new raw frame beside ``source``: its header, DATE-OBS 30 min later, and ``change(pixels)``."""
    target = source.with_name(name)
    with fits.open(source) as hdul:
        data = change(hdul[0].data.astype(np.float64))
        hdul[0].data = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
        when = dt.datetime.fromisoformat(hdul[0].header["DATE-OBS"]) + dt.timedelta(minutes=30)
        hdul[0].header["DATE-OBS"] = when.isoformat()
        hdul.writeto(target)
    return target


def counts(catalog: Catalog) -> dict[str, int]:
    with catalog.session() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Run, Master, MasterInput, Calibration, CalibrationMaster)
        }


def ccd(path: str | Path) -> CCDData:
    """A raw frame as float64 CCDData in adu, with its header (what a ccdproc user starts from)."""
    return CCDData(fits.getdata(path).astype(np.float64), unit="adu", meta=fits.getheader(path))


def ccdproc_reference(
    raw: str | Path, bias: Any = None, dark: Any = None, flat: Any = None, flat_min: float = 0.01
) -> np.ndarray:
    """The definition with ccdproc and the same master files (docs/design.md, Science)."""
    data = ccd(raw)
    if bias is not None:
        data = ccdproc.subtract_bias(data, CCDData.read(bias))
    if dark is not None:
        data = ccdproc.subtract_dark(
            data, CCDData.read(dark), exposure_time="EXPTIME", exposure_unit=u.s, scale=True
        )
    if flat is not None:
        data = ccdproc.flat_correct(data, CCDData.read(flat), min_value=flat_min, norm_value=1)
    return data.data


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours − reference| / max(|reference|, 1)."""
    return float(np.max(np.abs(ours.astype(np.float64) - reference) / np.maximum(np.abs(reference), 1.0)))


def check_against_ccdproc(catalog: Catalog, calibration: Calibration) -> float:
    """The output equals ccdproc with the masters its provenance rows name; return the difference."""
    raw = rows(catalog, Frame, id=calibration.frame_id)[0].path
    used = {
        role: master(catalog, link.master_id).path for role, link in links(catalog, calibration.id).items()
    }
    flat_min = (calibration.steps.get("flat") or {}).get("flat_min", 0.01)
    reference = ccdproc_reference(raw, used.get("bias"), used.get("dark"), used.get("flat"), flat_min)
    assert calibration.path is not None
    difference = relative_difference(fits.getdata(calibration.path), reference)
    assert difference < 1e-5
    return difference


def read_without_warnings(path: str | Path) -> CCDData:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = CCDData.read(path)
    assert not caught, [str(w.message) for w in caught]
    return data


# -- a night, end to end ---------------------------------------------------------------------------------


def test_every_light_is_calibrated_as_ccdproc_does(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    summary = run(catalog, night, tmp_path)
    assert summary.exit_code == 0
    assert [r.outcome for r in summary.masters] == ["built"] * 7
    assert [light.outcome for light in summary.lights] == ["calibrated"] * 4
    assert [light.reason for light in summary.lights] == ["not calibrated yet"] * 4
    for light in night.files["light"]:
        calibration = current(catalog, light.name)
        output = tmp_path / "calibrated" / light.name.replace(".fits", "_cal.fits")
        assert calibration.path == str(output)
        assert calibration.sha256 == sha256_file(output)
        assert calibration.raw_sha256 == sha256_file(light) == frame(catalog, light.name).sha256
        assert calibration.run_id == summary.run_id
        assert (calibration.flat_norm, calibration.dark_scale_factor, calibration.error) == (1.0, 1.0, None)
        assert {s["status"] for s in step_records(calibration.steps).values()} == {"applied"}
        assert calibration.steps["mask"] == {"flagged": 0, "bits": {"1": 0, "2": 0, "4": 0, "8": 0, "16": 0}}
        assert calibration.steps["flat"]["flat_min"] == 0.01
        check_against_ccdproc(catalog, calibration)
        assert fitsverify_counts(output) == (0, 0)
        data = read_without_warnings(output)
        assert data.unit == u.adu
        assert data.mask is None  # no flat pixel below 0.01: no MASK extension
        assert data.header["NMASKED"] == 0
    with catalog.session() as session:
        run_row = session.get(Run, summary.run_id)
        assert run_row is not None
        assert (run_row.command, run_row.status) == ("process", "ok")
        assert run_row.arguments["flat_min"] == 0.01
        assert {m.run_id for m in session.scalars(select(Master))} == {summary.run_id}  # built in this run


def test_provenance_rows_name_the_matching_masters(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path)
    for light in night.files["light"]:
        raw = frame(catalog, light.name)
        calibration = current(catalog, light.name)
        used = links(catalog, calibration.id)
        assert set(used) == {"bias", "dark", "flat"}
        bias, dark, flat = (master(catalog, used[r].master_id) for r in ("bias", "dark", "flat"))
        assert bias.kind == "bias"
        assert (dark.kind, dark.exptime) == ("dark", raw.exptime)
        assert (flat.kind, flat.filter) == ("flat", raw.filter)
        for role, chosen in (("bias", bias), ("dark", dark), ("flat", flat)):
            link = used[role]
            assert link.delta_temp == pytest.approx(chosen.ccd_temp_mean - raw.ccd_temp)
            assert chosen.date_obs_mean is not None
            assert raw.date_obs is not None
            assert link.delta_time == pytest.approx((chosen.date_obs_mean - raw.date_obs).total_seconds())
            assert not link.pinned
            step = calibration.steps[role]
            assert (step["master_id"], step["path"], step["sha256"]) == (
                chosen.id,
                chosen.path,
                chosen.sha256,
            )
            assert step["reason"].startswith("nearest match: ΔT ")
        assert used["dark"].scale == 1.0
        header = fits.getheader(calibration.path or "")
        assert (header["BIASCOR"], header["DARKCOR"], header["FLATCOR"]) == tuple(
            Path(m.path).name for m in (bias, dark, flat)
        )
        history = "".join(str(h) for h in header["HISTORY"])
        assert all(m.sha256 in history for m in (bias, dark, flat))


def test_a_second_run_does_nothing(catalog: Catalog, night: SimulatedNight, tmp_path: Path) -> None:
    run(catalog, night, tmp_path)
    outputs = {p: p.stat().st_mtime_ns for p in (tmp_path / "calibrated").iterdir()}
    before = counts(catalog)
    again = run(catalog, night, tmp_path)
    assert again.nothing_done
    assert again.exit_code == 0
    assert [r.outcome for r in again.masters] == ["current"] * 7
    assert [light.outcome for light in again.lights] == ["current"] * 4
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "calibrated").iterdir()} == outputs
    assert counts(catalog) == {**before, "runs": before["runs"] + 2}  # an ingest run and this process run


def test_a_new_bias_recalibrates_the_lights_it_affects(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    first = run(catalog, night, tmp_path)
    old = {light.name: current(catalog, light.name) for light in night.files["light"]}
    rng = np.random.default_rng(3)
    add_frame(night.files["bias"][0], "Bias_008.fits", lambda a: a + rng.normal(0, 3.5, a.shape))
    summary = run(catalog, night, tmp_path)
    assert len(summary.masters_of("built")) == 7  # bias v2, then every dark and flat made with it
    assert [light.outcome for light in summary.lights] == ["calibrated"] * 4
    assert {light.reason for light in summary.lights} == {
        f"{NEW_BIAS}; new dark master master_dark_b2x2_g120_60s_C-10_v2.fits "
        "(replaces master_dark_b2x2_g120_60s_C-10.fits)"
        "; new flat master master_flat_b2x2_g120_sNA_C-10_R_v2.fits "
        "(replaces master_flat_b2x2_g120_sNA_C-10_R.fits)",
        f"{NEW_BIAS}; new dark master master_dark_b2x2_g120_300s_C-10_v2.fits "
        "(replaces master_dark_b2x2_g120_300s_C-10.fits)"
        "; new flat master master_flat_b2x2_g120_sNA_C-10_Ha_v2.fits "
        "(replaces master_flat_b2x2_g120_sNA_C-10_Ha.fits)",
    }
    for name, before in old.items():
        superseded = rows(catalog, Calibration, id=before.id)[0]
        assert superseded.status == "superseded"
        assert superseded.sha256 == before.sha256  # kept for the audit
        now = current(catalog, name)
        assert now.path == before.path
        assert now.sha256 == sha256_file(now.path or "") != before.sha256
        assert all(master(catalog, link.master_id).version == 2 for link in links(catalog, now.id).values())
        check_against_ccdproc(catalog, now)
    assert len(rows(catalog, Calibration)) == 8
    assert first.run_id != summary.run_id


def test_a_new_flat_recalibrates_only_the_lights_of_its_filter(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path)
    source = next(p for p in night.files["flat"] if "_Ha_" in p.name)
    add_frame(source, "Flat_Ha_006.fits", lambda a: a * 1.01)
    summary = run(catalog, night, tmp_path)
    assert [Path(r.path or "").name for r in summary.masters_of("built")] == [
        "master_flat_b2x2_g120_sNA_C-10_Ha_v2.fits"
    ]
    assert [(Path(light.path).name, light.outcome) for light in summary.lights] == [
        ("Light_001.fits", "current"),
        ("Light_002.fits", "current"),
        ("Light_003.fits", "calibrated"),
        ("Light_004.fits", "calibrated"),
    ]


def test_a_changed_raw_light_is_recalibrated_after_ingest(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path)
    light = night.files["light"][1]
    with fits.open(light, mode="update") as hdul:
        hdul[0].data[10:20, 10:20] += 50
    os.utime(light, (light.stat().st_atime, light.stat().st_mtime + 60))
    stale = process(catalog, options(tmp_path))  # not ingested yet
    assert stale.exit_code == 1
    (cannot,) = stale.of("cannot")
    assert (cannot.path, cannot.reason) == (
        str(light),
        "raw file changed since it was catalogued; run `ccdcal ingest` on it again",
    )
    summary = run(catalog, night, tmp_path)
    assert [(Path(x.path).name, x.outcome, x.reason) for x in summary.lights if x.outcome != "current"] == [
        ("Light_002.fits", "calibrated", "raw file changed")
    ]
    calibration = current(catalog, light.name)
    assert calibration.raw_sha256 == sha256_file(light)
    check_against_ccdproc(catalog, calibration)


def test_a_failed_frame_is_recorded_and_the_others_finish(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    source = night.files["light"][2]  # a copy tile-compressed, its compressed pixels corrupted: ingest reads
    header, data = fits.getheader(source), fits.getdata(source)  # its header, a worker cannot decompress it
    header.remove("BZERO", ignore_missing=True)
    broken = source.with_name("Light_003_packed.fits.fz")
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header)]).writeto(broken)
    content = bytearray(broken.read_bytes())
    content[-4000:-3000] = bytes(b ^ 0xFF for b in content[-4000:-3000])
    broken.write_bytes(bytes(content))
    ingest(catalog, [night.root])
    summary = process(catalog, options(tmp_path, jobs=2))
    assert summary.exit_code == 1
    outcomes = ["calibrated", "calibrated", "calibrated", "failed", "calibrated"]
    assert [light.outcome for light in summary.lights] == outcomes
    (failed,) = summary.of("failed")
    assert "decompression error" in (failed.reason or "")
    (row,) = rows(catalog, Calibration, frame_id=failed.frame_id)
    assert (row.status, row.error, row.sha256) == ("failed", failed.reason, None)
    assert not Path(row.path or "").exists()
    assert not any(p.name.startswith(".ccdcal-tmp") for p in (tmp_path / "calibrated").iterdir())
    with catalog.session() as session:
        assert session.get(Run, summary.run_id).status == "partial"  # type: ignore[union-attr]

    again = process(catalog, options(tmp_path))
    assert [light.outcome for light in again.lights] == ["current", "current", "current", "failed", "current"]
    assert again.of("failed")[0].reason == (
        f"failed before, and nothing changed since: {failed.reason} (--redo tries again)"
    )
    assert len(rows(catalog, Calibration, frame_id=failed.frame_id)) == 1
    redo = process(catalog, options(tmp_path, redo=True))
    assert [light.outcome for light in redo.lights] == outcomes
    assert {light.reason for light in redo.of("calibrated")} == {"--redo"}


def test_flat_min_and_output_folder_changes_recalibrate(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path)
    # the vignetted corners fall below 0.9 (clamped, bit 1) and 0.95 (a low response, bit 16)
    summary = process(catalog, options(tmp_path, flat_min=0.9, flat_low=0.95))
    assert {light.reason for light in summary.lights} == {"--flat-min changed; --flat-low changed"}
    calibration = current(catalog, "Light_001.fits")
    check_against_ccdproc(catalog, calibration)
    data = read_without_warnings(calibration.path or "")
    flat = fits.getdata(master(catalog, links(catalog, calibration.id)["flat"].master_id).path)
    assert data.mask is not None
    np.testing.assert_array_equal(data.mask, flat < np.float32(0.95))
    mask = fits.getdata(calibration.path or "", "MASK")
    np.testing.assert_array_equal((mask & 1) != 0, flat < np.float32(0.9))
    clamped = int(np.count_nonzero(mask & 1))
    assert 0 < clamped == data.header["NMASK1"] == calibration.steps["flat"]["masked"]
    assert clamped < int(data.mask.sum()) == data.header["NMASKED"] == calibration.steps["flat"]["low"]
    assert fitsverify_counts(Path(calibration.path or "")) == (0, 0)
    moved = process(
        catalog, options(tmp_path, flat_min=0.9, flat_low=0.95, output_dir=tmp_path / "elsewhere")
    )
    assert {light.reason for light in moved.lights} == {"output folder changed"}
    assert current(catalog, "Light_001.fits").path == str(tmp_path / "elsewhere" / "Light_001_cal.fits")


def test_saturation_and_flat_low_changes_recalibrate(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    """--flat-low acts on lights only: lights are calibrated again, no master is built. --saturation
    changes masters (their identity) and lights. A calibration recorded before either was is not
    calibrated again for them."""
    run(catalog, night, tmp_path)
    calibration = current(catalog, "Light_001.fits")
    saturation = calibration.steps["saturation"]
    assert saturation | {"flagged": 0} == {
        "status": "applied",
        "level": 65535.0,
        "source": "data type",
        "detail": "BITPIX 16, BZERO 32768",
        "option": None,
        "flagged": 0,
    }
    assert saturation["flagged"] == calibration.steps["mask"]["bits"]["8"]
    assert calibration.steps["flat"]["flat_low"] == 0.5
    header = fits.getheader(calibration.path or "")
    assert (header["SATLEVEL"], header["FLATLOW"]) == (65535.0, 0.5)
    low = process(catalog, options(tmp_path, flat_low=0.9))
    assert {light.reason for light in low.lights} == {"--flat-low changed"}
    assert {r.outcome for r in low.masters} == {"current"}
    calibration = current(catalog, "Light_001.fits")
    flat = fits.getdata(master(catalog, links(catalog, calibration.id)["flat"].master_id).path)
    mask = fits.getdata(calibration.path or "", "MASK")
    np.testing.assert_array_equal((mask & 16) != 0, flat < np.float32(0.9))
    assert calibration.steps["flat"]["low"] == int(np.count_nonzero(flat < np.float32(0.9))) > 0
    assert {light.outcome for light in process(catalog, options(tmp_path, flat_low=0.9)).lights} == {
        "current"
    }
    given = process(catalog, options(tmp_path, flat_low=0.9, saturation=60000.0))
    assert [r.outcome for r in given.masters] == ["built"] * 7
    assert all("--saturation changed" in (light.reason or "") for light in given.lights)
    calibration = current(catalog, "Light_001.fits")
    assert calibration.steps["saturation"]["level"] == calibration.steps["saturation"]["option"] == 60000.0
    assert fits.getheader(calibration.path or "")["SATLEVEL"] == 60000.0
    with catalog.session() as session:  # as an earlier ccdcal recorded them
        for older in session.scalars(select(Calibration).where(Calibration.status == "current")):
            steps = {k: v for k, v in older.steps.items() if k != "saturation"}
            steps["flat"] = {k: v for k, v in steps["flat"].items() if k not in ("flat_low", "low")}
            older.steps = steps
    later = process(catalog, options(tmp_path, flat_low=0.7, saturation=60000.0))
    assert {light.outcome for light in later.lights} == {"current"}


def test_jobs_in_parallel_give_the_same_files(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path, jobs=2)
    first = {p.name: fits.getdata(p) for p in (tmp_path / "calibrated").glob("*.fits")}
    summary = process(catalog, options(tmp_path, jobs=1, redo=True))
    assert len(summary.of("calibrated")) == 4
    for name, data in first.items():
        np.testing.assert_array_equal(fits.getdata(tmp_path / "calibrated" / name), data)
    assert len(rows(catalog, Calibration, status="superseded")) == 4


# -- dry run and pending work ----------------------------------------------------------------------------


def test_a_dry_run_writes_nothing(catalog: Catalog, night: SimulatedNight, tmp_path: Path) -> None:
    ingest(catalog, [night.root])
    before = counts(catalog)
    plan = dry_run(catalog, options(tmp_path))
    assert plan.dry_run
    assert plan.run_id is None
    assert [Path(r.path or "").name for r in plan.masters_of("build")] == [
        "master_bias_b2x2_g120_sNA_C-10.fits",
        "master_dark_b2x2_g120_2s_C-10.fits",
        "master_dark_b2x2_g120_5s_C-10.fits",
        "master_dark_b2x2_g120_60s_C-10.fits",
        "master_dark_b2x2_g120_300s_C-10.fits",
        "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
        "master_flat_b2x2_g120_sNA_C-10_R.fits",
    ]
    assert [light.outcome for light in plan.lights] == ["calibrate"] * 4
    assert plan.lights[3].masters() == {
        "bias": "master_bias_b2x2_g120_sNA_C-10.fits",
        "dark": "master_dark_b2x2_g120_300s_C-10.fits",
        "flat": "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
    }
    assert plan.lights[0].output == str(tmp_path / "calibrated" / "Light_001_cal.fits")
    assert counts(catalog) == before
    assert not (tmp_path / "masters").exists()
    assert not (tmp_path / "calibrated").exists()

    run(catalog, night, tmp_path)
    add_frame(night.files["bias"][0], "Bias_008.fits", lambda a: a)
    ingest(catalog, [night.root])
    before = counts(catalog)
    files = sorted(p.name for p in (tmp_path / "masters").iterdir())
    plan = dry_run(catalog, options(tmp_path))
    assert len(plan.masters_of("build")) == 7  # the new bias, and the darks and flats made with it
    assert plan.lights[0].reason is not None
    assert plan.lights[0].reason.startswith(NEW_BIAS)
    assert counts(catalog) == before
    assert sorted(p.name for p in (tmp_path / "masters").iterdir()) == files
    assert [m.status for m in rows(catalog, Master)] == ["current"] * 7


def test_pending_work_is_the_plan_of_the_last_options(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root])
    pending = pending_work(catalog)
    assert pending["options_of_run"] is None
    assert len(pending["masters_to_build"]) == 7
    assert [(Path(x["path"]).name, x["outcome"], x["reason"]) for x in pending["lights"]] == [
        (f"Light_00{i}.fits", "calibrate", "not calibrated yet") for i in range(1, 5)
    ]
    summary = run(catalog, night, tmp_path, no_flat=True)
    assert pending_work(catalog) == {
        "options_of_run": summary.run_id,
        "masters_to_build": [],
        "lights": [],
        "current": 4,
    }
    set_frames(catalog, "Light_004", ccd_temp=5.0)
    (light,) = pending_work(catalog)["lights"]
    assert light["outcome"] == "cannot"
    assert light["reason"].startswith("no bias at 5 °C ±2 (nearest: -10")


# -- matching ---------------------------------------------------------------------------------------------


def test_temperature_just_inside_and_just_outside_the_tolerance(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    from ccdcal.masters.build import build_masters
    from ccdcal.masters.groups import MasterOptions

    ingest(catalog, [night.root])
    build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters"))
    (bias,) = rows(catalog, Master, kind="bias")
    used = [bias, *rows(catalog, Master, kind="dark", exptime=60.0), *rows(catalog, Master, filter="R")]
    inside, outside = max(m.ccd_temp_mean for m in used) - 1.99, bias.ccd_temp_mean - 2.01
    set_frames(catalog, "Light_001", ccd_temp=inside)
    set_frames(catalog, "Light_002", ccd_temp=outside)
    summary = process(catalog, options(tmp_path))
    assert [light.outcome for light in summary.lights] == ["calibrated", "cannot", "calibrated", "calibrated"]
    used = links(catalog, current(catalog, "Light_001.fits").id)
    assert max(abs(link.delta_temp or 0) for link in used.values()) == pytest.approx(1.99)
    reason = summary.of("cannot")[0].reason or ""
    assert reason.startswith(
        f"no bias at {round(outside, 2):g} °C ±2 (nearest: {round(bias.ccd_temp_mean, 2):g} °C)"
    )


def test_exact_darks_or_scaled_ones(catalog: Catalog, night: SimulatedNight, tmp_path: Path) -> None:
    ingest(catalog, [night.root])
    set_frames(catalog, "Dark_300s", is_bad=True, bad_reason="test: no 300 s darks")
    exact = process(catalog, options(tmp_path))
    assert [light.outcome for light in exact.lights] == ["calibrated", "calibrated", "cannot", "cannot"]
    (sixty,) = rows(catalog, Master, kind="dark", exptime=60.0)
    temp = frame(catalog, "Light_003.fits").ccd_temp
    assert exact.of("cannot")[0].reason == (
        f"no dark at 300 s, {temp:g} °C ±2 (nearest: 60 s at {round(sixty.ccd_temp_mean, 2):g} °C)"
    )
    scaled = process(catalog, options(tmp_path, rules=options(tmp_path).rules.__class__(dark_scale=True)))
    assert [light.outcome for light in scaled.lights] == ["current", "current", "calibrated", "calibrated"]
    calibration = current(catalog, "Light_003.fits")
    dark = links(catalog, calibration.id)["dark"]
    assert (dark.master_id, dark.scale, calibration.dark_scale_factor) == (sixty.id, 5.0, 5.0)
    assert calibration.steps["dark"]["reason"].endswith("scaled x5")
    assert fits.getheader(calibration.path or "")["DARKSCAL"] == 5.0
    check_against_ccdproc(catalog, calibration)


def test_a_scaled_dark_is_the_nearest_at_least_as_long(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root])
    set_frames(catalog, "Dark_60s", is_bad=True, bad_reason="test")
    summary = process(catalog, options(tmp_path, rules=options(tmp_path).rules.__class__(dark_scale=True)))
    assert summary.exit_code == 0
    calibration = current(catalog, "Light_001.fits")
    dark = master(catalog, links(catalog, calibration.id)["dark"].master_id)
    assert dark.exptime == 300.0  # not the 5 s one, nearer in exposure but shorter
    assert calibration.dark_scale_factor == pytest.approx(0.2)
    check_against_ccdproc(catalog, calibration)


def test_no_flat_in_a_filter_is_explicit_unless_allowed(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root])
    set_frames(catalog, "Flat_Ha", is_bad=True, bad_reason="test: clouds")
    summary = process(catalog, options(tmp_path))
    assert [light.outcome for light in summary.lights] == ["calibrated", "calibrated", "cannot", "cannot"]
    (r_flat,) = rows(catalog, Master, kind="flat")
    temp = frame(catalog, "Light_004.fits").ccd_temp
    assert summary.of("cannot")[1].reason == (
        f"no flat in filter Ha, {temp:g} °C ±2 (nearest: filter R at {round(r_flat.ccd_temp_mean, 2):g} °C)"
    )
    assert not (tmp_path / "calibrated" / "Light_004_cal.fits").exists()
    allowed = process(catalog, options(tmp_path, allow_missing=("flat",)))
    assert [light.outcome for light in allowed.lights] == ["current", "current", "calibrated", "calibrated"]
    calibration = current(catalog, "Light_004.fits")
    assert calibration.steps["flat"] == {
        "status": "allowed_missing",
        "reason": f"{summary.of('cannot')[1].reason}; allowed by --allow-missing flat",
    }
    assert set(links(catalog, calibration.id)) == {"bias", "dark"}
    assert calibration.flat_norm is None
    header = fits.getheader(calibration.path or "")
    assert "FLATCOR" not in header
    history = header_lines(header)  # the HISTORY lines as written (docs/design.md, Files)
    assert any(
        line.startswith(f"flat not applied (missing (allowed)): no flat in filter Ha, {temp:g} C +/-2")
        for line in history
    )
    check_against_ccdproc(catalog, calibration)


def test_of_two_candidates_the_nearest_in_time_wins(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path)
    (bias,) = rows(catalog, Master, kind="bias")
    light = frame(catalog, "Light_001.fits")
    copy = tmp_path / "masters" / "master_bias_copy.fits"
    shutil.copy(bias.path, copy)
    with catalog.session() as session:
        twin = Master(
            **{c.key: getattr(bias, c.key) for c in Master.__table__.columns if c.key != "id"}
            | {"path": str(copy), "identity": "twin", "date_obs_mean": light.date_obs}
        )
        session.add(twin)
        session.flush()
        twin_id = twin.id
    summary = process(catalog, options(tmp_path))
    assert {x.reason for x in summary.lights} == {
        "bias master changed: master_bias_b2x2_g120_sNA_C-10.fits → master_bias_copy.fits"
    }
    for name in ("Light_001.fits", "Light_004.fits"):
        used = links(catalog, current(catalog, name).id)["bias"]
        assert used.master_id == twin_id
    assert links(catalog, current(catalog, "Light_001.fits").id)["bias"].delta_time == 0.0


def test_a_pinned_master_is_used_whatever_its_status(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path)
    (first,) = rows(catalog, Master, kind="bias")
    add_frame(night.files["bias"][0], "Bias_008.fits", lambda a: a + 1)
    summary = run(catalog, night, tmp_path, bias=Path(first.path))
    assert master(catalog, first.id).status == "superseded"
    assert summary.exit_code == 0
    calibration = current(catalog, "Light_002.fits")
    link = links(catalog, calibration.id)["bias"]
    assert (link.master_id, link.pinned) == (first.id, True)
    assert calibration.steps["bias"]["reason"] == "pinned with --bias"
    check_against_ccdproc(catalog, calibration)

    dark = rows(catalog, Master, kind="dark")[0]
    with pytest.raises(UsageError, match=r"^--bias .* is a master dark, not a bias$"):
        process(catalog, options(tmp_path, bias=Path(dark.path)))
    with pytest.raises(UsageError, match="no master of the catalog has this path"):
        process(catalog, options(tmp_path, flat=night.files["flat"][0]))
    with pytest.raises(UsageError, match="--bias and --no-bias cannot be used together"):
        process(catalog, options(tmp_path, bias=Path(first.path), no_bias=True))


def test_a_light_rewritten_with_size_and_mtime_kept_is_found_and_planned_again(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    """``cp -p`` of another version over a catalogued light: the worker hashes the bytes it reads, so the
    light fails (no output under the old hash), its frame is marked changed, ingest reads it again, and
    the next process calibrates it from its new bytes, recording their sha256."""
    run(catalog, night, tmp_path)
    light, other = night.files["light"][0], night.files["light"][1]
    old = sha256_file(light)
    stat = light.stat()
    shutil.copyfile(other, light)
    os.utime(light, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert light.stat().st_size == stat.st_size
    new = sha256_file(light)
    reason = "raw file changed since it was catalogued (its sha256 differs); run `ccdcal ingest` on it again"

    summary = process(catalog, options(tmp_path, redo=True))
    assert summary.exit_code == 1
    (failed,) = summary.of("failed")
    assert (failed.path, failed.reason) == (str(light), reason)
    before = current(catalog, light.name)
    assert before.raw_sha256 == old  # the previous output stays current, with what it was made from
    with catalog.session() as session:
        row = session.scalars(select(Calibration).filter_by(frame_id=before.frame_id, status="failed")).one()
        assert (row.raw_sha256, row.sha256, row.error) == (new, None, reason)  # the bytes actually read
        marked = session.get(Frame, before.frame_id)
        assert marked is not None
        assert (marked.sha256, marked.mtime) == (old, -1.0)
        assert marked.changed_at is not None
    assert fits.getheader(before.path)["HISTORY"]  # untouched: still the old light's output
    assert sha256_file(Path(before.path)) == before.sha256

    refused = process(catalog, options(tmp_path))
    (cannot,) = [x for x in refused.lights if x.path == str(light)]
    assert (cannot.outcome, cannot.reason) == (
        "cannot",
        "raw file changed since it was catalogued; run `ccdcal ingest` on it again",
    )
    assert ingest(catalog, [night.root]).changed == 1
    again = process(catalog, options(tmp_path))
    (done,) = again.of("calibrated")
    assert (done.path, done.reason) == (
        str(light),
        "raw file read again by ingest since it was found changed",
    )
    now = current(catalog, light.name)
    assert now.raw_sha256 == new == sha256_file(light)
    history = " ".join(str(x) for x in fits.getheader(now.path)["HISTORY"])
    assert new in history
    assert old not in history


def test_a_pinned_dark_of_the_other_bias_mode_is_refused(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    """A dark that contains the bias, pinned while a bias is subtracted, would subtract it twice; a
    bias-subtracted dark pinned with --no-bias would never subtract it (and record a false reason)."""
    run(catalog, night, tmp_path, no_bias=True)
    with_bias = next(m for m in rows(catalog, Master, kind="dark") if m.includes_bias and m.exptime == 300)
    run(catalog, night, tmp_path)
    plain = next(m for m in rows(catalog, Master, kind="dark") if not m.includes_bias and m.exptime == 300)
    before = counts(catalog)
    with pytest.raises(UsageError) as raised:
        process(catalog, options(tmp_path, dark=Path(with_bias.path)))
    assert str(raised.value) == (
        f"--dark {with_bias.path} contains the bias: add --no-bias, or pin a dark built without it"
    )
    with pytest.raises(UsageError) as raised:
        process(catalog, options(tmp_path, dark=Path(plain.path), no_bias=True))
    assert str(raised.value) == (
        f"--dark {plain.path} has the bias subtracted, and --no-bias subtracts none from the lights (the "
        "bias would never be subtracted): drop --no-bias, or pin a dark built with --no-bias (_withbias)"
    )
    with pytest.raises(UsageError, match="contains the bias"):
        dry_run(catalog, options(tmp_path, dark=Path(with_bias.path)))
    assert counts(catalog) == before  # refused before anything is written: no run, no file, no row
    done = process(catalog, options(tmp_path, dark=Path(with_bias.path), no_bias=True, redo=True))
    long = [x for x in done.lights if x.exptime == 300]
    assert long
    assert {x.outcome for x in long} == {"calibrated"}
    for light in long:
        assert light.calibration_id is not None
        dark = links(catalog, light.calibration_id)["dark"]
        with catalog.session() as session:
            calibration = session.get(Calibration, light.calibration_id)
            assert calibration is not None
            assert (dark.master_id, calibration.steps["bias"]["status"]) == (with_bias.id, "skipped")


def test_a_pinned_master_of_another_camera_leaves_the_light_uncalibrated(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    run(catalog, night, tmp_path)
    (bias,) = rows(catalog, Master, kind="bias")
    with catalog.session() as session:  # as a bias of the gain-200 setting of the same camera would be
        session.execute(update(Master).where(Master.id == bias.id).values(gain=200.0))
    summary = process(catalog, options(tmp_path, bias=Path(bias.path)))
    assert summary.exit_code == 1
    assert {(x.outcome, x.reason) for x in summary.lights} == {
        (
            "cannot",
            f"pinned bias {Path(bias.path).name} has gain 200, the light 120: pin a master of this camera "
            "set-up",
        )
    }


def test_a_step_without_frames_for_the_camera_is_not_available(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    ingest(catalog, [night.root / "BIAS", night.root / "FLAT", night.root / "LIGHT"])  # an LN2 CCD: no darks
    summary = process(catalog, options(tmp_path))
    assert summary.exit_code == 0
    assert [light.outcome for light in summary.lights] == ["calibrated"] * 4
    calibration = current(catalog, "Light_003.fits")
    assert calibration.steps["dark"] == {
        "status": "not_available",
        "reason": "no dark frames in the catalog for this camera (ZWO ASI294MM Pro b2x2 80x64)",
    }
    assert set(links(catalog, calibration.id)) == {"bias", "flat"}
    assert calibration.dark_scale_factor is None
    check_against_ccdproc(catalog, calibration)


def test_steps_skipped_on_purpose(catalog: Catalog, night: SimulatedNight, tmp_path: Path) -> None:
    summary = run(catalog, night, tmp_path, no_dark=True, no_flat=True)
    assert summary.exit_code == 0
    calibration = current(catalog, "Light_001.fits")
    assert calibration.steps["dark"] == {"status": "skipped", "reason": "--no-dark"}
    assert calibration.steps["flat"] == {"status": "skipped", "reason": "--no-flat"}
    assert set(links(catalog, calibration.id)) == {"bias"}
    check_against_ccdproc(catalog, calibration)
    again = run(catalog, night, tmp_path)
    assert {x.reason for x in again.lights if x.frame_id == calibration.frame_id} == {
        "dark master now available: master_dark_b2x2_g120_60s_C-10.fits; "
        "flat master now available: master_flat_b2x2_g120_sNA_C-10_R.fits"
    }


def test_no_bias_uses_darks_that_hold_the_bias(
    catalog: Catalog, night: SimulatedNight, tmp_path: Path
) -> None:
    summary = run(catalog, night, tmp_path, no_bias=True)
    assert summary.exit_code == 0
    calibration = current(catalog, "Light_003.fits")
    assert calibration.steps["bias"] == {
        "status": "skipped",
        "reason": "--no-bias: the darks contain the bias",
    }
    dark = master(catalog, links(catalog, calibration.id)["dark"].master_id)
    assert (dark.includes_bias, dark.exptime) == (True, 300.0)
    check_against_ccdproc(catalog, calibration)
    with pytest.raises(UsageError, match="--dark-scale cannot be used with --no-bias"):
        process(
            catalog, options(tmp_path, no_bias=True, rules=options(tmp_path).rules.__class__(dark_scale=True))
        )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"allow_missing": ("darks",)}, "--allow-missing 'darks': use one of bias, dark, flat"),
        ({"flat_min": 0.0}, "--flat-min 0 is out of range: use 0 < x < 1"),
        ({"flat_min": 1e30}, "--flat-min 1e+30 is out of range: use 0 < x < 1"),
        ({"jobs": 0}, "--jobs 0 is out of range: use a whole number 1 <= x <= 1024"),
        ({"no_dark": True, "dark": Path("x.fits")}, "--dark and --no-dark cannot be used together"),
    ],
)
def test_bad_options_are_usage_errors(
    catalog: Catalog, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as raised:
        process(catalog, options(tmp_path, **changes))  # refused as the options are made, or by process
    assert str(raised.value) == message
    assert counts(catalog)["runs"] == 0


# -- real data ---------------------------------------------------------------------------------------------


def test_real_lowell_lights_take_the_vr_flat_and_the_bias(catalog: Catalog, tmp_path: Path) -> None:
    folder = real_set("lowell-deadparrots-hall42")
    ingest(catalog, [folder])
    # without --overscan off the overscan strip is subtracted and trimmed (tests/real/test_lowell.py)
    summary = process(catalog, options(tmp_path, jobs=2, overscan="off"))
    assert summary.exit_code == 0
    assert [r.reason for r in summary.masters_of("skipped")] == [
        "1 flat frame in group b3x3 gNA C-100 filter V: fewer than --min-frames 3"
    ]
    assert len(summary.of("calibrated")) == 5
    (flat,) = rows(catalog, Master, kind="flat")
    assert flat.filter == "VR"
    for light in summary.lights:
        calibration = rows(catalog, Calibration, id=light.calibration_id)[0]
        used = links(catalog, calibration.id)
        assert set(used) == {"bias", "flat"}
        assert used["flat"].master_id == flat.id
        assert calibration.steps["dark"]["status"] == "not_available"
        output = Path(calibration.path or "")
        assert output.parent == tmp_path / "calibrated"
        assert fitsverify_counts(output)[1] == 0
        raw = rows(catalog, Frame, id=calibration.frame_id)[0]
        assert sha256_file(raw.path) == raw.sha256  # read in place, never written
    calibration = rows(catalog, Calibration, id=summary.lights[0].calibration_id)[0]
    check_against_ccdproc(catalog, calibration)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = CCDData.read(calibration.path)
    assert {type(w.message).__name__ for w in caught} <= {"FITSFixedWarning"}  # the raw WCS's own quirks
    flat_pixels = fits.getdata(flat.path)
    assert data.mask is not None
    mask = fits.getdata(calibration.path or "", "MASK")
    np.testing.assert_array_equal(data.mask, mask != 0)
    np.testing.assert_array_equal((mask & 1) != 0, ~(flat_pixels >= np.float32(0.01)))
    np.testing.assert_array_equal((mask & 16) != 0, flat_pixels < np.float32(0.5))  # vignetted, and clamped
    raw_pixels = fits.getdata(rows(catalog, Frame, id=calibration.frame_id)[0].path)
    np.testing.assert_array_equal((mask & 8) != 0, raw_pixels >= 65535)  # saturated stars
    assert int(np.count_nonzero(mask & 8)) > 1000
    assert (mask[:, 1398:] & 1).all()  # the overscan columns, where the flat is about 0
    assert data.header["NMASKED"] == int(data.mask.sum())
    assert fits.getheader(calibration.path or "")["CRVAL1"] == pytest.approx(124.6185920672)


# -- PostgreSQL --------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_process_on_postgresql(pg_url: str, night: SimulatedNight, tmp_path: Path) -> None:
    with Catalog(pg_url) as catalog:
        ingest(catalog, [night.root])
        before = counts(catalog)
        plan = dry_run(catalog, options(tmp_path))
        assert [light.outcome for light in plan.lights] == ["calibrate"] * 4
        assert counts(catalog) == before
        summary = process(catalog, options(tmp_path, jobs=2))
        assert [light.outcome for light in summary.lights] == ["calibrated"] * 4
        for light in night.files["light"]:
            calibration = current(catalog, light.name)
            assert set(links(catalog, calibration.id)) == {"bias", "dark", "flat"}
            check_against_ccdproc(catalog, calibration)
        assert process(catalog, options(tmp_path)).nothing_done
        add_frame(night.files["bias"][0], "Bias_008.fits", lambda a: a + 2)
        ingest(catalog, [night.root])
        again = process(catalog, options(tmp_path))
        assert len(again.of("calibrated")) == 4
        assert len(rows(catalog, Calibration, status="superseded")) == 4
