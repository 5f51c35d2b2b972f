"""Lowell Hall 1.1 m (LOIS): overscan + bias + flat reduction of the five VR lights, against ccdproc.

The reference is computed here, independently, with ccdproc and astropy from the raw files:
``subtract_overscan(fits_section=BIASSEC, median=True)``, ``trim_image(fits_section=TRIMSEC)``, the
combine's definition (``sigma_clip`` + ``np.ma.median``), ``subtract_bias``, ``flat_correct(min_value=0.01,
norm_value=1)``, ``create_deviation`` and NDData uncertainty propagation.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import sigma_clip
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master
from ccdcal.ingestion.core import ingest
from ccdcal.kernels.options import StepOptions
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.masters.build import build_masters
from ccdcal.masters.groups import MasterOptions
from tests.conftest import fitsverify_counts, real_set
from tests.real.conftest import every_result_reproduced

GAIN, READNOISE = 4.95, 9.3  # AGAIN_01 and ARDNS_01 of the LOIS headers


def prepared(path: Path) -> CCDData:
    """A raw frame overscan-corrected and trimmed by ccdproc, as its header's sections say."""
    header = fits.getheader(path)
    data = CCDData(fits.getdata(path).astype(np.float64), unit="adu")
    data = ccdproc.subtract_overscan(data, fits_section=header["BIASSEC"], median=True, overscan_axis=None)
    return ccdproc.trim_image(data, fits_section=header["TRIMSEC"])


