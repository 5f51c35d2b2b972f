"""``ccdcal masters``: groups, chained pre-calibration, numbers against ccdproc, files, rows and versions."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import sigma_clip, sigma_clipped_stats
from sqlalchemy import select, update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master, MasterCalibrator, MasterInput, Run
from ccdcal.catalog.queries import grouped_frames
from ccdcal.errors import UsageError
from ccdcal.files.fitsio import sha256_file
from ccdcal.files.ownership import MARKER
from ccdcal.ingestion.core import ingest
from ccdcal.masters.build import build_masters, list_masters
from ccdcal.masters.groups import MasterOptions, MastersSummary, overscan_level, recorded_level
from ccdcal.masters.plan import plan_masters
from ccdcal.simulate import SimulatedNight, simulate_night
from tests.conftest import fitsverify_counts, real_set

SHAPE = (64, 80)
NAMES = {
    "master_bias_b2x2_g120_sNA_C-10.fits",
    "master_dark_b2x2_g120_2s_C-10.fits",
    "master_dark_b2x2_g120_5s_C-10.fits",
    "master_dark_b2x2_g120_60s_C-10.fits",
    "master_dark_b2x2_g120_300s_C-10.fits",
    "master_flat_b2x2_g120_sNA_C-10_R.fits",
    "master_flat_b2x2_g120_sNA_C-10_Ha.fits",
}


@pytest.fixture
def night(tmp_path: Path) -> SimulatedNight:
    """A small simulated night: 7 biases, 5 darks at 2, 5, 60, 300 s, 5 flats in R (2 s) and Ha (5 s)."""
    return simulate_night(tmp_path / "raw", seed=11, shape=SHAPE, n_light=1)


Build = Callable[..., MastersSummary]


@pytest.fixture
def build(catalog: Catalog, night: SimulatedNight, tmp_path: Path) -> Build:
    """Ingest the night (again: picks up changed and added files), then build masters into tmp/masters."""

    def run(**options: Any) -> MastersSummary:
        ingest(catalog, [night.root])
        return build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", **options))

    return run


def masters(catalog: Catalog, **where: Any) -> list[Master]:
    with catalog.session() as session:
        query = select(Master).filter_by(**where).order_by(Master.id)
        return list(session.scalars(query))


def unversioned(path: str | Path) -> str:
    """A master's file name without its ``_vN`` suffix."""
    return re.sub(r"_v\d+(?=\.fits$)", "", Path(path).name)


def current(catalog: Catalog, name_part: str) -> Master:
    """The one current master whose file name (without ``_vN``) contains ``name_part``."""
    found = [m for m in masters(catalog, status="current") if name_part in unversioned(m.path)]
    assert len(found) == 1, [m.path for m in found]
    return found[0]


def calibrators(catalog: Catalog, master_id: int) -> dict[str, tuple[int, float | None]]:
    with catalog.session() as session:
        rows = session.scalars(select(MasterCalibrator).where(MasterCalibrator.master_id == master_id))
        return {r.role: (r.calibrator_id, r.scale) for r in rows}


def inputs(catalog: Catalog, master_id: int) -> dict[int, str]:
    with catalog.session() as session:
        rows = session.scalars(select(MasterInput).where(MasterInput.master_id == master_id))
        return {r.frame_id: r.sha256 for r in rows}


def frames_named(catalog: Catalog, token: str) -> dict[int, str]:
    """id → sha256 of the usable frames whose file name contains ``token``."""
    with catalog.session() as session:
        rows = session.execute(select(Frame.id, Frame.path, Frame.sha256).where(Frame.status == "ok"))
        return {i: sha for i, path, sha in rows if token in Path(path).name}


def set_frames(catalog: Catalog, token: str, **values: Any) -> None:
    """Update the catalog rows of the frames whose file name contains ``token``."""
    ids = list(frames_named(catalog, token))
    assert ids
    with catalog.session() as session:
        session.execute(update(Frame).where(Frame.id.in_(ids)).values(**values))


def add_frame(
    source: Path, name: str, change: Callable[[np.ndarray], np.ndarray], minutes: float = 30
) -> Path:
    """A new raw frame beside ``source``: its header (DATE-OBS later) and ``change(pixels)``."""
    target = source.with_name(name)
    with fits.open(source) as hdul:
        data = change(hdul[0].data.astype(np.float64))
        hdul[0].data = np.clip(np.rint(data), 0, 65535).astype(np.uint16)
        when = dt.datetime.fromisoformat(hdul[0].header["DATE-OBS"]) + dt.timedelta(minutes=minutes)
        hdul[0].header["DATE-OBS"] = when.isoformat()
        hdul.writeto(target)
    return target


