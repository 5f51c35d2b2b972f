"""The simulated raw night: layout, N.I.N.A. headers, determinism and the numbers of its physics."""

from __future__ import annotations

import itertools
import math
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std

from ccdcal.errors import UsageError
from ccdcal.simulate import (
    SimulatedNight,
    dark_rate_map,
    dust_donut,
    flat_pattern,
    gaussian_stars,
    half_diagonal,
    simulate_night,
    to_uint16,
    vignetting,
)

KINDS = ("bias", "dark", "flat", "light")
FOLDERS = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "light": "LIGHT"}
DATE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


@pytest.fixture(scope="module")
def night_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedNight, float, list]:
    """The default night (seed 0), its wall time and the progress calls."""
    calls: list[tuple[int, int]] = []
    root = tmp_path_factory.mktemp("sim") / "raw"
    start = time.perf_counter()
    night = simulate_night(root, seed=0, progress=lambda done, total: calls.append((done, total)))
    return night, time.perf_counter() - start, calls


@pytest.fixture(scope="module")
def night(night_run: tuple[SimulatedNight, float, list]) -> SimulatedNight:
    return night_run[0]


def pixels(paths: list[Path]) -> np.ndarray:
    """The stack of the frames' pixel values, as float64."""
    return np.array([fits.getdata(p).astype(np.float64) for p in paths])


def of(night: SimulatedNight, kind: str, token: str) -> list[Path]:
    """The files of ``kind`` whose name contains ``token`` (``'_60s_'``, ``'_R_'``)."""
    return [p for p in night.files[kind] if token in p.name]


def frame_truth(night: SimulatedNight, path: Path) -> dict[str, Any]:
    return night.truth["frames"][path.relative_to(night.root).as_posix()]


def model_flat(truth: dict[str, Any]) -> np.ndarray:
    """The noiseless flat pattern (without PRNU) from the truth's parameters."""
    return flat_pattern(tuple(truth["shape"]), truth["vignetting"], truth["dust"])


# --- Layout ---------------------------------------------------------------------------------------


def test_layout_names_and_sizes(night_run: tuple[SimulatedNight, float, list]) -> None:
    night, seconds, _ = night_run
    root = night.root
    assert root.is_absolute()
    assert sorted(p.name for p in root.iterdir()) == ["BIAS", "DARK", "FLAT", "LIGHT"]
    expected = {
        "bias": [f"Bias_{i:03d}.fits" for i in range(1, 8)],
        "dark": sorted(f"Dark_{t}s_{i:03d}.fits" for t in (2, 5, 60, 300) for i in range(1, 6)),
        "flat": sorted(f"Flat_{f}_{i:03d}.fits" for f in ("R", "Ha") for i in range(1, 6)),
        "light": ["Light_001.fits", "Light_002.fits", "Light_003.fits"],
    }
    for kind in KINDS:
        on_disk = sorted(p.name for p in (root / FOLDERS[kind]).iterdir())
        assert on_disk == expected[kind], kind  # no temporary files left behind
        assert [p.name for p in night.files[kind]] == expected[kind]
        assert night.files[kind] == sorted(night.files[kind])
        assert all(p.parent == root / FOLDERS[kind] for p in night.files[kind])
    all_files = [p for kind in KINDS for p in night.files[kind]]
    assert len(all_files) == 40
    assert set(night.truth["frames"]) == {p.relative_to(root).as_posix() for p in all_files}
    # 320 x 240 x 2 bytes of data plus a header, in 2880-byte FITS blocks.
    assert all(p.stat().st_size % 2880 == 0 for p in all_files)
    assert all(153_600 < p.stat().st_size < 170_000 for p in all_files)
    assert sum(p.stat().st_size for p in all_files) < 10_000_000
    assert seconds < 2.0


def test_progress_reports_every_file(night_run: tuple[SimulatedNight, float, list]) -> None:
    _, _, calls = night_run
    assert calls == [(i, 40) for i in range(1, 41)]


