"""The optional steps through ``ccdcal process``: overscan on every frame, uncertainty, cosmic rays;
recorded, compared run to run, and refused with reasons."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from sqlalchemy import select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Master
from ccdcal.cli import app
from ccdcal.errors import UsageError
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import dry_run, process
from ccdcal.simulate import SimulatedNight, simulate_night
from tests.conftest import fitsverify_counts, with_step_options

SHAPE = (40, 70)


def options(tmp_path: Path, **changes: Any) -> ProcessOptions:
    values: dict[str, Any] = {
        "masters_dir": tmp_path / "masters",
        "output_dir": tmp_path / "calibrated",
        "jobs": 1,
    }
    return ProcessOptions(**with_step_options(values | changes))


def current(catalog: Catalog, model: Any, **where: Any) -> list[Any]:
    with catalog.session() as session:
        query = select(model).filter_by(status="current", **where).order_by(model.id)
        return list(session.scalars(query))


@pytest.fixture
def night(tmp_path: Path) -> SimulatedNight:
    return simulate_night(tmp_path / "raw", seed=3, shape=(32, 48), n_bias=3, n_dark=3, n_flat=3, n_light=2)


@pytest.fixture
def overscan_night(tmp_path: Path) -> Path:
    """A CCD with an overscan strip (BIASSEC/TRIMSEC): 3 biases, 3 flats, 2 lights, no darks."""
    rng = np.random.default_rng(5)
    root = tmp_path / "ccd"
    root.mkdir()
    level = 1200 + 0.4 * np.arange(SHAPE[0])[:, None]
    flat_field = rng.normal(1.0, 0.02, (SHAPE[0], 53))
    frames = [("bias", i, 0.0, 0.0) for i in range(3)]
    frames += [("flat", i, 2.0, 20000.0) for i in range(3)] + [("light", i, 60.0, 800.0) for i in range(2)]
    for kind, i, exptime, signal in frames:
        data = level + rng.normal(0, 4, SHAPE) + i
        data[:, 3:56] += signal * flat_field
        header = fits.Header()
        header["IMAGETYP"] = kind.upper()
        header["EXPTIME"] = exptime
        header["FILTER"] = "V"
        header["DATE-OBS"] = f"2026-01-01T0{i}:00:00"
        header["BIASSEC"] = "[61:70,1:40]"
        header["TRIMSEC"] = "[4:56,1:40]"
        header["EGAIN"], header["RDNOISE"] = 1.5, 6.0
        fits.PrimaryHDU(np.rint(data).astype(np.uint16), header).writeto(root / f"{kind}_{i}.fits")
    return root


def test_overscan_on_every_frame_and_switched_off(
    catalog: Catalog, tmp_path: Path, overscan_night: Path
) -> None:
    ingest(catalog, [overscan_night])
    summary = process(catalog, options(tmp_path))
    assert summary.exit_code == 0
    assert len(summary.of("calibrated")) == 2
    masters = {m.kind: m for m in current(catalog, Master)}
    for master in masters.values():
        assert fits.getdata(master.path).shape == (40, 53)
        assert master.parameters["steps"]["overscan"]["method"] == "median"
    first = current(catalog, Calibration)[0]
    assert first.steps["overscan"]["trimsec"] == "[4:56,1:40]"
    assert fits.getdata(first.path).shape == (40, 53)
    assert fitsverify_counts(Path(first.path)) == (0, 0)
    again = process(catalog, options(tmp_path))
    assert again.nothing_done

    plan = dry_run(catalog, options(tmp_path, overscan="off"))
    assert [m.outcome for m in plan.masters] == ["build", "build"]
    assert all(light.outcome == "calibrate" for light in plan.lights)
    off = process(catalog, options(tmp_path, overscan="off"))
    assert len(off.of("calibrated")) == 2
    reason = off.of("calibrated")[0].reason or ""
    assert "overscan/trim: median of [61:70,1:40] trim [4:56,1:40] → none" in reason
    assert all(fits.getdata(m.path).shape == SHAPE for m in current(catalog, Master))
    first = current(catalog, Calibration)[0]
    assert "overscan" not in first.steps
    assert fits.getdata(first.path).shape == SHAPE

    poly = process(catalog, options(tmp_path, overscan="poly:1"))
    assert len(poly.of("calibrated")) == 2
    assert current(catalog, Calibration)[0].steps["overscan"]["method"] == "poly:1"
    assert {fits.getheader(m.path)["OVSCMETH"] for m in current(catalog, Master)} == {"poly:1"}


def test_median_overscan_needs_biassec(catalog: Catalog, tmp_path: Path, night: SimulatedNight) -> None:
    ingest(catalog, [night.root])
    summary = process(catalog, options(tmp_path, overscan="median"))
    assert summary.exit_code == 1
    reasons = [m.reason or "" for m in summary.masters_of("skipped")]
    bias = night.files["bias"][0]
    assert reasons[0] == (
        "cannot prepare the bias frames of group ZWO ASI294MM Pro b2x2 g120 C-10: "
        f"{bias}: --overscan median needs a BIASSEC keyword, and the header has none"
    )
    assert len(reasons) == 7  # darks and flats have no bias master to subtract
    allowed = process(catalog, options(tmp_path, overscan="median", allow_missing=("bias", "dark", "flat")))
    assert [(light.outcome, light.reason) for light in allowed.lights] == [
        ("cannot", "--overscan median needs a BIASSEC keyword, and the header has none")
    ] * 2


def test_uncertainty_through_process(catalog: Catalog, tmp_path: Path, night: SimulatedNight) -> None:
    ingest(catalog, [night.root])
    missing = process(catalog, options(tmp_path, uncertainty=True))
    assert missing.exit_code == 1
    assert {light.reason for light in missing.of("cannot")} == {
        "--uncertainty needs the read noise in e- (RDNOISE, READNOIS, RDNOIS, RON, ARDNS_01): "
        "pass --readnoise"
    }
    for master in current(catalog, Master):
        assert fits.getheader(master.path, "UNCERT")["UTYPE"] == "StdDevUncertainty"
        assert master.parameters["steps"].keys() == {"uncertainty", "saturation"}  # no overscan
        assert master.parameters["steps"]["uncertainty"] is True

    summary = process(catalog, options(tmp_path, uncertainty=True, readnoise=3.5))
    assert len(summary.of("calibrated")) == 2
    calibration = current(catalog, Calibration)[0]
    assert calibration.steps["uncertainty"] == {
        "status": "applied",
        "gain": 0.25,
        "gain_source": "EGAIN",
        "readnoise": 3.5,
        "readnoise_source": "--readnoise",
        "masters": {"bias": True, "dark": True, "flat": True},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = CCDData.read(calibration.path)
    assert isinstance(ours.uncertainty, StdDevUncertainty)
    reference = _ccdproc_uncertainty(catalog, calibration)
    np.testing.assert_allclose(ours.uncertainty.array, reference, rtol=1e-5)
    assert fitsverify_counts(Path(calibration.path)) == (0, 0)

    assert process(catalog, options(tmp_path, uncertainty=True, readnoise=3.5)).nothing_done
    changed = process(catalog, options(tmp_path, uncertainty=True, readnoise=4.0))
    assert {light.reason for light in changed.of("calibrated")} == {"gain or read noise changed"}
    off = process(catalog, options(tmp_path))
    assert all("--uncertainty off" in (light.reason or "") for light in off.of("calibrated"))
    with fits.open(current(catalog, Calibration)[0].path) as hdul:
        assert "UNCERT" not in hdul


def test_an_egain_of_nan_is_a_reason_not_the_gain_setting(
    catalog: Catalog, tmp_path: Path, night: SimulatedNight
) -> None:
    """N.I.N.A. writes GAIN = 120 (its gain setting) beside EGAIN; with EGAIN = 'nan' the light is not
    calibrated, with the card named and the fix, instead of taking 120 as e-/ADU."""
    light = night.files["light"][0]
    with fits.open(light, mode="update") as hdul:
        hdul[0].header["EGAIN"] = "nan"
        hdul[0].header["RDNOISE"] = 3.5
    ingest(catalog, [night.root])
    summary = process(catalog, options(tmp_path, uncertainty=True, readnoise=3.5))
    assert summary.exit_code == 1
    (refused,) = summary.of("cannot")
    assert (refused.path, refused.reason) == (
        str(light),
        "--uncertainty needs a usable EGAIN: EGAIN = 'nan' is not a positive number of e-/ADU; pass --gain",
    )
    assert len(summary.of("calibrated")) == 1
    fixed = process(catalog, options(tmp_path, uncertainty=True, readnoise=3.5, gain=0.25))
    assert [x.path for x in fixed.of("calibrated")] == [str(light)]
    (calibration,) = [
        c for c in current(catalog, Calibration) if c.id == fixed.of("calibrated")[0].calibration_id
    ]
    assert calibration.steps["uncertainty"]["gain_source"] == "--gain"


def _ccdproc_uncertainty(catalog: Catalog, calibration: Calibration) -> np.ndarray:
    """The light's uncertainty by ccdproc from its raw file and the masters' UNCERT (as stored)."""
    with catalog.session() as session:
        raw = session.get(Frame, calibration.frame_id)
        assert raw is not None
        path, exptime = raw.path, raw.exptime
    steps = calibration.steps

    def master(role: str, unit: str = "adu") -> CCDData:
        with fits.open(steps[role]["path"]) as hdul:
            return CCDData(
                hdul[0].data.astype(np.float64),
                unit=unit,
                uncertainty=StdDevUncertainty(hdul["UNCERT"].data.astype(np.float64)),
            )

    bias, dark, flat = master("bias"), master("dark"), master("flat", "")
    light = fits.getdata(path).astype(np.float64)
    deviation = ccdproc.create_deviation(
        CCDData(light - bias.data, unit="adu"),
        gain=0.25 * u.electron / u.adu,
        readnoise=3.5 * u.electron,
        disregard_nan=True,
    )
    data = CCDData(light, unit="adu", uncertainty=deviation.uncertainty)
    data = ccdproc.subtract_bias(data, bias)
    dark_time = fits.getheader(steps["dark"]["path"])["EXPTIME"]
    data = ccdproc.subtract_dark(
        data, dark, dark_exposure=dark_time * u.s, data_exposure=exptime * u.s, scale=True
    )
    data = ccdproc.flat_correct(data, flat, min_value=0.01, norm_value=1)
    return np.asarray(data.uncertainty.array)


def test_cosmic_rays_through_process(catalog: Catalog, tmp_path: Path, night: SimulatedNight) -> None:
    light = night.files["light"][0]
    with fits.open(light, mode="update") as hdul:  # two cosmic-ray hits on the first light
        hdul[0].data[5, 7] = 60000
        hdul[0].data[20, 30] = 60000
    ingest(catalog, [night.root])
    summary = process(catalog, options(tmp_path, cosmic_rays=True, readnoise=3.5, cr_sigclip=5.0))
    assert summary.exit_code == 0
    calibrations = current(catalog, Calibration)
    first = next(c for c in calibrations if Path(c.path).name == light.name.replace(".fits", "_cal.fits"))
    record = first.steps["cosmic_rays"]
    assert record["sigclip"] == 5.0
    assert (record["gain"], record["readnoise"], record["noise_source"]) == (0.25, 3.5, "EGAIN, --readnoise")
    assert record["cleaned"] >= 2
    mask = fits.getdata(first.path, "MASK")
    assert mask[5, 7] & 4
    assert mask[20, 30] & 4
    assert fits.getheader(first.path)["CRCLEAN"] == record["cleaned"]
    assert fitsverify_counts(Path(first.path)) == (0, 0)
    again = process(catalog, options(tmp_path, cosmic_rays=True, readnoise=3.5, cr_sigclip=6.0))
    assert {light.reason for light in again.of("calibrated")} == {"cosmic-ray parameters changed"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"overscan": "mean"}, "--overscan 'mean': use auto, off, median or poly:N (N from 0 to 9)"),
        ({"gain": 0.0}, "--gain 0 is out of range: use 0.001 <= x <= 1000 e-/ADU"),
        ({"readnoise": -1.0}, "--readnoise -1 is out of range: use 0 <= x <= 1000 e-"),
        ({"cosmic_rays": True, "cr_sigclip": -2.0}, "--cr-sigclip -2 is out of range: use 0 < x <= 100"),
    ],
)
def test_bad_step_options_are_usage_errors(
    catalog: Catalog, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as raised:
        process(catalog, options(tmp_path, **changes))
    assert str(raised.value) == message


def test_step_options_on_the_command_line(tmp_path: Path, overscan_night: Path) -> None:
    db = str(tmp_path / "c.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", db, "ingest", str(overscan_night)]).exit_code == 0
    bad = runner.invoke(app, ["--db", db, "process", "--overscan", "poly"])
    assert (bad.exit_code, bad.stderr) == (
        2,
        "Error: --overscan 'poly': use auto, off, median or poly:N (N from 0 to 9)\n",
    )
    folders = ["--masters-dir", str(tmp_path / "m"), "--output-dir", str(tmp_path / "o"), "-j", "1"]
    built = runner.invoke(app, ["--db", db, "masters", "--overscan", "median", "--uncertainty", *folders[:2]])
    assert built.exit_code == 0, built.output
    assert built.stdout.startswith("Masters (run 2): 2 built, 0 already current, 0 skipped\n")
    done = runner.invoke(app, ["--db", db, "process", "--uncertainty", "--json", *folders])
    assert done.exit_code == 0, done.output
    assert '"built": 0' not in done.stdout
    with Catalog(db) as catalog:
        calibrations = current(catalog, Calibration)
        assert len(calibrations) == 2
        assert calibrations[0].steps["uncertainty"]["gain_source"] == "EGAIN"
        assert all(fits.getheader(m.path)["OVSCMETH"] == "median" for m in current(catalog, Master))


def test_a_pinned_master_prepared_otherwise_is_refused(
    catalog: Catalog, tmp_path: Path, overscan_night: Path
) -> None:
    """A master whose inputs were not overscan-corrected and trimmed as --overscan prepares them now is
    refused before anything is written, naming the option to give (it used to fail every light)."""
    ingest(catalog, [overscan_night])
    process(catalog, options(tmp_path, overscan="off"))
    (plain_bias,) = current(catalog, Master, kind="bias")
    runs = len(catalog.runs())
    with pytest.raises(UsageError) as raised:
        process(catalog, options(tmp_path, bias=Path(plain_bias.path)))
    assert str(raised.value) == (
        f"--bias {plain_bias.path} was built from frames prepared with overscan none, and --overscan auto "
        "prepares them with median of [61:70,1:40] trim [4:56,1:40]: pass --overscan off, or pin a master "
        "built with --overscan auto"
    )
    assert len(catalog.runs()) == runs
    pinned = process(catalog, options(tmp_path, overscan="off", bias=Path(plain_bias.path)))
    assert pinned.exit_code == 0
    process(catalog, options(tmp_path))
    median_bias = next(m for m in current(catalog, Master, kind="bias"))
    with pytest.raises(UsageError) as raised:
        process(catalog, options(tmp_path, overscan="off", bias=Path(median_bias.path)))
    assert str(raised.value) == (
        f"--bias {median_bias.path} was built from frames prepared with overscan median of [61:70,1:40] "
        "trim [4:56,1:40], and --overscan off prepares them with none: pass --overscan auto, or pin a "
        "master built with --overscan off"
    )
