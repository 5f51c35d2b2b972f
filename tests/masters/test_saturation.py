"""Saturated samples never enter a master: a master flat from frames with saturated stars is the combine of
the unsaturated samples; --saturation enters a master's identity, a level read from the inputs does not."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import sigma_clip
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Master
from ccdcal.files.cardtext import history_lines
from ccdcal.ingestion.core import ingest
from ccdcal.kernels.options import StepOptions
from ccdcal.kernels.overscan import OverscanPlan, Section, apply_overscan, parse_mode
from ccdcal.masters.build import build_masters
from ccdcal.masters.groups import MasterOptions
from ccdcal.masters.plan import plan_masters
from tests.conftest import fitsverify_counts

SHAPE = (30, 46)  # data in columns 1-40, an overscan strip in 41-46
PLAN = OverscanPlan("median", Section(41, 46, 1, 30), Section(1, 40, 1, 30), 1)
#: (frame, row, column) of each saturated star's corner: a 3 x 3 block at 65535.
STARS = [(0, 4, 5), (1, 12, 20), (2, 4, 6), (3, 22, 30), (4, 9, 9), (1, 9, 9), (2, 9, 9)]


def write_frame(path: Path, data: np.ndarray, imagetyp: str, overscan: bool) -> None:
    header = fits.Header()
    header["IMAGETYP"] = imagetyp
    header["EXPTIME"] = 0.0 if imagetyp == "BIAS" else 3.0
    header["DATE-OBS"] = "2026-03-14T20:00:00"
    if imagetyp == "FLAT":
        header["FILTER"] = "R"
    if overscan:
        header["BIASSEC"] = "[41:46,1:30]"
        header["TRIMSEC"] = "[1:40,1:30]"
    fits.PrimaryHDU(data.astype(np.uint16), header).writeto(path)  # BITPIX 16, BZERO 32768


@pytest.fixture
def frames(tmp_path: Path) -> dict[str, list[np.ndarray]]:
    """Five biases and five flats (vignetted, with saturated stars) in tmp/raw, as uint16."""
    rng = np.random.default_rng(18)
    line = 1000 + 0.5 * np.arange(SHAPE[0])[:, None]  # a bias level varying by line: the overscan's
    biases = [np.rint(line + rng.normal(0, 4, SHAPE)) for _ in range(5)]
    vignetting = np.clip(1.2 - np.linspace(0, 1, SHAPE[1]) ** 3, 0.1, None)
    flats = []
    for i in range(5):
        flat = np.rint(line + (24000 + 1500 * i) * vignetting * rng.normal(1, 0.01, SHAPE))
        flat[:, 40:] = line + rng.normal(0, 4, (SHAPE[0], 6))  # the overscan strip
        flats.append(flat)
    for frame, row, column in STARS:
        flats[frame][row : row + 3, column : column + 3] = 65535
    flats[0][1, 42] = 65535  # in the overscan strip: no input sample
    folder = tmp_path / "raw"
    folder.mkdir()
    stored = {"bias": biases, "flat": flats}  # as the files hold them
    return {
        kind: [np.rint(f).astype(np.uint16).astype(np.float64) for f in found]
        for kind, found in stored.items()
    }


def reference(frames: dict[str, list[np.ndarray]], overscan: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """The master bias and flat by the definition: each flat minus the master bias, divided by the median of
    its unsaturated pixels, the saturated samples masked, combined and divided by its median."""

    def prepared(raw: np.ndarray) -> np.ndarray:
        return apply_overscan(raw, PLAN)[0] if overscan else raw

    def cut(raw: np.ndarray) -> np.ndarray:
        return raw[PLAN.trim.slices] if overscan and PLAN.trim is not None else raw

    def combined(stack: np.ndarray | np.ma.MaskedArray) -> np.ndarray:
        clipped = sigma_clip(stack, sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0)
        return np.ma.median(clipped, axis=0).filled(np.nan)

    bias = combined(np.stack([prepared(b) for b in frames["bias"]])).astype(np.float32)
    samples, masks = [], []
    for raw in frames["flat"]:
        saturated = cut(raw) >= 65535
        value = prepared(raw) - bias.astype(np.float64)
        samples.append(value / np.median(value[~saturated]))
        masks.append(saturated)
    flat = combined(np.ma.masked_array(np.stack(samples), mask=np.stack(masks)))
    flat = (flat / np.nanmedian(flat)).astype(np.float32)
    return bias, flat, int(np.sum(masks))


@pytest.mark.parametrize("overscan", [False, True], ids=["raw", "overscan"])
def test_a_master_flat_from_frames_with_saturated_stars_is_the_combine_of_the_unsaturated_samples(
    catalog: Catalog, tmp_path: Path, frames: dict[str, list[np.ndarray]], overscan: bool
) -> None:
    for kind in ("bias", "flat"):
        for i, data in enumerate(frames[kind]):
            write_frame(tmp_path / "raw" / f"{kind}_{i}.fits", data, kind.upper(), overscan)
    ingest(catalog, [tmp_path / "raw"])
    mode = "auto" if overscan else "off"
    options = MasterOptions(masters_dir=tmp_path / "masters", optional=StepOptions(overscan=parse_mode(mode)))
    summary = build_masters(catalog, options)
    assert [r.outcome for r in summary.reports] == ["built", "built"], summary.reports
    bias, flat, saturated = reference(frames, overscan)
    # four stars alone, one block saturated in three frames, a pixel of the overscan strip (an input
    # sample unless the strip is trimmed off)
    assert saturated == 4 * 9 + 3 * 9 + (0 if overscan else 1)
    with catalog.session() as session:
        found = {m.kind: m for m in session.scalars(select(Master))}
    for kind, expected in (("bias", bias), ("flat", flat)):
        master = found[kind]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            data = CCDData.read(master.path, unit="adu" if kind == "bias" else "")
        np.testing.assert_allclose(data.data, expected, rtol=1e-5, atol=1e-5 * float(np.median(expected)))
        assert fitsverify_counts(Path(master.path)) == (0, 0)
    # the block saturated in three frames of five: the median of the two unsaturated samples, near 1
    assert 0.5 < float(fits.getdata(found["flat"].path)[10, 10]) < 1.5
    record = found["flat"].parameters["steps"]["saturation"]
    assert record == {
        "option": None,
        "levels": [{"level": 65535.0, "source": "data type", "detail": "BITPIX 16, BZERO 32768", "count": 5}],
        "samples": saturated,
    }
    assert found["bias"].parameters["steps"]["saturation"]["samples"] == 0
    header = fits.getheader(found["flat"].path)
    assert header["NSATUR"] == saturated
    assert (
        f"saturated input samples left out of the combine: {saturated} (levels: 65535 ADU (data type: "
        "BITPIX 16, BZERO 32768) x5)"
    ) in history_lines(str(h) for h in header["HISTORY"])
    with catalog.scratch(Master) as session:  # the dry run's plan finds them up to date
        planned = plan_masters(session, options)
    assert [r.outcome for r in planned] == ["current", "current"]


def test_saturation_given_enters_the_identity_a_level_read_from_the_inputs_does_not(
    catalog: Catalog, tmp_path: Path, frames: dict[str, list[np.ndarray]]
) -> None:
    for kind in ("bias", "flat"):
        for i, data in enumerate(frames[kind]):
            write_frame(tmp_path / "raw" / f"{kind}_{i}.fits", data, kind.upper(), False)
    ingest(catalog, [tmp_path / "raw"])

    def build(saturation: float | None) -> list[str]:
        steps = StepOptions(overscan=parse_mode("off"), saturation=saturation)
        options = MasterOptions(masters_dir=tmp_path / "masters", optional=steps)
        return [r.outcome for r in build_masters(catalog, options).reports]

    assert build(None) == ["built", "built"]
    assert build(None) == ["current", "current"]
    assert build(65535.0) == ["built", "built"]  # the same pixels, but a level from outside the frames
    assert build(35000.0) == ["built", "built"]
    assert build(None) == ["restored", "restored"]
    with catalog.session() as session:
        flats = list(session.scalars(select(Master).where(Master.kind == "flat").order_by(Master.id)))
    assert [m.parameters["steps"]["saturation"]["option"] for m in flats] == [None, 65535.0, 35000.0]
    assert [m.status for m in flats] == ["current", "superseded", "superseded"]
    same = [fits.getdata(m.path) for m in flats]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.allclose(same[0], same[2], equal_nan=True)  # 35000 ADU: the flats' bright parts left out
    assert flats[2].parameters["steps"]["saturation"]["levels"][0]["source"] == "--saturation"