# --- Headers --------------------------------------------------------------------------------------


def test_headers_are_nina_like(night: SimulatedNight) -> None:
    for kind in KINDS:
        for path in night.files[kind]:
            h = fits.getheader(path)
            truth = frame_truth(night, path)
            assert list(h)[:8] == [
                "SIMPLE",
                "BITPIX",
                "NAXIS",
                "NAXIS1",
                "NAXIS2",
                "BZERO",
                "EXTEND",
                "IMAGETYP",
            ]
            assert (h["BITPIX"], h["BZERO"], h["NAXIS1"], h["NAXIS2"]) == (16, 32768, 320, 240)
            assert "BSCALE" not in h
            assert h["IMAGETYP"] == kind.upper()
            assert h["EXPTIME"] == h["EXPOSURE"] == truth["exptime"]
            assert h.comments["EXPTIME"] == "[s] Exposure duration"
            assert (h["XBINNING"], h["YBINNING"]) == (2, 2)
            assert (h["GAIN"], h["OFFSET"]) == (120, 30)
            assert isinstance(h["GAIN"], int)
            assert h["EGAIN"] == pytest.approx(night.truth["egain"])
            assert h["XPIXSZ"] == h["YPIXSZ"] == pytest.approx(4.63)
            assert h["INSTRUME"] == "ZWO ASI294MM Pro"
            assert h["SET-TEMP"] == -10.0
            assert abs(h["CCD-TEMP"] - h["SET-TEMP"]) <= 0.3 + 1e-9
            assert h["CCD-TEMP"] == truth["ccd_temp"]
            assert h["READOUTM"] == "Normal"
            assert h["USBLIMIT"] == 40
            assert h["TELESCOP"]
            assert h["FOCALLEN"] == pytest.approx(550.0)
            assert h["ROWORDER"] == "TOP-DOWN"
            assert h["EQUINOX"] == 2000.0
            assert h["SWCREATE"] == "N.I.N.A. 3.1.2.9001"
            assert h.comments["SWCREATE"] == "Software that created this file"
            assert DATE_RE.match(h["DATE-OBS"])
            assert DATE_RE.match(h["DATE-LOC"])
            assert h["DATE-OBS"] == truth["date_obs"]
            utc = datetime.fromisoformat(h["DATE-OBS"])
            local = datetime.fromisoformat(h["DATE-LOC"])
            assert local - utc == timedelta(hours=1)
            if kind in ("flat", "light"):
                assert h["FILTER"] == truth["filter"]
                assert h["FILTER"] in ("R", "Ha")
            else:
                assert "FILTER" not in h
            if kind == "light":
                assert h["OBJECT"] == "M 51"
                assert h["OBJCTRA"] == "13 29 53"
                assert h["OBJCTDEC"] == "+47 11 43"
                assert h["RA"] == pytest.approx(202.4696, abs=0.01)
                assert h["DEC"] == pytest.approx(47.1953, abs=0.01)
            else:
                assert not {"OBJECT", "RA", "DEC", "OBJCTRA", "OBJCTDEC"} & set(h)


def test_pixels_are_stored_as_uint16_with_bzero(night: SimulatedNight) -> None:
    path = night.files["light"][0]
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        stored = hdul[0].data.copy()
    assert stored.dtype == np.dtype(">i2")
    with fits.open(path) as hdul:
        data = hdul[0].data
        assert data.dtype == np.uint16
        np.testing.assert_array_equal(data.astype(np.int32), stored.astype(np.int32) + 32768)


