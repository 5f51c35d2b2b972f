"""Frame QA (issue 21) on real frames of ../shared/data/real, each fault added the way it happens.

- light reaching a bias (a leak: photons, Poisson-distributed in electrons at the camera's gain, over the
  exposed pixels only, the overscan untouched);
- a 300 s sky frame written with IMAGETYP ``BIAS``;
- a "flat" that is a bias (its pixels a real bias's, its header the flat's) and a flat exposed 2.8 times too
  long (its signal above the overscan scaled, clipped at the ADC's 65535);
- a dark whose cooler had not settled (CCD-TEMP 6 °C above its group's).

Each bad frame is set aside with its rule and numbers (``frame_qa``, ``master_set_aside``, the master's
NSETASID/SETASnnn cards, the report's warnings) and the master equals, bit for bit, the master of the clean
frames alone built with the frame QA off. The clean real sets and the simulated night lose no frame.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import (
    Calibration,
    CalibrationMaster,
    Frame,
    FrameQa,
    FrameStat,
    Master,
    MasterInput,
    MasterSetAside,
    Run,
)
from ccdcal.cli import app
from ccdcal.ingestion.core import ingest
from ccdcal.kernels.options import StepOptions
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.masters.build import build_masters
from ccdcal.masters.frameqa import QaOptions
from ccdcal.masters.groups import MasterOptions, MasterReport, MastersSummary
from ccdcal.reproduction.core import reproduce
from ccdcal.simulate import simulate_night
from ccdcal.trace.impact import impact, mark_bad, mark_good
from tests.conftest import real_set

LOWELL = "lowell-deadparrots-hall42"
YLO = "ylo0803-ast443-stl1001"
#: AGAIN_01 of the LOIS headers (e-/ADU): light arrives as electrons.
GAIN = 4.95
#: TRIMSEC [18:1382,1:1370] of every LOIS frame: the pixels light reaches (not the prescan or overscan).
EXPOSED = np.s_[:, 17:1382]
#: BIASSEC [1388:1432,1:1370].
OVERSCAN = np.s_[:, 1387:1432]
LEAKED = "20190326.0005.fits"
SKY = "20190326.0126.fits"


# -- the faults ---------------------------------------------------------------------------------------------


def lowell(number: int) -> Path:
    """A Lowell Hall 1.1 m raw frame (``20190326.NNNN.fits``)."""
    return real_set(LOWELL) / f"20190326.{number:04d}.fits"


def copied(folder: Path, paths: Iterable[Path]) -> list[Path]:
    """The files copied, byte for byte, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, folder / path.name)) for path in paths]


def rewritten(source: Path, target: Path, data: np.ndarray | None = None, **cards: Any) -> Path:
    """A copy of a real frame written by astropy, its header kept (BITPIX 16, BZERO 32768 ...) but for
    ``cards``, its pixels ``data`` when given."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with fits.open(source) as hdul:
        if data is not None:
            hdul[0].data = data
        for keyword, value in cards.items():
            hdul[0].header[keyword] = value
        hdul.writeto(target)
    return target


def adc(values: np.ndarray) -> np.ndarray:
    """What the 16-bit converter writes: whole numbers, 0 to 65535."""
    return np.clip(np.round(values), 0, 65535).astype(np.uint16)


def lit(source: Path, target: Path, light: np.ndarray) -> Path:
    """``source`` with ``light`` (ADU, over the exposed pixels) reaching its detector: photons counted
    as electrons (Poisson, at the gain), added to the frame's own counts and digitised again."""
    data = fits.getdata(source).astype(np.float64)
    electrons = np.random.default_rng(21).poisson(light * GAIN)
    data[EXPOSED] += electrons / GAIN
    return rewritten(source, target, adc(data))


def ramp_leak(shape: tuple[int, int]) -> np.ndarray:
    """Light leaking in across the detector: from 0 at one corner to 300 ADU at the opposite one."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return 300.0 * (0.6 * x / (shape[1] - 1) + 0.4 * y / (shape[0] - 1))


def corner_leak(shape: tuple[int, int]) -> np.ndarray:
    """Light leaking in at one corner (a gap of the shutter): 400 ADU there, falling off over 15% of the
    detector."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return 400.0 * np.exp(-np.hypot(x / shape[1], y / shape[0]) / 0.15)


def leaked_bias(folder: Path, leak: str = "ramp") -> Path:
    """Bias 0005 with light leaking in."""
    light = (ramp_leak if leak == "ramp" else corner_leak)((1370, 1365))
    return lit(lowell(5), folder / LEAKED, light)