def clipped_median(stack: list[np.ndarray]) -> np.ndarray:
    """The definition of the combine (docs/design.md, Science), with astropy."""
    clipped = sigma_clip(np.array(stack), sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0)
    return np.ma.median(clipped, axis=0).filled(np.nan)


def ccd(path: str | Path) -> CCDData:
    """A raw or master frame as float64 CCDData in adu (what a ccdproc user would start from)."""
    data = fits.getdata(path).astype(np.float64)
    return CCDData(data, unit="adu", meta=fits.getheader(path))


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours − reference| / max(|reference|, 1): relative, and absolute for values below 1."""
    return float(np.max(np.abs(ours.astype(np.float64) - reference) / np.maximum(np.abs(reference), 1.0)))


# -- groups and a first build --------------------------------------------------------------------------


def test_a_simulated_night_makes_one_master_per_group(catalog: Catalog, build: Build) -> None:
    summary = build()
    assert [r.outcome for r in summary.reports] == ["built"] * 7
    assert {Path(r.path).name for r in summary.reports if r.path} == NAMES
    assert summary.exit_code == 0
    assert summary.as_dict()["built"] == 7
    rows = masters(catalog)
    assert {r.kind for r in rows} == {"bias", "dark", "flat"}
    assert all(r.status == "current" and r.version == 1 and r.run_id == summary.run_id for r in rows)
    assert all(Path(r.path).is_absolute() and sha256_file(r.path) == r.sha256 for r in rows)
    bias = current(catalog, "bias")
    assert bias.n_inputs == 7
    assert bias.exptime is None
    assert bias.filter is None
    assert bias.temp_key == -10.0
    assert bias.ccd_temp_mean == pytest.approx(-10.0, abs=0.25)
    assert bias.stat_median == pytest.approx(500.0, abs=2.0)
    assert bias.stat_std is not None
    assert 0 <= (bias.rejected_fraction or 0) < 0.2
    for exposure in (2, 5, 60, 300):
        dark = current(catalog, f"_{exposure}s_")
        assert dark.exptime == exposure
        assert dark.n_inputs == 5
        assert not dark.includes_bias
        assert calibrators(catalog, dark.id) == {"bias": (bias.id, None)}
    for band, exposure in (("R", 2), ("Ha", 5)):
        flat = current(catalog, f"_{band}.fits")
        dark = current(catalog, f"_{exposure}s_")
        assert flat.filter == band
        assert flat.stat_median == pytest.approx(1.0, abs=1e-6)
        assert calibrators(catalog, flat.id) == {"bias": (bias.id, None), "dark": (dark.id, 1.0)}
        assert len(flat.parameters["flat_levels"]) == 5
    with catalog.session() as session:
        run = session.get(Run, summary.run_id)
        assert run is not None
        assert run.command == "masters"
        assert run.status == "ok"


def test_provenance_rows_equal_the_input_sets(catalog: Catalog, build: Build) -> None:
    build()
    for token, name_part in (
        ("Bias_", "bias"),
        ("Dark_60s_", "_60s_"),
        ("Dark_2s_", "_2s_"),
        ("Flat_R_", "_R.fits"),
        ("Flat_Ha_", "_Ha.fits"),
    ):
        master = current(catalog, name_part)
        expected = frames_named(catalog, token)
        assert len(expected) in (5, 7)
        assert inputs(catalog, master.id) == expected  # frame ids and the sha256 as used
        assert master.n_inputs == len(expected)
        header = fits.getheader(master.path)
        assert header["NCOMBINE"] == len(expected)
        with catalog.session() as session:
            names = [Path(p).name for p in session.scalars(select(Frame.path).where(Frame.id.in_(expected)))]
        assert sorted(header[f"IMCMB{i:03d}"] for i in range(1, len(expected) + 1)) == sorted(names)


def test_a_second_run_builds_nothing(catalog: Catalog, build: Build, tmp_path: Path) -> None:
    first = build()
    files = sorted((tmp_path / "masters").iterdir())
    again = build()
    assert [r.outcome for r in again.reports] == ["current"] * 7
    assert [r.master_id for r in again.reports] == [r.master_id for r in first.reports]
    assert sorted((tmp_path / "masters").iterdir()) == files
    assert len(masters(catalog)) == 7


def test_a_master_whose_file_was_deleted_is_built_again(catalog: Catalog, build: Build) -> None:
    build()
    gone = current(catalog, "_300s_")
    Path(gone.path).unlink()
    summary = build()
    (report,) = summary.of("built")
    assert Path(report.path or "").name == "master_dark_b2x2_g120_300s_C-10_v2.fits"
    assert report.warnings == [
        "the previous dark master master_dark_b2x2_g120_300s_C-10.fits cannot be read for comparison"
    ]
    assert masters(catalog, id=gone.id)[0].status == "superseded"
    assert len(summary.of("current")) == 6


def test_min_frames_skips_small_groups_with_the_reason(catalog: Catalog, build: Build) -> None:
    summary = build(min_frames=6)
    skipped = summary.of("skipped")
    assert len(skipped) == 6
    assert summary.exit_code == 1
    assert "5 dark frames in group ZWO ASI294MM Pro b2x2 g120 C-10 60s: fewer than --min-frames 6" in [
        r.reason for r in skipped
    ]
    assert "5 flat frames in group ZWO ASI294MM Pro b2x2 g120 C-10 filter Ha: fewer than --min-frames 6" in [
        r.reason for r in skipped
    ]
    assert [Path(r.path).name for r in summary.of("built")] == ["master_bias_b2x2_g120_sNA_C-10.fits"]
    with catalog.session() as session:
        run = session.get(Run, summary.run_id)
        assert run is not None
        assert run.status == "partial"
    with pytest.raises(UsageError, match="min-frames"):
        build(min_frames=0)
    with pytest.raises(UsageError, match="--kind"):
        build(kinds=("light",))


def test_groups_served_by_masters_built_before_are_current(catalog: Catalog, build: Build) -> None:
    """Built with --min-frames 5, the masters serve their groups when a later run asks 6: the groups are
    reported current (the lights use those masters), neither skipped nor built again; a dry run's plan says
    the same. Only a group no master serves is skipped."""
    first = build(min_frames=5)
    assert (len(first.of("built")), first.of("skipped")) == (7, [])
    later = build(min_frames=6)
    assert later.of("skipped") == []
    assert later.of("built") == []
    assert sorted(r.master_id for r in later.of("current")) == sorted(r.master_id for r in first.of("built"))
    assert later.exit_code == 0
    with catalog.scratch(Master) as session:  # what `process --dry-run` plans
        planned = plan_masters(session, MasterOptions(min_frames=6))
    assert [(r.outcome, r.reason) for r in planned] == [("current", None)] * 7


def test_kinds_can_be_built_one_at_a_time(catalog: Catalog, build: Build) -> None:
    assert [r.kind for r in build(kinds=("bias",)).reports] == ["bias"]
    flats = build(kinds=("flat",))
    assert [r.outcome for r in flats.reports] == ["built", "built"]
    assert all(set(calibrators(catalog, r.master_id or 0)) == {"bias"} for r in flats.reports)  # no darks yet
    everything = build()
    assert [r.outcome for r in everything.reports] == ["current"] + ["built"] * 6  # flats now with darks
    assert len(masters(catalog, kind="flat", status="superseded")) == 2


# -- numbers -------------------------------------------------------------------------------------------


def test_masters_equal_a_ccdproc_computation(catalog: Catalog, build: Build, night: SimulatedNight) -> None:
    build()
    bias, dark, flat = current(catalog, "bias"), current(catalog, "_60s_"), current(catalog, "_R.fits")
    reference_bias = clipped_median([ccd(p).data for p in night.files["bias"]])
    assert relative_difference(fits.getdata(bias.path), reference_bias) < 1e-6

    master_bias = ccd(bias.path)  # the float32 file the darks were made with
    debiased = [
        ccdproc.subtract_bias(ccd(p), master_bias).data for p in night.files["dark"] if "_60s_" in p.name
    ]
    reference_dark = clipped_median(debiased)
    assert relative_difference(fits.getdata(dark.path), reference_dark) < 1e-5

    master_dark = ccd(current(catalog, "_2s_").path)
    normalised = []
    for path in (p for p in night.files["flat"] if "_R_" in p.name):
        frame = ccdproc.subtract_bias(ccd(path), master_bias)
        frame = ccdproc.subtract_dark(
            frame, master_dark, exposure_time="EXPTIME", exposure_unit=u.s, scale=True
        )
        normalised.append(frame.data / np.median(frame.data))
    combined = clipped_median(normalised)
    reference_flat = combined / np.median(combined)
    ours = fits.getdata(flat.path)
    assert relative_difference(ours, reference_flat) < 1e-5
    assert np.median(ours) == pytest.approx(1.0, abs=1e-7)


def test_every_master_records_its_level_the_clipped_mean_of_its_pixels(
    catalog: Catalog, build: Build, night: SimulatedNight
) -> None:
    """``parameters.level``: astropy's sigma_clipped_stats of the master's file, with its standard error."""
    build()
    for master in masters(catalog):
        pixels = fits.getdata(master.path).astype(np.float64)
        clipped = sigma_clip(pixels, sigma=3, maxiters=5, cenfunc="median", stdfunc="std", masked=False)
        mean, _, std = sigma_clipped_stats(pixels, sigma=3, maxiters=5)
        level = master.parameters["level"]
        assert level["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert level["std"] == pytest.approx(np.std(clipped, ddof=1), rel=1e-9)
        assert level["std"] == pytest.approx(std, rel=1e-3)
        assert level["pixels"] == clipped.size
        assert level["error"] == pytest.approx(level["std"] / np.sqrt(clipped.size))
        assert (level["sigma"], level["maxiters"]) == (3.0, 5)
        assert recorded_level(master.parameters) == (level["mean"], level["error"])
        assert overscan_level(master.parameters) is None  # no BIASSEC: no overscan subtracted
    bias = current(catalog, "bias").parameters["level"]
    assert bias["mean"] == pytest.approx(night.truth["bias_level"], abs=5 * bias["error"])


def test_the_readers_of_a_masters_level_and_overscan_level() -> None:
    overscan = {"steps": {"overscan": {"inputs": [{"frame_id": 1, "level": 1000.0}, {"level": 1002.0}]}}}
    assert overscan_level(overscan) == (1001.0, 1.0, 2)
    assert overscan_level({"steps": {"overscan": {"inputs": [{"level": 7}, {"level": None}]}}}) == (
        7.0,
        None,
        1,
    )
    for nothing in (None, [], {"steps": {}}, {"steps": {"overscan": {"inputs": [{"level": "x"}]}}}):
        assert overscan_level(nothing) is None
    assert recorded_level({"level": {"mean": 3, "error": 0.5}}) == (3.0, 0.5)
    for nothing in ({}, {"level": {"mean": 3}}, {"level": {"mean": 3, "error": -1}}, {"level": [3, 1]}):
        assert recorded_level(nothing) is None
    assert recorded_level({"level": {"mean": True, "error": 0.1}}) is None


def flat_dark_history(path: str | Path) -> list[str]:
    """The HISTORY lines of a master flat that name its dark (none when it took none)."""
    return [str(line) for line in fits.getheader(path)["HISTORY"] if str(line).startswith("dark ")]


def test_flats_take_the_dark_at_their_own_exposure_unscaled_by_default(
    catalog: Catalog, build: Build
) -> None:
    build()
    for filter_name, exposure in (("R", "_2s_"), ("Ha", "_5s_")):
        flat, dark = current(catalog, f"_{filter_name}.fits"), current(catalog, exposure)
        assert calibrators(catalog, flat.id) == {
            "bias": (current(catalog, "bias").id, None),
            "dark": (dark.id, 1.0),
        }
        header = fits.getheader(flat.path)
        assert (header["DARKCOR"], header["DARKSCAL"]) == (Path(dark.path).name, 1.0)
        assert flat.parameters["dark_scales"] == [1.0] * flat.n_inputs


def test_flats_without_a_dark_at_their_exposure_are_only_bias_subtracted_by_default(
    catalog: Catalog, build: Build, night: SimulatedNight
) -> None:
    ingest(catalog, [night.root])
    set_frames(catalog, "Dark_2s_", is_bad=True, bad_reason="test")  # no 2 s dark for the R flats
    summary = build()
    assert len(summary.of("built")) == 6
    flat, bias = current(catalog, "_R.fits"), current(catalog, "bias")
    assert calibrators(catalog, flat.id) == {"bias": (bias.id, None)}  # the 5 s dark is not scaled
    header = fits.getheader(flat.path)
    assert "DARKCOR" not in header
    assert "DARKSCAL" not in header
    assert header["BIASCOR"] == Path(bias.path).name
    assert flat_dark_history(flat.path) == []
    assert flat.parameters["dark_scales"] == []
    master_bias = ccd(bias.path)
    normalised = []
    for path in (p for p in night.files["flat"] if "_R_" in p.name):
        frame = ccdproc.subtract_bias(ccd(path), master_bias)
        normalised.append(frame.data / np.median(frame.data))
    combined = clipped_median(normalised)
    assert relative_difference(fits.getdata(flat.path), combined / np.median(combined)) < 1e-5
    # the Ha flats (5 s) still take the 5 s dark, unscaled
    assert calibrators(catalog, current(catalog, "_Ha.fits").id)["dark"] == (
        current(catalog, "_5s_").id,
        1.0,
    )


def test_flats_of_several_exposures_take_no_dark_unless_scaled(
    catalog: Catalog, build: Build, night: SimulatedNight
) -> None:
    ingest(catalog, [night.root])
    set_frames(catalog, "Flat_R_001", exptime=3.0)  # R flats at 2 s and 3 s: no one dark is at theirs
    build()
    flat, bias = current(catalog, "_R.fits"), current(catalog, "bias")
    assert calibrators(catalog, flat.id) == {"bias": (bias.id, None)}
    assert flat_dark_history(flat.path) == []

    scaled = build(flat_dark_scale=True)  # the nearest dark at least as long as 3 s, scaled to each flat
    assert {Path(r.path).name for r in scaled.of("built")} == {"master_flat_b2x2_g120_sNA_C-10_R_v2.fits"}
    flat, dark5 = current(catalog, "_R.fits"), current(catalog, "_5s_")
    assert calibrators(catalog, flat.id) == {"bias": (bias.id, None), "dark": (dark5.id, None)}
    assert sorted(flat.parameters["dark_scales"]) == pytest.approx([0.4, 0.4, 0.4, 0.4, 0.6])
    header = fits.getheader(flat.path)
    assert header["DARKCOR"] == Path(dark5.path).name
    assert "DARKSCAL" not in header  # one scale per flat
    history = flat_dark_history(flat.path)
    assert history[0].startswith(f"dark subtracted: {Path(dark5.path).name} sha256 ")
    assert history[1:] == ["dark scaled by t_flat / t_dark = 0.4, 0.6"]


def test_flat_dark_scale_with_no_bias_is_refused(catalog: Catalog, build: Build) -> None:
    with pytest.raises(UsageError, match=r"^--flat-dark-scale cannot be used with --no-bias: "):
        build(no_bias=True, flat_dark_scale=True)
    assert masters(catalog) == []


def test_flats_take_the_nearest_longer_dark_scaled_to_their_exposure(
    catalog: Catalog, build: Build, night: SimulatedNight
) -> None:
    ingest(catalog, [night.root])
    set_frames(catalog, "Dark_2s_", is_bad=True, bad_reason="test")  # no 2 s dark for the R flats
    summary = build(flat_dark_scale=True)
    assert len(summary.of("built")) == 6
    flat, dark5 = current(catalog, "_R.fits"), current(catalog, "_5s_")
    assert calibrators(catalog, flat.id)["dark"] == (dark5.id, pytest.approx(0.4))
    header = fits.getheader(flat.path)
    assert header["DARKCOR"] == "master_dark_b2x2_g120_5s_C-10.fits"
    assert header["DARKSCAL"] == pytest.approx(0.4)
    master_bias, master_dark = ccd(current(catalog, "bias").path), ccd(dark5.path)
    normalised = []
    for path in (p for p in night.files["flat"] if "_R_" in p.name):
        frame = ccdproc.subtract_bias(ccd(path), master_bias)
        frame = ccdproc.subtract_dark(
            frame, master_dark, exposure_time="EXPTIME", exposure_unit=u.s, scale=True
        )
        normalised.append(frame.data / np.median(frame.data))
    combined = clipped_median(normalised)
    assert relative_difference(fits.getdata(flat.path), combined / np.median(combined)) < 1e-5


def test_no_bias_keeps_the_bias_in_darks_and_flats_use_them_unscaled(
    catalog: Catalog, build: Build, night: SimulatedNight
) -> None:
    summary = build(no_bias=True)
    names = {Path(r.path).name for r in summary.of("built")}
    assert "master_dark_b2x2_g120_60s_C-10_withbias.fits" in names
    dark = current(catalog, "_60s_")
    assert dark.includes_bias
    assert calibrators(catalog, dark.id) == {}
    assert fits.getheader(dark.path)["WITHBIAS"] is True
    raw = clipped_median([ccd(p).data for p in night.files["dark"] if "_60s_" in p.name])
    assert relative_difference(fits.getdata(dark.path), raw) < 1e-6
    flat, dark2 = current(catalog, "_R.fits"), current(catalog, "_2s_")
    assert calibrators(catalog, flat.id) == {"dark": (dark2.id, 1.0)}  # the dark replaces the bias

    with_bias = build()  # the bias-subtracted darks are other products: the _withbias ones stay
    built = {Path(r.path).name for r in with_bias.of("built")}
    assert "master_dark_b2x2_g120_60s_C-10.fits" in built
    assert len(masters(catalog, kind="dark", status="current")) == 8
    flat = current(catalog, "_R.fits")
    assert set(calibrators(catalog, flat.id)) == {"bias", "dark"}
    dark2 = next(
        m for m in masters(catalog, kind="dark", status="current", exptime=2.0) if not m.includes_bias
    )
    assert calibrators(catalog, flat.id)["dark"][0] == dark2.id


# -- files ---------------------------------------------------------------------------------------------


def test_master_files_are_valid_fits_and_read_as_ccddata(catalog: Catalog, build: Build) -> None:
    build()
    for master in masters(catalog):
        assert fitsverify_counts(Path(master.path)) == (0, 0), master.path
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = CCDData.read(master.path)
        assert not caught, [str(w.message) for w in caught]
        assert data.unit == (u.dimensionless_unscaled if master.kind == "flat" else u.adu)
        assert data.data.dtype == np.dtype(">f4")
        assert data.shape == SHAPE
        header = data.header
        assert header["IMAGETYP"] == f"MASTER {master.kind.upper()}"
        assert header["NCOMBINE"] == master.n_inputs
        assert header["IMCMB001"].endswith(".fits")
        assert header["CCDCALV"]
        assert header["COMBMETH"] == "sigma_clipped_median"
        assert (header["CLIPLOW"], header["CLIPHIGH"], header["CLIPITER"]) == (3.0, 3.0, 5)
        assert (header["CLIPCEN"], header["CLIPDEV"]) == ("median", "mad_std")
        assert (header["XBINNING"], header["GAIN"], header["TEMPKEY"]) == (2, 120.0, -10.0)
        assert header["STATMED"] == pytest.approx(master.stat_median)
        history = " ".join(str(h) for h in header["HISTORY"])
        assert "sigma-clipped median" in history
        if master.kind != "bias":
            bias = current(catalog, "bias")
            assert header["BIASCOR"] == Path(bias.path).name
            assert bias.sha256 in history
    assert not any(p.name.startswith(".ccdcal-tmp") for p in Path(masters(catalog)[0].path).parent.iterdir())


def test_listing_shows_the_qa_numbers(catalog: Catalog, build: Build) -> None:
    build()
    listed = list_masters(catalog)
    assert len(listed) == 7
    assert [r["kind"] for r in listed] == ["bias"] + ["dark"] * 4 + ["flat"] * 2
    for row in listed:
        assert row["status"] == "current"
        assert row["version"] == 1
        assert row["warnings"] == []
        assert None not in (row["median"], row["mean"], row["std"], row["rejected_fraction"])


# -- versions ------------------------------------------------------------------------------------------


def test_an_added_bias_makes_v2_and_rebuilds_what_depended_on_it(
    catalog: Catalog, build: Build, night: SimulatedNight, tmp_path: Path
) -> None:
    build()
    old = {Path(m.path).name: m for m in masters(catalog)}
    rng = np.random.default_rng(5)
    add_frame(night.files["bias"][0], "Bias_008.fits", lambda a: a + rng.normal(0, 3.5, a.shape))
    summary = build()
    assert len(summary.of("built")) == 7
    assert not any(r.warnings for r in summary.reports)
    bias = current(catalog, "bias")
    assert Path(bias.path).name == "master_bias_b2x2_g120_sNA_C-10_v2.fits"
    assert bias.version == 2
    assert bias.n_inputs == 8
    first = old["master_bias_b2x2_g120_sNA_C-10.fits"]
    assert masters(catalog, id=first.id)[0].status == "superseded"
    assert Path(first.path).is_file()
    assert sha256_file(first.path) == first.sha256
    assert len(inputs(catalog, first.id)) == 7  # the old master keeps its provenance
    for name, before in old.items():
        if before.kind == "bias":
            continue
        assert masters(catalog, id=before.id)[0].status == "superseded"
        new = current(catalog, name.removesuffix(".fits"))
        assert Path(new.path).name == name.replace(".fits", "_v2.fits")
        assert new.version == 2
        assert calibrators(catalog, new.id)["bias"][0] == bias.id
        assert inputs(catalog, new.id) == inputs(catalog, before.id)  # same raw frames, new bias
    assert len(list((tmp_path / "masters").glob("*.fits"))) == 14
    assert [r.outcome for r in build().reports] == ["current"] * 7


def test_a_bias_that_moved_is_reported(catalog: Catalog, build: Build, night: SimulatedNight) -> None:
    build(kinds=("bias",))
    ingest(catalog, [night.root])
    set_frames(catalog, "Bias_", is_bad=True, bad_reason="replaced")
    for i, source in enumerate(night.files["bias"][:3], 1):
        add_frame(source, f"Warm_{i}.fits", lambda a: a + 40.0)
    summary = build(kinds=("bias",))
    (report,) = summary.of("built")
    assert len(report.warnings) == 1
    assert "differs from the previous one (master_bias_b2x2_g120_sNA_C-10.fits) by +40" in report.warnings[0]
    (listed,) = list_masters(catalog)
    assert listed["warnings"] == report.warnings
    assert listed["version"] == 2
    qa = current(catalog, "bias").parameters["qa"]
    assert qa["previous_id"] == masters(catalog)[0].id
    assert qa["shift"] == pytest.approx(40.0, abs=1)
    assert any("QA warning" in str(h) for h in fits.getheader(report.path or "")["HISTORY"])
    assert len(list_masters(catalog, include_superseded=True)) == 2


def test_a_changed_input_file_makes_a_new_version(
    catalog: Catalog, build: Build, night: SimulatedNight
) -> None:
    build()
    before = current(catalog, "_60s_")
    path = next(p for p in night.files["dark"] if p.name == "Dark_60s_003.fits")
    old_sha = sha256_file(path)
    with fits.open(path, mode="update") as hdul:
        hdul[0].data[10:20, 10:20] += 7
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 60))
    summary = build()
    assert [Path(r.path).name for r in summary.of("built")] == ["master_dark_b2x2_g120_60s_C-10_v2.fits"]
    after = current(catalog, "_60s_")
    frame_id = next(i for i, _ in frames_named(catalog, "Dark_60s_003").items())
    assert inputs(catalog, before.id)[frame_id] == old_sha
    assert inputs(catalog, after.id)[frame_id] == sha256_file(path) != old_sha
    assert masters(catalog, id=before.id)[0].status == "superseded"


def test_a_frame_marked_bad_leaves_its_group(catalog: Catalog, build: Build) -> None:
    build()
    before = current(catalog, "_Ha.fits")
    set_frames(catalog, "Flat_Ha_002", is_bad=True, bad_reason="cloud")
    set_frames(catalog, "Flat_Ha_004", status="rejected")
    summary = build()
    assert [Path(r.path).name for r in summary.of("built")] == ["master_flat_b2x2_g120_sNA_C-10_Ha_v2.fits"]
    after = current(catalog, "_Ha.fits")
    assert after.n_inputs == 3
    assert after.version == 2
    excluded = set(frames_named(catalog, "Flat_Ha_002"))
    assert excluded <= set(inputs(catalog, before.id))
    assert excluded.isdisjoint(inputs(catalog, after.id))
    set_frames(catalog, "Flat_Ha_001", is_bad=True)
    shrunk = build()
    assert [r.reason for r in shrunk.of("skipped")] == [
        "2 flat frames in group ZWO ASI294MM Pro b2x2 g120 C-10 filter Ha: fewer than --min-frames 3"
    ]


def test_a_failed_registration_leaves_no_file(
    catalog: Catalog, build: Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ccdcal.masters.files

    def broken(*_args: object) -> list[Any]:
        raise RuntimeError("database went away")

    monkeypatch.setattr(ccdcal.masters.files, "_calibrator_rows", broken)
    with pytest.raises(RuntimeError, match="went away"):
        build()
    assert [p.name for p in (tmp_path / "masters").iterdir()] == [MARKER]
    assert masters(catalog) == []
    with catalog.session() as session:
        assert session.scalars(select(Run.status).where(Run.command == "masters")).all() == ["failed"]


# -- real data -----------------------------------------------------------------------------------------


def test_real_stl1001_groups_by_temperature_and_exposure(catalog: Catalog, tmp_path: Path) -> None:
    ingest(catalog, [real_set("ylo0803-ast443-stl1001")])
    with catalog.session() as session:
        darks = grouped_frames(session, "dark")
        biases = grouped_frames(session, "bias")
    dark_groups = {(r["temp_key"], r["exptime"]): r["group_size"] for r in darks}
    cold = {t: n for (temp, t), n in dark_groups.items() if temp == 0.0}
    assert cold == {10.0: 1, 30.0: 5, **{float(t): 1 for t in range(60, 301, 30)}}  # one group per exposure
    assert dark_groups[(10.0, 300.0)] == 1  # the +10 °C dark is its own group
    assert len(dark_groups) == 12
    assert {(r["temp_key"], r["group_size"]) for r in biases} == {(0.0, 5), (10.0, 1)}

    summary = build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters"))
    built = {Path(r.path).name: r for r in summary.of("built")}
    assert set(built) == {"master_bias_b1x1_gNA_sNA_C0.fits", "master_dark_b1x1_gNA_30s_C0.fits"}
    dark = built["master_dark_b1x1_gNA_30s_C0.fits"]
    assert calibrators(catalog, dark.master_id or 0) == {
        "bias": (built["master_bias_b1x1_gNA_sNA_C0.fits"].master_id, None)
    }
    reasons = [r.reason or "" for r in summary.of("skipped")]
    assert (
        "1 bias frame in group SBIG STL-1001 3 CCD Camera b1x1 gNA C10: fewer than --min-frames 3" in reasons
    )
    assert (
        "1 dark frame in group SBIG STL-1001 3 CCD Camera b1x1 gNA C10 300s: fewer than --min-frames 3"
        in reasons
    )
    assert len(reasons) == 13
    assert summary.exit_code == 1


def test_real_lowell_flats_group_by_filter(catalog: Catalog, tmp_path: Path) -> None:
    ingest(catalog, [real_set("lowell-deadparrots-hall42")])
    summary = build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters"))
    by_kind = {(r.kind, r.keys.get("filter")): r for r in summary.reports}
    assert set(by_kind) == {("bias", None), ("flat", "VR"), ("flat", "V")}
    single = by_kind[("flat", "V")]
    assert single.outcome == "skipped"
    assert single.reason == "1 flat frame in group b3x3 gNA C-100 filter V: fewer than --min-frames 3"
    flat = by_kind[("flat", "VR")]
    assert flat.outcome == "built"
    assert flat.n_inputs == 6
    assert Path(flat.path or "").name == "master_flat_b3x3_gNA_sNA_C-100_VR.fits"
    assert calibrators(catalog, flat.master_id or 0) == {"bias": (by_kind[("bias", None)].master_id, None)}
    data = fits.getdata(flat.path or "")
    assert np.median(data) == pytest.approx(1.0, abs=1e-6)
    assert fitsverify_counts(Path(flat.path or "")) == (0, 0)


# -- PostgreSQL ----------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_masters_on_postgresql(pg_url: str, night: SimulatedNight, tmp_path: Path) -> None:
    with Catalog(pg_url) as catalog:
        ingest(catalog, [night.root])
        options = MasterOptions(masters_dir=tmp_path / "masters")
        summary = build_masters(catalog, options)
        assert {Path(r.path).name for r in summary.of("built")} == NAMES
        bias = current(catalog, "bias")
        flat = current(catalog, "_Ha.fits")
        assert calibrators(catalog, flat.id) == {
            "bias": (bias.id, None),
            "dark": (current(catalog, "_5s_").id, 1.0),
        }
        assert inputs(catalog, flat.id) == frames_named(catalog, "Flat_Ha_")
        assert [r.outcome for r in build_masters(catalog, options).reports] == ["current"] * 7
        shutil.copy(night.files["bias"][0], night.files["bias"][0].with_name("Bias_copy.fits"))
        ingest(catalog, [night.root])
        again = build_masters(catalog, options)
        assert len(again.of("built")) == 7
        assert Path(current(catalog, "bias").path).name == "master_bias_b2x2_g120_sNA_C-10_v2.fits"
        assert len(masters(catalog, status="superseded")) == 7