def test_exposures_filters_and_light_numbering(night: SimulatedNight) -> None:
    for path in night.files["dark"]:
        exptime = fits.getheader(path)["EXPTIME"]
        assert path.name.startswith(f"Dark_{exptime:g}s_")
    assert sorted({fits.getheader(p)["EXPTIME"] for p in night.files["dark"]}) == [
        2.0,
        5.0,
        60.0,
        300.0,
    ]
    flats = {(fits.getheader(p)["FILTER"], fits.getheader(p)["EXPTIME"]) for p in night.files["flat"]}
    assert flats == {("R", 2.0), ("Ha", 5.0)}
    assert all(f"_{fits.getheader(p)['FILTER']}_" in p.name for p in night.files["flat"])
    lights = [(fits.getheader(p)["FILTER"], fits.getheader(p)["EXPTIME"]) for p in night.files["light"]]
    assert lights == [("R", 60.0), ("R", 60.0), ("Ha", 300.0)]
    # Every light has darks at its exposure and flats in its filter.
    assert {t for _, t in lights} <= set(night.truth["dark_exptimes"])
    assert {f for f, _ in lights} == {f for f, _ in flats}
    for path in night.files["bias"]:
        assert fits.getheader(path)["EXPTIME"] == 0.0


def test_times_through_the_night(night: SimulatedNight) -> None:
    def utc(path: Path) -> datetime:
        return datetime.fromisoformat(fits.getheader(path)["DATE-OBS"])

    calibration = [p for kind in ("bias", "dark", "flat") for p in night.files[kind]]
    lights = [utc(p) for p in night.files["light"]]
    assert all(utc(p).date().isoformat() == "2026-03-14" for p in calibration)
    assert all(17 <= utc(p).hour < 19 for p in calibration)  # at dusk
    assert max(utc(p) for p in calibration) < min(lights)
    assert lights == sorted(lights)
    assert lights[0] >= datetime(2026, 3, 14, 19, 0)
    assert lights[-1] <= datetime(2026, 3, 15, 4, 0)
    assert all(b - a > timedelta(hours=1) for a, b in itertools.pairwise(lights))
    # Frames of one kind never overlap: each starts after the previous one's exposure ended.
    ordered = sorted(calibration, key=utc)
    for a, b in itertools.pairwise(ordered):
        assert utc(b) - utc(a) >= timedelta(seconds=fits.getheader(a)["EXPTIME"])


# --- Physics --------------------------------------------------------------------------------------


def test_bias_level_read_noise_and_column_pattern(night: SimulatedNight) -> None:
    truth = night.truth
    biases = pixels(night.files["bias"])
    for frame in biases:
        assert abs(np.median(frame) - truth["bias_level"]) <= 1.0
    # Read noise from the difference of two frames (the fixed pattern cancels).
    for a, b in itertools.pairwise(biases):
        assert np.std(a - b) / math.sqrt(2) == pytest.approx(truth["read_noise"], rel=0.03)
    # A single frame's scatter is read noise and column pattern together.
    expected = math.hypot(truth["read_noise"], truth["column_sigma"])
    assert np.std(biases[0]) == pytest.approx(expected, rel=0.05)
    columns = np.median(biases.mean(axis=0), axis=0) - truth["bias_level"]
    assert np.corrcoef(columns, truth["column_pattern"])[0, 1] > 0.95
    assert np.std(columns) == pytest.approx(truth["column_sigma"], rel=0.1)


def test_dark_signal_is_proportional_to_exposure(night: SimulatedNight) -> None:
    truth = night.truth
    bias = pixels(night.files["bias"]).mean(axis=0)
    levels = {}
    for exptime in (60, 300):
        darks = pixels(of(night, "dark", f"_{exptime}s_"))
        # Stack means are not quantised to whole ADU, so their median resolves 0.01 ADU.
        levels[exptime] = float(np.median(darks.mean(axis=0) - bias))
        expected = truth["dark_current"] * exptime / truth["egain"]
        assert levels[exptime] == pytest.approx(expected, rel=0.05)
        # Single frames: median of the dark minus median of a bias, to the ADU.
        single = np.median(darks[0]) - np.median(pixels(night.files["bias"][:1]))
        assert single == pytest.approx(expected, abs=1.5)
    assert levels[300] / levels[60] == pytest.approx(300 / 60, rel=0.03)
    # The short darks of the flats are bias plus a fraction of an ADU.
    short = float(np.median(pixels(of(night, "dark", "_2s_")).mean(axis=0) - bias))
    assert abs(short) < 0.5