def sky_as_bias(folder: Path) -> Path:
    """The 300 s OBJECT frame 0126 as a wrong choice of image type writes it: IMAGETYP and OBSTYPE
    ``BIAS``, everything else (EXPTIME 300, FILTER VR, the sky and stars) the light's."""
    return rewritten(lowell(126), folder / SKY, IMAGETYP="BIAS", OBSTYPE="BIAS")


def bias_as_flat(folder: Path) -> Path:
    """Sky flat 0111 whose exposure read nothing but the bias: bias 0001's pixels, the flat's header."""
    return rewritten(lowell(111), folder / "20190326.0111.fits", fits.getdata(lowell(1)))


def saturated_flat(folder: Path) -> Path:
    """Sky flat 0112 exposed 2.8 times too long: its signal above the overscan level scaled, clipped at
    65535 (73% of its pixels)."""
    data = fits.getdata(lowell(112)).astype(np.float64)
    overscan = np.median(data[OVERSCAN])
    data[EXPOSED] = overscan + (data[EXPOSED] - overscan) * 2.8
    return rewritten(lowell(112), folder / "20190326.0112.fits", adc(data))


def unsettled_dark(folder: Path) -> Path:
    """Dark 1 of the 30 s series taken 6 °C warmer (its CCD-TEMP 6 °C up; SET-TEMP still 0)."""
    source = real_set(YLO) / "dark_10series_0c_0m30s.00000001.DARK.FIT"
    return rewritten(source, folder / source.name, **{"CCD-TEMP": fits.getheader(source)["CCD-TEMP"] + 6})


# -- what the catalog holds ---------------------------------------------------------------------------------


def names(session: Any) -> dict[int, str]:
    return {f.id: Path(f.path).name for f in session.scalars(select(Frame))}


def qa_rows(catalog: Catalog) -> list[tuple[str, str, str, str]]:
    """Every ``frame_qa`` row: (file name, rule, decision, decided_by), in order."""
    with catalog.reading() as session:
        named = names(session)
        return [
            (named[q.frame_id], q.rule, q.decision, q.decided_by)
            for q in session.scalars(select(FrameQa).order_by(FrameQa.id))
        ]


def newest_qa(catalog: Catalog) -> FrameQa:
    with catalog.reading() as session:
        row = session.scalars(select(FrameQa).order_by(FrameQa.id.desc()).limit(1)).one()
        session.expunge(row)
        return row


def stat_of(catalog: Catalog, name: str) -> FrameStat:
    with catalog.reading() as session:
        frame = frame_named(session, name)
        row = session.scalars(select(FrameStat).where(FrameStat.sha256 == frame.sha256)).one()
        session.expunge(row)
        return row


def frame_named(session: Any, name: str) -> Frame:
    (frame,) = [f for f in session.scalars(select(Frame)) if Path(f.path).name == name]
    return frame


def frame_id(catalog: Catalog, name: str) -> int:
    with catalog.reading() as session:
        return frame_named(session, name).id


def masters_of(catalog: Catalog, kind: str) -> list[Master]:
    """The masters of ``kind``, oldest first."""
    with catalog.reading() as session:
        rows = list(session.scalars(select(Master).where(Master.kind == kind).order_by(Master.id)))
        session.expunge_all()
        return rows


def inputs_of(catalog: Catalog, master: Master) -> list[str]:
    """The file names of a master's ``master_inputs``, sorted."""
    with catalog.reading() as session:
        named = names(session)
        ids = session.scalars(select(MasterInput.frame_id).where(MasterInput.master_id == master.id))
        return sorted(named[i] for i in ids)


def set_aside_of(catalog: Catalog, master: Master) -> list[tuple[str, str | None, str, str]]:
    """A master's ``master_set_aside`` rows: (file name, sha256, rule, reason)."""
    with catalog.reading() as session:
        named = names(session)
        rows = session.scalars(select(MasterSetAside).where(MasterSetAside.master_id == master.id))
        return sorted((named[r.frame_id], r.sha256, r.rule, r.reason) for r in rows)


def count(catalog: Catalog, model: Any) -> int:
    with catalog.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def report_of(summary: MastersSummary, kind: str) -> MasterReport:
    (report,) = [r for r in summary.reports if r.kind == kind and r.n_inputs > 1]
    return report