def combined(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The combine's definition (docs/design.md, Science) and ccdproc's median_combine uncertainty of the
    same clip."""
    clipped = sigma_clip(stack, sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0)
    median = np.ma.median(clipped, axis=0).filled(np.nan)
    kept = len(stack) - clipped.mask.sum(axis=0)
    sigma = ccdproc.sigma_func(clipped, axis=0, ignore_nan=True) / np.sqrt(kept)
    return median, np.asarray(sigma)


def test_lowell_overscan_bias_flat_equals_ccdproc(catalog: Catalog, tmp_path: Path) -> None:
    folder = real_set("lowell-deadparrots-hall42")
    ingest(catalog, [folder])
    options = ProcessOptions(
        masters_dir=tmp_path / "masters",
        output_dir=tmp_path / "calibrated",
        jobs=2,
        min_frames=1,  # the single V flat makes a master too: it must still never be used
        optional=StepOptions(uncertainty=True),
    )
    summary = process(catalog, options)
    assert summary.exit_code == 0
    assert len(summary.of("calibrated")) == 5
    with catalog.session() as session:
        masters = {(m.kind, m.filter): m for m in session.scalars(select(Master))}
        frames = {Path(f.path).name: f for f in session.scalars(select(Frame))}
        calibrations = list(session.scalars(select(Calibration).order_by(Calibration.id)))
        used = {(c.calibration_id, c.role): c.master_id for c in session.scalars(select(CalibrationMaster))}
    v_flat = masters[("flat", "V")]
    assert v_flat.n_inputs == 1
    assert v_flat.id not in used.values()  # built, and never matched to a VR light

    # the independent reduction
    biases = [prepared(folder / f"20190326.{i:04d}.fits") for i in range(1, 8)]
    bias, bias_sigma = combined(np.array([b.data for b in biases]))
    bias, bias_sigma = bias.astype(np.float32), bias_sigma.astype(np.float32)
    bias_ccd = CCDData(bias, unit="adu", uncertainty=StdDevUncertainty(bias_sigma))
    flats = [
        ccdproc.subtract_bias(prepared(folder / f"20190326.{i:04d}.fits"), CCDData(bias, unit="adu"))
        for i in range(110, 116)
    ]
    flat_stack = np.array([f.data / np.median(f.data) for f in flats])
    flat, flat_sigma = combined(flat_stack)
    level = np.median(flat)
    flat, flat_sigma = (flat / level).astype(np.float32), (flat_sigma / level).astype(np.float32)
    flat_ccd = CCDData(flat, unit="", uncertainty=StdDevUncertainty(flat_sigma))

    vr = masters[("flat", "VR")]
    bias_master = masters[("bias", None)]
    for master, pixels, sigma in ((bias_master, bias, bias_sigma), (vr, flat, flat_sigma)):
        with fits.open(master.path) as hdul:
            assert hdul[0].header["OVSCMETH"] == "median"
            assert hdul[0].header["TRIMSECT"] == "[18:1382,1:1370]"
            np.testing.assert_allclose(hdul[0].data, pixels, rtol=1e-5, atol=1e-5 * np.median(pixels))
            np.testing.assert_allclose(hdul["UNCERT"].data, sigma, rtol=1e-5, atol=1e-6 * np.median(sigma))
        assert fitsverify_counts(Path(master.path)) == (0, 0)
        assert master.parameters["steps"]["overscan"]["biassec"] == "[1388:1432,1:1370]"
        assert len(master.parameters["steps"]["overscan"]["inputs"]) == master.n_inputs

    for calibration in calibrations:
        assert used[(calibration.id, "bias")] == bias_master.id
        assert used[(calibration.id, "flat")] == vr.id
        assert calibration.steps["overscan"] | {"level": None} == {
            "status": "applied",
            "mode": "auto",
            "method": "median",
            "biassec": "[1388:1432,1:1370]",
            "trimsec": "[18:1382,1:1370]",
            "axis": 1,
            "level": None,
        }
        assert calibration.steps["uncertainty"]["gain_source"] == "AGAIN_01"
        raw_name = next(n for n, f in frames.items() if f.id == calibration.frame_id)
        light = prepared(folder / raw_name)
        reference = ccdproc.flat_correct(
            ccdproc.subtract_bias(light, CCDData(bias, unit="adu")), CCDData(flat, unit=""), 0.01, 1
        )
        deviation = ccdproc.create_deviation(
            CCDData(light.data - bias, unit="adu"),
            gain=GAIN * u.electron / u.adu,
            readnoise=READNOISE * u.electron,
            disregard_nan=True,
        )
        with_sigma = CCDData(light.data, unit="adu", uncertainty=deviation.uncertainty)
        propagated = ccdproc.flat_correct(ccdproc.subtract_bias(with_sigma, bias_ccd), flat_ccd, 0.01, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            ours = CCDData.read(calibration.path)
        assert isinstance(ours.uncertainty, StdDevUncertainty)
        assert ours.shape == (1370, 1365)
        np.testing.assert_allclose(
            ours.data, reference.data, rtol=1e-5, atol=1e-5 * np.median(reference.data)
        )
        np.testing.assert_allclose(ours.uncertainty.array, propagated.uncertainty.array, rtol=1e-5)
        header = fits.getheader(calibration.path)
        raw_header = fits.getheader(folder / raw_name)
        assert header["CRPIX1"] == pytest.approx(float(raw_header["CRPIX1"]) - 17)
        assert header["LTV1"] == -17
        assert "BIASSEC" not in header
        assert "TRIMSEC" not in header
        assert header["OVERSCAN"].startswith("Overscan section is [1388:1432,1:1370]: row-wise median")
        assert header["TRIM"] == "Trim data section is [18:1382,1:1370]"
        assert fitsverify_counts(Path(calibration.path))[1] == 0
    every_result_reproduced(catalog)


# -- saturation ---------------------------------------------------------------------------------------------

#: TRIMSEC [18:1382,1:1370] of every LOIS frame: the calibrated area of a raw frame.
TRIM = (slice(0, 1370), slice(17, 1382))


def lowell_flat_reference(
    folder: Path, numbers: list[int], bias: np.ndarray, level: float
) -> tuple[np.ndarray, int]:
    """The master flat by the definition, saturated samples masked: each flat prepared by ccdproc minus the
    master bias, divided by the median of its unsaturated pixels, the raw samples at or above ``level``
    masked, combined, divided by its median; and the number of samples masked."""
    samples, masks = [], []
    for number in numbers:
        path = folder / f"20190326.{number:04d}.fits"
        saturated = fits.getdata(path)[TRIM] >= level
        value = prepared(path).data - bias.astype(np.float64)
        samples.append(value / np.median(value[~saturated]))
        masks.append(saturated)
    clipped = sigma_clip(
        np.ma.masked_array(np.stack(samples), mask=np.stack(masks)),
        sigma=3,
        maxiters=5,
        cenfunc="median",
        stdfunc="mad_std",
        axis=0,
    )
    flat = np.ma.median(clipped, axis=0).filled(np.nan)
    return (flat / np.nanmedian(flat)).astype(np.float32), int(np.sum(masks))


def test_lowell_saturated_pixels_are_flagged_and_left_out_of_the_masters(
    catalog: Catalog, tmp_path: Path
) -> None:
    """The lights' stars reach 65535 (BITPIX 16, BZERO 32768): every pixel whose raw sample is at or above
    it carries MASK bit 8, every pixel of the vignetted flat below 0.5 bit 16; most calibrated values above
    65535 (up to 260,000 ADU: stars divided by a flat of a few percent) carry one of them. The single V
    flat, two of whose samples are saturated, is the combine of its unsaturated samples (NaN there)."""
    folder = real_set("lowell-deadparrots-hall42")
    ingest(catalog, [folder])
    options = ProcessOptions(
        masters_dir=tmp_path / "masters", output_dir=tmp_path / "calibrated", jobs=2, min_frames=1
    )
    summary = process(catalog, options)
    assert (summary.exit_code, len(summary.of("calibrated"))) == (0, 5)
    with catalog.session() as session:
        masters = {(m.kind, m.filter): m for m in session.scalars(select(Master))}
        frames = {f.id: Path(f.path) for f in session.scalars(select(Frame))}
        calibrations = list(session.scalars(select(Calibration).order_by(Calibration.id)))
    vr = fits.getdata(masters[("flat", "VR")].path)
    above: dict[str, int] = {}
    for calibration in calibrations:
        raw = fits.getdata(frames[calibration.frame_id])[TRIM]
        mask = fits.getdata(calibration.path, "MASK")
        data = fits.getdata(calibration.path)
        header = fits.getheader(calibration.path)
        saturated = raw >= 65535
        np.testing.assert_array_equal((mask & 8) != 0, saturated)
        np.testing.assert_array_equal((mask & 16) != 0, vr < np.float32(0.5))
        assert 1000 < int(saturated.sum()) == header["NMASK8"] == calibration.steps["saturation"]["flagged"]
        assert (
            header["NMASK16"]
            == int(np.count_nonzero(vr < np.float32(0.5)))
            == calibration.steps["flat"]["low"]
        )
        high = data > 65535
        flagged = (mask[high] & (8 | 16)) != 0
        assert flagged.mean() > 0.85  # the rest: unsaturated star cores over a flat of 0.5 to 0.6
        assert float(data[high][~flagged].max(initial=0)) < 120000
        above[frames[calibration.frame_id].name] = int(high.sum())
        assert calibration.steps["saturation"] == {
            "status": "applied",
            "level": 65535.0,
            "source": "data type",
            "detail": "BITPIX 16, BZERO 32768",
            "option": None,
            "flagged": int(saturated.sum()),
        }
        assert header["SATLEVEL"] == 65535.0
    assert above["20190326.0126.fits"] == 155  # the first light's calibrated pixels above 65535
    # the V flat: one frame, two saturated samples left out
    biases = [prepared(folder / f"20190326.{i:04d}.fits") for i in range(1, 8)]
    bias = (
        np.ma.median(
            sigma_clip(
                np.array([b.data for b in biases]),
                sigma=3,
                maxiters=5,
                cenfunc="median",
                stdfunc="mad_std",
                axis=0,
            ),
            axis=0,
        )
        .filled(np.nan)
        .astype(np.float32)
    )
    expected, samples = lowell_flat_reference(folder, [100], bias, 65535.0)
    v_flat = masters[("flat", "V")]
    ours = fits.getdata(v_flat.path)
    assert samples == 2
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert v_flat.parameters["steps"]["saturation"]["samples"] == 2 == fits.getheader(v_flat.path)["NSATUR"]
    assert masters[("flat", "VR")].parameters["steps"]["saturation"]["samples"] == 0
    assert fitsverify_counts(Path(v_flat.path)) == (0, 0)


def test_lowell_master_flat_from_flats_with_saturated_stars(catalog: Catalog, tmp_path: Path) -> None:
    """At --saturation 30000 the stars of the six VR sky flats (up to 54,000 ADU) are saturated: the master
    flat equals the combine of the unsaturated samples, each flat's level their median."""
    folder = real_set("lowell-deadparrots-hall42")
    ingest(catalog, [folder])
    options = MasterOptions(
        masters_dir=tmp_path / "masters", kinds=("bias", "flat"), optional=StepOptions(saturation=30000.0)
    )
    summary = build_masters(catalog, options)
    assert (
        summary.of("skipped")[0].reason
        == "1 flat frame in group b3x3 gNA C-100 filter V: fewer than --min-frames 3"
    )
    with catalog.session() as session:
        masters = {(m.kind, m.filter): m for m in session.scalars(select(Master))}
    bias = fits.getdata(masters[("bias", None)].path)
    expected, samples = lowell_flat_reference(folder, list(range(110, 116)), bias, 30000.0)
    assert samples > 200
    vr = masters[("flat", "VR")]
    np.testing.assert_allclose(fits.getdata(vr.path), expected, rtol=1e-5, atol=1e-5)
    record = vr.parameters["steps"]["saturation"]
    assert record == {
        "option": 30000.0,
        "levels": [{"level": 30000.0, "source": "--saturation", "detail": "", "count": 6}],
        "samples": samples,
    }
    assert fits.getheader(vr.path)["NSATUR"] == samples
    assert fitsverify_counts(Path(vr.path)) == (0, 0)