def test_hot_pixels_scale_with_exposure(night: SimulatedNight) -> None:
    truth = night.truth
    hot = truth["hot_pixels"]
    assert len(hot) == 24
    assert len({(y, x) for y, x, _ in hot}) == 24
    bias = pixels(night.files["bias"]).mean(axis=0)
    dark300 = pixels(of(night, "dark", "_300s_")).mean(axis=0) - bias
    dark60 = pixels(of(night, "dark", "_60s_")).mean(axis=0) - bias
    for y, x, rate in hot:
        expected = rate * 300 / truth["egain"]
        # Poisson noise of a 5-frame mean, in ADU.
        sigma = math.sqrt(rate * 300 / 5) / truth["egain"]
        assert abs(dark300[y, x] - expected) < 5 * sigma + 5
        assert dark300[y, x] / dark60[y, x] == pytest.approx(5.0, rel=0.35)
    # The hot pixels are exactly the brightest pixels of the long dark.
    brightest = np.argsort(dark300, axis=None)[-24:]
    assert {divmod(int(i), 320) for i in brightest} == {(y, x) for y, x, _ in hot}
    rates = dark_rate_map((240, 320), truth["dark_current"], hot)
    assert [rates[y, x] for y, x, _ in hot] == [r for _, _, r in hot]
    assert np.count_nonzero(rates != truth["dark_current"]) == 24


def test_flats_vignetting_dust_and_levels(night: SimulatedNight) -> None:
    truth = night.truth
    model = model_flat(truth)
    cy, cx = (round(c) for c in truth["vignetting"]["center"])
    centre = (slice(cy - 10, cy + 10), slice(cx - 10, cx + 10))
    corners = [
        (slice(0, 12), slice(0, 12)),
        (slice(0, 12), slice(-12, None)),
        (slice(-12, None), slice(0, 12)),
        (slice(-12, None), slice(-12, None)),
    ]
    for filt, exptime in truth["flat_exptimes"].items():
        dark = pixels(of(night, "dark", f"_{exptime:g}s_")).mean(axis=0)
        flats = pixels(of(night, "flat", f"_{filt}_"))
        for path, frame in zip(of(night, "flat", f"_{filt}_"), flats, strict=True):
            level = frame_truth(night, path)["flat_level"]
            assert 20_000 <= level <= 30_000
            measured = np.mean((frame - dark)[centre])
            assert measured == pytest.approx(level * np.mean(model[centre]), rel=0.005)
            assert measured == pytest.approx(level, rel=0.01)  # no dust at the optical centre
        norm = np.mean([(f - dark) / np.median(f - dark) for f in flats], axis=0)
        for corner in corners:
            measured = np.mean(norm[corner]) / np.mean(norm[centre])
            expected = np.mean(model[corner]) / np.mean(model[centre])
            assert measured == pytest.approx(expected, rel=0.01)
            assert 0.6 < measured < 0.9  # visibly vignetted
        # Whole image: what is left after dividing by the model is PRNU and shot noise.
        residual = norm / np.median(norm) / (model / np.median(model)) - 1
        assert np.std(residual) < 0.015
        # The dust donut: the ring is darker than the model without dust predicts.
        dy, dx = truth["dust"]["center"]
        ring_y = round(dy + truth["dust"]["radius"])
        no_dust = vignetting((240, 320), **truth["vignetting"])
        ratio = norm[ring_y, round(dx)] / no_dust[ring_y, round(dx)]
        ref = norm[centre].mean() / no_dust[centre].mean()
        assert ratio / ref == pytest.approx(1 - truth["dust"]["depth"], abs=0.03)