def check_set_aside(
    catalog: Catalog, summary: MastersSummary, kind: str, aside: dict[str, str], kept: list[str]
) -> tuple[Master, dict[str, FrameQa]]:
    """The group of ``kind`` built from ``kept`` alone, each frame of ``aside`` (file name: rule) set aside
    by its rule and recorded everywhere: ``frame_qa`` (the rule the first of its numbers),
    ``master_set_aside``, the master's cards and parameters, the report's warnings. Returns the master and
    the ``frame_qa`` rows by file name."""
    (master,) = [m for m in masters_of(catalog, kind) if m.n_inputs > 1]
    assert (master.version, master.status, master.n_inputs) == (1, "current", len(kept))
    assert inputs_of(catalog, master) == sorted(kept)
    with catalog.reading() as session:
        named = names(session)
        rows = {named[q.frame_id]: q for q in session.scalars(select(FrameQa).order_by(FrameQa.id))}
        session.expunge_all()
        shas = {name: frame_named(session, name).sha256 for name in aside}
    assert {n: (q.rule, q.decision, q.decided_by) for n, q in rows.items()} == {
        n: (rule, "set_aside", "rule") for n, rule in aside.items()
    }
    for name, row in rows.items():
        assert row.sha256 == shas[name]
        assert next(iter(row.numbers)) == aside[name]  # the first rule failed is the frame's
        assert row.reason is not None
        assert row.reason.endswith(")")
        assert f"({aside[name]} rule)" in row.reason
        assert row.run_id == summary.run_id
    assert set_aside_of(catalog, master) == sorted((n, shas[n], aside[n], rows[n].reason) for n in aside)
    header = fits.getheader(master.path)
    assert header["NCOMBINE"] == len(kept)
    assert header["NSETASID"] == len(aside)
    shown = {header[f"SETAS{i:03d}"]: header.comments[f"SETAS{i:03d}"] for i in range(1, len(aside) + 1)}
    assert shown == {n: f"rule {rule}" for n, rule in aside.items()}
    recorded = master.parameters["frame_qa"]
    assert recorded["enabled"] is True
    assert sorted((named[a["frame_id"]], a["rule"], a["reason"]) for a in recorded["set_aside"]) == sorted(
        (n, aside[n], rows[n].reason) for n in aside
    )
    report = report_of(summary, kind)
    assert (report.outcome, report.master_id, report.n_inputs) == ("built", master.id, len(kept))
    order = [named[a["frame_id"]] for a in recorded["set_aside"]]
    assert report.warnings == [f"frame {n} set aside: {rows[n].reason}" for n in order]
    return master, rows


def clean_master(tmp_path: Path, frames: list[Path], kind: str, **options: Any) -> np.ndarray:
    """The pixels of the master of ``kind`` built from ``frames`` alone, in a catalog of its own, with
    the frame QA off (``--no-frame-qa``)."""
    folder = tmp_path / "clean"
    copied(folder, frames)
    with Catalog(tmp_path / "clean.db") as catalog:
        ingest(catalog, [folder])
        summary = build_masters(
            catalog,
            MasterOptions(masters_dir=tmp_path / "clean-masters", qa=QaOptions(enabled=False), **options),
        )
        assert count(catalog, FrameStat) == count(catalog, FrameQa) == 0
        (master,) = [m for m in masters_of(catalog, kind) if m.n_inputs > 1]
        with catalog.reading() as session:
            assert master.n_inputs == len(session.scalars(select(Frame).filter_by(imagetyp=kind)).all())
        assert summary.exit_code == 0
        return np.asarray(fits.getdata(master.path))


def same_pixels(master: Master, clean: np.ndarray) -> None:
    ours = np.asarray(fits.getdata(master.path))
    assert ours.dtype == clean.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(ours, clean)


# -- 1. a light leak ----------------------------------------------------------------------------------------

LEAK_REASONS = {
    # A leak across the detector: its gradient is its farthest outlier, so light_leak is its rule.
    "ramp": (
        "light_leak",
        "level changes by 301.4 ADU across the detector, the group's by 1.367 (769σ, limit 10σ): a light "
        "leak (light_leak rule); noise 62.81 ADU about the group's median frame, group 1.084 ± 0.1084 (569σ, "
        "limit 10σ) (outlier_noise rule); level 150 ADU, group 1 ± 0.271 (550σ, limit 10σ) (outlier_level "
        "rule)",
    ),
    # A leak at a corner leaves the level (3 ADU) within 10σ: its bright corner is wrong_type's tail.
    "corner": (
        "wrong_type",
        "9.56% of its pixels are far above the group's median frame (limit 1.00% and 5 x the group's "
        "0.001337%): stars or light, not a frame without light (wrong_type rule); level changes by 100.9 ADU "
        "across the detector, the group's by 1.367 (255σ, limit 10σ): a light leak (light_leak rule); noise "
        "3.657 ADU about the group's median frame, group 1.119 ± 0.1119 (23σ, limit 10σ) (outlier_noise "
        "rule)",
    ),
}


@pytest.mark.parametrize("leak", ["ramp", "corner"])
def test_a_bias_with_a_light_leak_is_set_aside(catalog: Catalog, tmp_path: Path, leak: str) -> None:
    raw = tmp_path / "raw"
    clean = copied(raw, [lowell(n) for n in range(1, 5)])
    leaked = leaked_bias(raw, leak)
    header, original = fits.getheader(leaked), fits.getheader(lowell(5))
    assert (header["BITPIX"], header["BZERO"], header["BSCALE"]) == (16, 32768, 1)
    assert {k: header[k] for k in original if k not in ("COMMENT", "HISTORY")} == {
        k: original[k] for k in original if k not in ("COMMENT", "HISTORY")
    }
    np.testing.assert_array_equal(fits.getdata(leaked)[OVERSCAN], fits.getdata(lowell(5))[OVERSCAN])
    ingest(catalog, [raw])
    summary = build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", kinds=("bias",)))
    assert summary.exit_code == 0
    rule, reason = LEAK_REASONS[leak]
    master, rows = check_set_aside(catalog, summary, "bias", {LEAKED: rule}, [p.name for p in clean])
    row = rows[LEAKED]
    assert row.reason == reason
    stat = stat_of(catalog, LEAKED)
    # light_leak fails too, on the gradient measured
    assert row.numbers["light_leak"]["gradient"] == stat.gradient
    assert row.numbers["light_leak"]["gradient"] > 50 * row.numbers["light_leak"]["group_gradient"]
    assert row.numbers["outlier_noise"]["noise"] == stat.diff_noise
    if leak == "ramp":
        assert row.numbers["outlier_level"]["level"] == stat.level == 150.0
        assert row.numbers["outlier_level"]["group_level"] == 1.0
        assert round(stat.gradient, 1) == 301.4
    else:
        assert row.numbers["wrong_type"] == {"tail_fraction": stat.tail_fraction}
        assert round(stat.tail_fraction, 4) == 0.0956
        assert stat.level == 3.0
    same_pixels(master, clean_master(tmp_path, clean, "bias", kinds=("bias",)))


# -- 2. a light labelled bias -------------------------------------------------------------------------------

SKY_REASON = (
    "level 7080 ADU, group 1 ± 0.271 (26124σ, limit 10σ) (outlier_level rule); noise 160.5 ADU about the "
    "group's median frame, group 1.084 ± 0.1084 (1471σ, limit 10σ) (outlier_noise rule); level changes by "
    "515.3 ADU across the detector, the group's by 1.367 (1317σ, limit 10σ): a light leak (light_leak rule)"
)