def test_lights_have_stars_above_sky(night: SimulatedNight) -> None:
    truth = night.truth
    model = model_flat(truth)
    sigma_psf = truth["star_sigma"]
    stars = np.array(truth["stars"])
    assert len(stars) == 40
    separations = np.hypot(*(stars[:, None, :2] - stars[None, :, :2]).transpose(2, 0, 1))
    assert separations[~np.eye(40, dtype=bool)].min() >= 12.0  # no blends
    assert truth["star_fwhm"] == pytest.approx(2 * math.sqrt(2 * math.log(2)) * sigma_psf)
    for path in night.files["light"]:
        info = frame_truth(night, path)
        data = fits.getdata(path).astype(np.float64)
        exptime, filt = info["exptime"], info["filter"]
        dark = truth["dark_current"] * exptime / truth["egain"]
        sky = np.median(data)
        expected_sky = truth["bias_level"] + dark + truth["sky_adu"][filt] * np.median(model)
        assert sky == pytest.approx(expected_sky, rel=0.03)
        noise = mad_std(data)
        dy, dx = info["dither"]
        detected = 0
        for y, x, rate in truth["stars"]:
            flux_adu = rate * truth["star_throughput"][filt] * exptime / truth["egain"]
            peak = flux_adu / (2 * math.pi * sigma_psf**2)
            if peak < 20 * noise:
                continue
            iy, ix = round(y + dy), round(x + dx)
            assert data[iy - 1 : iy + 2, ix - 1 : ix + 2].max() > sky + 5 * noise, (path.name, y, x)
            detected += 1
        assert detected >= 10
        # The brightest star sits at its truth position plus this light's dither.
        y, x, _ = max(truth["stars"], key=lambda s: s[2])
        iy, ix = round(y + dy), round(x + dx)
        box = data[iy - 5 : iy + 6, ix - 5 : ix + 6] - sky
        box = np.clip(box, 0, None)
        yy, xx = np.mgrid[iy - 5 : iy + 6, ix - 5 : ix + 6]
        assert (box * yy).sum() / box.sum() == pytest.approx(y + dy, abs=0.3)
        assert (box * xx).sum() / box.sum() == pytest.approx(x + dx, abs=0.3)
        assert data.max() <= 65535


# --- Determinism ----------------------------------------------------------------------------------

SMALL: dict[str, Any] = {"shape": (48, 64), "n_bias": 2, "n_dark": 1, "n_flat": 1, "n_light": 2}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = simulate_night(tmp_path / "a", seed=5, **SMALL)
    b = simulate_night(tmp_path / "b", seed=5, **SMALL)
    names_a = [p.relative_to(a.root) for k in KINDS for p in a.files[k]]
    names_b = [p.relative_to(b.root) for k in KINDS for p in b.files[k]]
    assert names_a == names_b
    assert len(names_a) == 2 + 4 + 2 + 2
    for name in names_a:
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name
    assert a.truth["frames"] == b.truth["frames"]
    assert a.truth["hot_pixels"] == b.truth["hot_pixels"]


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    a = simulate_night(tmp_path / "a", seed=5, **SMALL)
    c = simulate_night(tmp_path / "c", seed=6, **SMALL)
    for kind in KINDS:
        assert [p.name for p in a.files[kind]] == [p.name for p in c.files[kind]]
        for pa, pc in zip(a.files[kind], c.files[kind], strict=True):
            assert not np.array_equal(fits.getdata(pa), fits.getdata(pc)), pa.name
    assert a.truth["hot_pixels"] != c.truth["hot_pixels"]
    assert a.truth["stars"] != c.truth["stars"]


def test_fixed_patterns_do_not_depend_on_frame_counts(tmp_path: Path) -> None:
    small = simulate_night(tmp_path / "small", seed=3, **SMALL)
    more = simulate_night(tmp_path / "more", seed=3, **{**SMALL, "n_bias": 4, "n_light": 1})
    for key in ("hot_pixels", "stars", "vignetting", "dust"):
        assert small.truth[key] == more.truth[key]
    np.testing.assert_array_equal(small.truth["column_pattern"], more.truth["column_pattern"])