def test_a_sky_frame_labelled_bias_is_set_aside(catalog: Catalog, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    clean = copied(raw, [lowell(n) for n in range(1, 5)])
    sky_as_bias(raw)
    ingest(catalog, [raw])
    with catalog.reading() as session:
        sky = frame_named(session, SKY)
        assert (sky.imagetyp, sky.exptime, sky.status) == ("bias", 300.0, "ok")
    summary = build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", kinds=("bias",)))
    assert summary.exit_code == 0
    master, rows = check_set_aside(catalog, summary, "bias", {SKY: "outlier_level"}, [p.name for p in clean])
    assert rows[SKY].reason == SKY_REASON
    stat = stat_of(catalog, SKY)
    assert rows[SKY].numbers["outlier_level"]["level"] == stat.level == 7080.0
    # its stars are 0.26% of its pixels: below wrong_type's 1%, so its level tells it
    assert round(stat.tail_fraction, 4) == 0.0026
    same_pixels(master, clean_master(tmp_path, clean, "bias", kinds=("bias",)))
    # made again from what the catalog recorded (its inputs, not the frame set aside): bit for bit
    remade = reproduce(catalog, f"master:{master.id}")
    assert remade.exit_code == 0
    assert remade.lines() == [
        f"master:{master.id} {Path(master.path).name}: reproduced bit for bit (PRIMARY, UNCERT)"
    ]


# -- 3. a flat at the bias level and a saturated flat -------------------------------------------------------

FLAT_REASONS = {
    "auto": {
        "20190326.0111.fits": "level after the bias 0 ADU, not above its pixel-to-pixel noise 1.17: a bias "
        "or a dark, not a flat (wrong_type rule)",
        "20190326.0112.fits": "72.82% of its pixels saturated (limit 5.00%), level 51108 ADU = 78% of "
        "saturation 65535 (limit 90%): saturated or in the non-linear range (flat_bright rule)",
    },
    "off": {
        "20190326.0111.fits": "level after the bias 0 ADU, not above its pixel-to-pixel noise 1.17: a bias "
        "or a dark, not a flat (wrong_type rule)",
        "20190326.0112.fits": "69.53% of its pixels saturated (limit 5.00%), level 47814 ADU = 73% of "
        "saturation 65535 (limit 90%): saturated or in the non-linear range (flat_bright rule)",
    },
}


@pytest.mark.parametrize("overscan", ["auto", "off"])
def test_a_flat_at_the_bias_level_and_a_saturated_flat_are_set_aside(
    catalog: Catalog, tmp_path: Path, overscan: str
) -> None:
    """With the overscan subtracted (its saturated samples then NaN before they are measured) and without
    (the raw samples measured): the saturated flat is flat_bright's, never wrong_type's."""
    raw = tmp_path / "raw"
    biases = copied(raw, [lowell(n) for n in range(1, 8)])
    good = copied(raw, [lowell(n) for n in (110, 113, 114, 115)])
    bias_as_flat(raw)
    saturated_flat(raw)
    ingest(catalog, [raw])
    options = {"kinds": ("bias", "flat"), "optional": StepOptions.parse(overscan=overscan)}
    summary = build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", **options))
    assert summary.exit_code == 0
    aside = {"20190326.0111.fits": "wrong_type", "20190326.0112.fits": "flat_bright"}
    master, rows = check_set_aside(catalog, summary, "flat", aside, [p.name for p in good])
    assert {n: r.reason for n, r in rows.items()} == FLAT_REASONS[overscan]
    assert list(rows["20190326.0112.fits"].numbers) == ["flat_bright"]
    faint, bright = stat_of(catalog, "20190326.0111.fits"), stat_of(catalog, "20190326.0112.fits")
    # a bias minus the master bias: its median 0, below its pixel-to-pixel noise of about 1.17 ADU
    assert rows["20190326.0111.fits"].numbers == {"wrong_type": {"signal": 0.0, "noise": faint.signal_noise}}
    assert faint.signal == 0.0
    assert round(faint.signal_noise, 2) == 1.17
    assert rows["20190326.0112.fits"].numbers["flat_bright"] == {
        "saturated_fraction": bright.saturated_fraction,
        "level": bright.level,
        "saturation": 65535.0,
    }
    if overscan == "auto":  # the share of the frame's samples written NaN by the overscan step
        at_top = np.count_nonzero(fits.getdata(raw / "20190326.0112.fits")[EXPOSED] >= 65535)
        assert at_top == 1361800
        assert bright.saturated_fraction == at_top / (1370 * 1365)
    else:  # the share of its grid's samples at or above 65535
        assert round(bright.saturated_fraction, 4) == 0.6953
    bias = masters_of(catalog, "bias")
    assert [(m.n_inputs, m.status) for m in bias] == [(7, "current")]
    assert inputs_of(catalog, bias[0]) == sorted(p.name for p in biases)
    same_pixels(master, clean_master(tmp_path, [*biases, *good], "flat", **options))


# -- 4. a dark whose cooler had not settled -----------------------------------------------------------------

TEMPERATURE_REASON = (
    "CCD at 6.189 °C, +6.0 °C off the group's set point 0.189 °C (tolerance ±2 °C): the cooler had not "
    "settled (temperature rule)"
)


def ylo_darks(raw: Path) -> tuple[list[Path], list[Path]]:
    """The five 0 °C biases and four good 30 s darks copied into ``raw``, with dark 1 taken 6 °C warm."""
    folder = real_set(YLO)
    biases = copied(raw, sorted(folder.glob("bias_series_0c.*")))
    darks = copied(raw, sorted(folder.glob("dark_10series_0c_0m30s.*"))[1:])
    unsettled_dark(raw)
    return biases, darks


def test_a_dark_6_degrees_warm_is_set_aside(catalog: Catalog, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    biases, darks = ylo_darks(raw)
    warm = "dark_10series_0c_0m30s.00000001.DARK.FIT"
    ingest(catalog, [raw])
    with catalog.reading() as session:
        group = {
            Path(f.path).name: (f.temp_key, f.exptime, round(f.ccd_temp, 4))
            for f in session.scalars(select(Frame).where(Frame.imagetyp == "dark"))
        }
    # one group: its key is SET-TEMP (0), not the CCD temperature
    assert group == {
        warm: (0.0, 30.0, 6.189),
        **{p.name: (0.0, 30.0, -0.2318 if p.name[-10] in "23" else 0.189) for p in darks},
    }
    options = {"kinds": ("bias", "dark")}
    summary = build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", **options))
    assert summary.exit_code == 0
    master, rows = check_set_aside(catalog, summary, "dark", {warm: "temperature"}, [p.name for p in darks])
    assert rows[warm].reason == TEMPERATURE_REASON
    assert rows[warm].numbers == {
        "temperature": {"ccd_temp": 6.1890187278651, "set_point": 0.1890187278651, "tolerance": 2.0}
    }
    assert fits.getheader(master.path)["TEMPKEY"] == 0
    assert master.ccd_temp_mean == pytest.approx((2 * -0.231815405223 + 2 * 0.1890187278651) / 4, abs=1e-12)
    same_pixels(master, clean_master(tmp_path, [*biases, *darks], "dark", **options))


# -- 5. a person overrides the rules, or makes the setting aside permanent -----------------------------------


def test_mark_good_brings_a_set_aside_bias_back_and_its_lights_are_recalibrated(
    catalog: Catalog, db_url: str, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    copied(raw, [lowell(n) for n in (1, 2, 3, 4, 110, 111, 112, 113, 114, 115, 126, 127, 128, 129, 130)])
    leaked_bias(raw)
    ingest(catalog, [raw])
    options = ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "out", jobs=1)
    first = process(catalog, options)
    assert (first.exit_code, len(first.of("calibrated"))) == (0, 5)
    assert qa_rows(catalog) == [(LEAKED, "light_leak", "set_aside", "rule")]
    leaked = frame_id(catalog, LEAKED)
    before = impact(catalog, f"frame:{leaked}")
    assert (before.masters, before.calibrations) == ([], [])  # nothing was made from it

    marked = mark_good(catalog, f"frame:{leaked}", "the leak is below the noise of the lights")
    assert (marked.was_bad, marked.is_bad, marked.overrode, marked.changed) == (
        False,
        False,
        "light_leak",
        True,
    )
    assert marked.headline() == (
        f"frame:{leaked} {raw.resolve() / LEAKED}: kept again (a person overrode the frame QA's "
        "light_leak rule); `ccdcal process` may use it again"
    )
    assert qa_rows(catalog)[1:] == [(LEAKED, "light_leak", "kept", "person")]
    person = newest_qa(catalog)
    assert (person.reason, person.numbers, person.run_id) == (
        "the leak is below the noise of the lights",
        {},
        marked.run_id,
    )

    second = process(catalog, options)
    assert (second.exit_code, len(second.of("calibrated"))) == (0, 5)
    assert len(qa_rows(catalog)) == 2  # the person's decision stands: no new row
    old, new = masters_of(catalog, "bias")
    assert (old.version, old.status, old.n_inputs) == (1, "superseded", 4)
    assert (new.version, new.status, new.n_inputs) == (2, "current", 5)
    assert LEAKED in inputs_of(catalog, new)
    assert set_aside_of(catalog, new) == []
    assert fits.getheader(new.path)["NSETASID"] == 0
    flats = masters_of(catalog, "flat")
    assert [(m.version, m.status) for m in flats] == [(1, "superseded"), (2, "current")]

    after = impact(catalog, f"frame:{leaked}")
    assert [(m.kind, m.id, m.status) for m in after.masters] == [
        ("bias", new.id, "current"),
        ("flat", flats[1].id, "current"),
    ]
    with catalog.reading() as session:
        recalibrated = {
            c.id
            for c in session.scalars(select(Calibration).where(Calibration.status == "current"))
            if new.id
            in session.scalars(
                select(CalibrationMaster.master_id).where(CalibrationMaster.calibration_id == c.id)
            ).all()
        }
    assert len(recalibrated) == 5
    assert {c.id for c in after.calibrations} == recalibrated
    assert {c.status for c in after.calibrations} == {"current"}
    assert sorted(Path(c.light_path).name for c in after.calibrations) == [
        f"20190326.{n:04d}.fits" for n in range(126, 131)
    ]
    shown = json.loads(
        CliRunner().invoke(app, ["--db", db_url, "impact", f"frame:{leaked}", "--json"]).stdout
    )
    assert [m["id"] for m in shown["masters"]] == [new.id, flats[1].id]
    assert {c["id"] for c in shown["calibrations"]} == recalibrated


def test_mark_bad_makes_setting_a_frame_aside_permanent(catalog: Catalog, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    ylo_darks(raw)
    warm = "dark_10series_0c_0m30s.00000001.DARK.FIT"
    ingest(catalog, [raw])
    masters = tmp_path / "masters"
    first = build_masters(catalog, MasterOptions(masters_dir=masters, kinds=("bias", "dark")))
    assert [r.outcome for r in first.reports] == ["built", "built"]
    result = mark_bad(catalog, str(raw / warm), "the cooler had not settled")
    assert (result.was_bad, result.is_bad, result.overrode) == (False, True, None)
    with catalog.reading() as session:
        frame = frame_named(session, warm)
        assert (frame.is_bad, frame.bad_reason) == (True, "the cooler had not settled")
    (dark,) = masters_of(catalog, "dark")
    for qa in (QaOptions(), QaOptions(temp_tolerance=10.0)):  # no threshold brings it back
        again = build_masters(catalog, MasterOptions(masters_dir=masters, kinds=("bias", "dark"), qa=qa))
        assert [(r.outcome, r.master_id) for r in again.reports if r.kind == "dark"] == [("current", dark.id)]
        assert qa_rows(catalog) == [(warm, "temperature", "set_aside", "rule")]
    assert [m.id for m in masters_of(catalog, "dark")] == [dark.id]
    assert warm not in inputs_of(catalog, dark)


# -- 6. no false alarm --------------------------------------------------------------------------------------


def _tircam2(tmp_path: Path, catalog: Catalog) -> None:
    folder = real_set("ndoubledot-tircam2")
    for sub, pattern, kind in (("a", "bias_*", "bias"), ("b", "flats*", "flat"), ("c", "IC310_*", "light")):
        copied(tmp_path / "night" / sub, sorted(folder.glob(pattern)))
        ingest(catalog, [tmp_path / "night" / sub], imagetyp=kind)


def _soar(tmp_path: Path, catalog: Catalog) -> None:
    folder = real_set("soar-sami-mef")
    ingest(catalog, [folder / "bias.fits"])
    flat = copied(tmp_path / "flat", [folder / "flat.fits"])
    ingest(catalog, flat, imagetyp="flat")  # OBSTYPE SFLAT: not read as a flat


CLEAN_SETS = {
    # name: (ingest, frames measured by default, frames measured with --min-frames 1)
    "lowell": (lambda tmp, cat: ingest(cat, [real_set(LOWELL)]), 13, 14),
    "ylo0803": (lambda tmp, cat: ingest(cat, [real_set(YLO)]), 10, 23),
    "tircam2": (_tircam2, 8, 8),
    "msumastro": (lambda tmp, cat: ingest(cat, [real_set("msumastro")]), 5, 6),
    "soar-sami-mef": (_soar, 0, 2),
    "lco-sinistro-mef": (lambda tmp, cat: ingest(cat, [real_set("lco-sinistro-mef")]), 0, 0),
    "astropy-ccdproc": (lambda tmp, cat: ingest(cat, [real_set("astropy-ccdproc")]), 0, 0),
}


@pytest.mark.parametrize("name", list(CLEAN_SETS))
def test_no_frame_of_a_clean_real_set_is_set_aside(catalog: Catalog, tmp_path: Path, name: str) -> None:
    """Built with the default options, then with --min-frames 1 (every frame judged, the single flats by
    the flat rules): every frame measured is combined."""
    ingested, measured, every = CLEAN_SETS[name]
    ingested(tmp_path, catalog)
    for min_frames, expected in ((3, measured), (1, every)):
        build_masters(catalog, MasterOptions(masters_dir=tmp_path / "masters", min_frames=min_frames))
        assert qa_rows(catalog) == []
        assert count(catalog, MasterSetAside) == 0
        assert count(catalog, FrameStat) == expected
        with catalog.reading() as session:
            combined = session.scalar(
                select(func.count(func.distinct(MasterInput.frame_id)))
                .join(Master, Master.id == MasterInput.master_id)
                .where(Master.status == "current", Master.kind != "bpm")
            )
        assert combined == expected


def test_no_frame_of_the_simulated_night_is_held_back(catalog: Catalog, tmp_path: Path) -> None:
    """The demo's night (``ccdcal simulate raw --seed 1``), processed with the default options."""
    night = simulate_night(tmp_path / "raw", seed=1)
    calibration = sum(len(night.files[kind]) for kind in ("bias", "dark", "flat"))
    assert calibration == 37
    ingest(catalog, [night.root])
    summary = process(
        catalog, ProcessOptions(masters_dir=tmp_path / "masters", output_dir=tmp_path / "out", jobs=1)
    )
    assert summary.exit_code == 0
    assert qa_rows(catalog) == []
    assert count(catalog, FrameStat) == calibration
    with catalog.reading() as session:
        combined = session.scalar(select(func.count(func.distinct(MasterInput.frame_id))))
    held_back = 1 - combined / calibration
    assert held_back == 0.0


# -- 7. too few frames left ---------------------------------------------------------------------------------


def test_a_group_left_too_small_is_skipped_with_the_reasons(catalog: Catalog, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    copied(raw, [lowell(n) for n in range(1, 4)])
    sky_as_bias(raw)
    ingest(catalog, [raw])
    summary = build_masters(
        catalog, MasterOptions(masters_dir=tmp_path / "masters", kinds=("bias",), min_frames=4)
    )
    (report,) = summary.reports
    assert (report.outcome, report.n_inputs, report.master_id, summary.exit_code) == ("skipped", 4, None, 1)
    row = newest_qa(catalog)
    assert qa_rows(catalog) == [(SKY, "outlier_level", "set_aside", "rule")]
    assert report.reason == (
        "3 of the 4 bias frames of group b3x3 gNA C-100 are left after the frame QA, fewer than "
        f"--min-frames 4: frame {SKY} set aside: {row.reason}; add good frames, or `ccdcal mark-good` a "
        "frame the rules set aside wrongly"
    )
    assert row.reason is not None
    assert row.reason.startswith("level 7080 ADU, group 1 ± 0.")
    assert masters_of(catalog, "bias") == []
    assert list((tmp_path / "masters").glob("*.fits")) == []


# -- 8. --no-frame-qa ---------------------------------------------------------------------------------------


def test_no_frame_qa_combines_the_bad_frame(catalog: Catalog, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    clean = copied(raw, [lowell(n) for n in range(1, 5)])
    sky_as_bias(raw)
    ingest(catalog, [raw])
    options = MasterOptions(masters_dir=tmp_path / "masters", kinds=("bias",), qa=QaOptions(enabled=False))
    summary = build_masters(catalog, options)
    assert summary.exit_code == 0
    (master,) = masters_of(catalog, "bias")
    assert master.n_inputs == 5
    assert inputs_of(catalog, master) == sorted([*(p.name for p in clean), SKY])
    assert fits.getheader(master.path)["NSETASID"] == 0
    assert (count(catalog, FrameQa), count(catalog, FrameStat), count(catalog, MasterSetAside)) == (0, 0, 0)
    assert (summary.reports[0].reason, summary.reports[0].warnings) == (None, [])
    with catalog.reading() as session:
        run = session.get(Run, summary.run_id)
        assert run is not None
        assert run.arguments["frame_qa"] == QaOptions(enabled=False).as_dict()
        assert run.arguments["frame_qa"]["enabled"] is False
    assert master.parameters["frame_qa"] == {**QaOptions(enabled=False).as_dict(), "set_aside": []}


# -- 9. a threshold changed ---------------------------------------------------------------------------------


def test_a_larger_outlier_sigma_keeps_a_frame_set_aside_before(catalog: Catalog, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    clean = copied(raw, [lowell(n) for n in range(1, 5)])
    leaked_bias(raw)
    ingest(catalog, [raw])
    masters = tmp_path / "masters"
    build_masters(catalog, MasterOptions(masters_dir=masters, kinds=("bias",)))
    (first,) = masters_of(catalog, "bias")
    assert first.n_inputs == 4
    # 550σ, 856σ and 1139σ off: all within 2000σ
    loose = QaOptions(outlier_sigma=2000.0)
    summary = build_masters(catalog, MasterOptions(masters_dir=masters, kinds=("bias",), qa=loose))
    assert qa_rows(catalog) == [
        (LEAKED, "light_leak", "set_aside", "rule"),
        (LEAKED, "light_leak", "kept", "rule"),
    ]
    kept = newest_qa(catalog)
    assert (kept.reason, kept.numbers, kept.run_id) == (
        "the rules keep it now (a threshold changed)",
        {},
        summary.run_id,
    )
    old, new = masters_of(catalog, "bias")
    assert (old.id, old.status) == (first.id, "superseded")
    assert (new.version, new.status, new.n_inputs) == (2, "current", 5)
    assert inputs_of(catalog, new) == sorted([*(p.name for p in clean), LEAKED])
    assert new.parameters["frame_qa"] == {**loose.as_dict(), "set_aside": []}
    report = summary.reports[0]
    assert (report.outcome, report.version, report.n_inputs, report.warnings) == ("built", 2, 5, [])
    with catalog.reading() as session:
        run = session.get(Run, summary.run_id)
        assert run is not None
        assert run.arguments["frame_qa"]["outlier_sigma"] == 2000.0

    # the default thresholds again: set aside again, the first master made current again
    back = build_masters(catalog, MasterOptions(masters_dir=masters, kinds=("bias",)))
    assert qa_rows(catalog)[2:] == [(LEAKED, "light_leak", "set_aside", "rule")]
    (report,) = back.reports
    assert (report.outcome, report.master_id, report.n_inputs) == ("restored", first.id, 4)
    assert report.reason == f"{Path(first.path).name} (version 1) made current again, its file intact"
    assert [(m.id, m.status) for m in masters_of(catalog, "bias")] == [
        (first.id, "current"),
        (new.id, "superseded"),
    ]