def test_zero_frames_of_a_kind(tmp_path: Path) -> None:
    night = simulate_night(tmp_path / "n", shape=(40, 40), n_bias=0, n_dark=0, n_flat=0, n_light=1)
    assert {k: len(v) for k, v in night.files.items()} == {
        "bias": 0,
        "dark": 0,
        "flat": 0,
        "light": 1,
    }
    assert (night.root / "BIAS").is_dir()
    assert fits.getheader(night.files["light"][0])["FILTER"] == "R"


# --- Validity -------------------------------------------------------------------------------------


def test_every_file_passes_fitsverify(night: SimulatedNight) -> None:
    exe = shutil.which("fitsverify")
    if exe is None:
        pytest.skip("fitsverify (HEASARC) is not installed: apt-get install fitsverify")
    paths = [p for kind in KINDS for p in night.files[kind]]
    for path in paths:
        out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False).stdout
        found = re.findall(r"(\d+)\s+warning\(s\)\s+and\s+(\d+)\s+error\(s\)", out)
        assert len(found) == 1, out
        assert found[0][1] == "0", out
        assert found[0][0] == "0", out  # N.I.N.A.-style headers draw no warning either


def test_every_file_reads_back_as_ccddata(night: SimulatedNight) -> None:
    for kind in KINDS:
        for path in night.files[kind]:
            ccd = CCDData.read(path, unit="adu")
            assert ccd.unit == "adu"
            assert ccd.shape == (240, 320)
            assert ccd.header["IMAGETYP"] == kind.upper()
            np.testing.assert_array_equal(ccd.data, fits.getdata(path))


# --- Errors ---------------------------------------------------------------------------------------


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not empty"):
        simulate_night(target)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "raw.fits"
    target.write_bytes(b"")
    with pytest.raises(UsageError, match="not a directory"):
        simulate_night(target)


def test_refuses_a_folder_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot create"):
        simulate_night(blocker / "raw")


def test_accepts_an_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    night = simulate_night(str(target), **SMALL)
    assert night.root == target.resolve()
    assert len(night.files["light"]) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": -1},
        {"shape": (10, 64)},
        {"shape": (64,)},
        {"n_bias": -1},
        {"n_light": 1.5},
    ],
)
def test_rejects_bad_options(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        simulate_night(tmp_path / "raw", **kwargs)
    assert not (tmp_path / "raw").exists()


# --- Pure functions -------------------------------------------------------------------------------


def test_vignetting_and_dust_model() -> None:
    shape = (101, 121)
    v = vignetting(shape, center=(50.0, 60.0), strength=0.25)
    assert v[50, 60] == 1.0
    assert v[0, 0] == pytest.approx(0.75)  # the corner is at the half-diagonal
    assert half_diagonal(shape) == pytest.approx(math.hypot(50, 60))
    d = dust_donut(shape, center=(50.0, 60.0), radius=10.0, width=2.0, depth=0.06)
    assert d[50, 70] == pytest.approx(0.94)
    assert d[50, 60] > 0.99
    assert d[0, 0] == pytest.approx(1.0)


def test_gaussian_stars_conserve_flux() -> None:
    image = gaussian_stars((50, 60), [20.3, 30.0], [25.7, 40.0], [1000.0, 50.0], sigma=1.3)
    assert image.sum() == pytest.approx(1050.0)
    assert np.unravel_index(np.argmax(image), image.shape) == (20, 26)
    edge = gaussian_stars((50, 60), [0.0], [0.0], [100.0], sigma=1.3)
    assert 0 < edge.sum() < 100.0


def test_to_uint16_rounds_and_clips() -> None:
    out = to_uint16(np.array([-5.0, 0.4, 0.6, 70000.0, 65535.4]))
    assert out.dtype == np.uint16
    assert out.tolist() == [0, 0, 1, 65535, 65535]
