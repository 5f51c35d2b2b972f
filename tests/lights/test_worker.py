"""One light's calibration: the worker's read paths and failures, the output header, checksums, fitsverify."""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import mad_std
from hypothesis import given
from hypothesis import strategies as st

from ccdcal.files.calibrated import (
    _card_image,
    _history_images,
    clean_raw_header,
    encode_checksum,
    output_cards,
    output_header,
    write_calibrated,
)
from ccdcal.files.cardtext import history_lines as joined_history
from ccdcal.files.fitsio import add_history, set_card, sha256_file
from ccdcal.kernels.cosmic import CosmicParams
from ccdcal.kernels.light import be_words, calibrate_image, clamp_flat
from ccdcal.kernels.overscan import NO_OVERSCAN, OverscanPlan, Section, apply_overscan, machine_cards
from ccdcal.kernels.saturation import resolve_saturation
from ccdcal.kernels.uncertainty import NoiseModel, deviation, propagate, uncertainty_hdu
from ccdcal.lights.pixels import preload
from ccdcal.lights.task import FrameTask, MasterUse, OptionalSteps
from ccdcal.lights.worker import calibrate_frame
from tests.conftest import SHARED_REAL, TEST_DATA, fitsverify_counts, real_set

SHAPE = (40, 56)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def write_master(path: Path, data: np.ndarray, role: str | None = None) -> MasterUse:
    fits.PrimaryHDU(data.astype(np.float32)).writeto(path)
    return MasterUse(role or path.stem.split("_")[0], 1, str(path), sha256_file(path))


@pytest.fixture
def masters(tmp_path: Path, rng: np.random.Generator) -> dict[str, MasterUse]:
    flat = rng.normal(1.0, 0.03, SHAPE)
    flat[:, -2:] = 0.001  # an overscan-like strip: clamped and flagged
    return {
        "bias": write_master(tmp_path / "bias_master.fits", rng.normal(500, 2, SHAPE)),
        "dark": write_master(tmp_path / "dark_master.fits", rng.normal(8, 1, SHAPE)),
        "flat": write_master(tmp_path / "flat_master.fits", flat),
    }


def nina_header() -> fits.Header:
    header = fits.Header()
    for key, value in {
        "IMAGETYP": "LIGHT",
        "EXPTIME": 120.0,
        "DATE-OBS": "2026-03-14T21:03:11.123456",
        "FILTER": "R",
        "OBJECT": "M 51",
        "EQUINOX": 2000.0,
    }.items():
        header[key] = value
    return header


def write_raw(path: Path, data: np.ndarray, header: fits.Header | None = None, **kwargs: Any) -> Path:
    hdu = fits.PrimaryHDU(data, header or nina_header())
    hdu.writeto(path, **kwargs)
    return path


def task_for(
    path: Path, masters: dict[str, MasterUse], output: Path, hdu: int = 0, **changes: Any
) -> FrameTask:
    stat = path.stat()
    values: dict[str, Any] = {
        "frame_id": 1,
        "path": str(path),
        "hdu": hdu,
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "sha256": sha256_file(path),
        "output": str(output),
        "bias": masters.get("bias"),
        "dark": masters.get("dark"),
        "dark_scale": 1.5,
        "flat": masters.get("flat"),
        "flat_min": 0.01,
        "notes": ("dark not applied (n/a): a note",),
    }
    return FrameTask(**(values | changes))


def expected(raw: np.ndarray, masters: dict[str, MasterUse], scale: float = 1.5) -> np.ndarray:
    bias, dark, flat = (fits.getdata(masters[k].path) for k in ("bias", "dark", "flat"))
    return calibrate_image(raw, bias, dark, scale, clamp_flat(flat)[0])


def finish(result: Any, output: Path) -> Path:
    """Give the worker's temporary file its final name (what the coordinator does)."""
    assert result.error is None, result.error
    assert result.temporary is not None
    assert Path(result.temporary).parent == output.parent
    assert Path(result.temporary).name.startswith(".ccdcal-tmp-")
    assert sha256_file(result.temporary) == result.sha256
    os.replace(result.temporary, output)
    return output


def read_clean(path: Path) -> CCDData:
    """CCDData.read without any warning; the FITS checksums verified."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, checksum=True) as hdul:
            hdul.verify("exception")
        data = CCDData.read(path)
    assert not caught, [str(w.message) for w in caught]
    return data


# -- the worker ------------------------------------------------------------------------------------------


def test_a_uint16_light_is_calibrated_on_the_fast_path(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, SHAPE).astype(np.uint16)
    path = write_raw(tmp_path / "Light_001.fits", raw)
    assert fits.getheader(path)["BZERO"] == 32768
    output = tmp_path / "out" / "Light_001_cal.fits"
    result = calibrate_frame(task_for(path, masters, output))
    assert result.masked == SHAPE[0] * 2
    finish(result, output)
    data = read_clean(output)
    np.testing.assert_array_equal(data.data, expected(raw, masters))
    assert data.unit == "adu"
    assert data.mask is not None
    assert data.mask[:, -2:].all()
    assert int(data.mask.sum()) == SHAPE[0] * 2
    header = data.header
    assert (header["BIASCOR"], header["DARKCOR"], header["FLATCOR"]) == (
        "bias_master.fits",
        "dark_master.fits",
        "flat_master.fits",
    )
    assert header["DARKSCAL"] == 1.5
    assert header["FLATMIN"] == 0.01
    assert header["NMASKED"] == SHAPE[0] * 2
    assert header["CCDCALV"]
    assert header["MJD-OBS"] == pytest.approx(61113.877212, abs=1e-6)
    assert header["FILTER"] == "R"
    assert "BZERO" not in header
    history = " ".join(str(h) for h in header["HISTORY"])
    for use in masters.values():
        assert use.sha256 in history.replace(" ", "") or use.sha256 in history
    assert "dark not applied (n/a): a note" in history
    assert fitsverify_counts(output) == (0, 0)
    assert sha256_file(path) == task_for(path, masters, output).sha256  # the raw file is untouched


def test_a_raw_header_with_bad_bytes_and_a_malformed_card(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, SHAPE).astype(np.uint16)
    path = write_raw(tmp_path / "Light_bad.fits", raw)
    content = path.read_bytes()
    content = content.replace(b"'M 51    '", b"'M\xe951    '", 1)  # a Latin-1 byte in a value
    content = content.replace(b"FILTER  = 'R       '", b"FILTER  = R (red)   ", 1)  # an unquoted string
    path.write_bytes(content)
    output = tmp_path / "Light_bad_cal.fits"
    finish(calibrate_frame(task_for(path, masters, output)), output)
    header = read_clean(output).header
    assert header["OBJECT"] == "M?51"
    assert "FILTER" not in header
    assert "raw card FILTER (malformed card) left out: not valid FITS" in [str(h) for h in header["HISTORY"]]
    assert fitsverify_counts(output) == (0, 0)


@pytest.mark.parametrize(
    ("name", "data", "options"),
    [
        ("signed", np.arange(-1000, -1000 + SHAPE[0] * SHAPE[1], dtype=np.int16).reshape(SHAPE), {}),
        ("float32", np.linspace(0, 4000, SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE), {}),
        ("int32", np.arange(SHAPE[0] * SHAPE[1], dtype=np.int32).reshape(SHAPE) * 7, {}),
    ],
)
def test_other_pixel_types_give_the_same_numbers(
    tmp_path: Path, masters: dict[str, MasterUse], name: str, data: np.ndarray, options: dict[str, Any]
) -> None:
    path = write_raw(tmp_path / f"{name}.fits", data, **options)
    output = tmp_path / f"{name}_cal.fits"
    finish(calibrate_frame(task_for(path, masters, output)), output)
    np.testing.assert_array_equal(read_clean(output).data, expected(data, masters))
    assert fitsverify_counts(output) == (0, 0)


def test_a_compressed_light_in_an_extension(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, SHAPE).astype(np.uint16)
    path = tmp_path / "Light_fz.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw, nina_header())]).writeto(path)
    output = tmp_path / "Light_fz_cal.fits"
    finish(calibrate_frame(task_for(path, masters, output, hdu=1)), output)
    data = read_clean(output)
    np.testing.assert_array_equal(data.data, expected(raw, masters))
    assert "ZIMAGE" not in data.header
    assert data.header["FILTER"] == "R"
    assert fitsverify_counts(output) == (0, 0)


def test_failures_are_results_with_the_reason(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, SHAPE).astype(np.uint16)
    path = write_raw(tmp_path / "Light.fits", raw)
    output = tmp_path / "Light_cal.fits"
    good = task_for(path, masters, output)

    changed = calibrate_frame(FrameTask(**{**good.__dict__, "mtime": good.mtime - 10}))
    assert changed.error == f"{path}: changed since it was catalogued: run `ccdcal ingest` on it again"
    assert changed.temporary is None

    wrong_shape = tmp_path / "small_bias.fits"
    small = write_master(wrong_shape, np.zeros((10, 10)), "bias")
    shape = calibrate_frame(FrameTask(**{**good.__dict__, "bias": small}))
    assert shape.error == "the bias master small_bias.fits is 10x10 pixels, the light 56x40"

    tampered = MasterUse("dark", 2, masters["dark"].path, "0" * 64)
    assert calibrate_frame(FrameTask(**{**good.__dict__, "dark": tampered})).error == (
        f"{masters['dark'].path}: the dark master changed since it was built (sha256 differs from the "
        "catalog's); check it with `ccdcal audit`"
    )
    gone = MasterUse("flat", 3, str(tmp_path / "gone.fits"), "0" * 64)
    assert calibrate_frame(FrameTask(**{**good.__dict__, "flat": gone})).error == (
        f"{tmp_path / 'gone.fits'}: the flat master is missing; run `ccdcal process` again to rebuild it"
    )

    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(path.read_bytes()[: 2880 * 2])
    result = calibrate_frame(task_for(truncated, masters, tmp_path / "t_cal.fits"))
    assert result.error == f"{truncated}: truncated: 1440 of 2240 pixels"
    assert list(tmp_path.glob(".ccdcal-tmp-*")) == []


#: Larger than the block the writer streams by (256 KiB) and not a multiple of it.
BIG = (300, 301)


def _rewrite_keeping_size_and_mtime(path: Path, other: Path) -> None:
    """``cp -p other path``: the content of another version, the size and mtime of the first."""
    stat = path.stat()
    content = other.read_bytes()
    assert len(content) == stat.st_size
    path.write_bytes(content)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_gzipped_light_is_read_once_and_hashed_as_stored(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, SHAPE).astype(np.uint16)
    plain = write_raw(tmp_path / "Light_gz.fits", raw)
    path = tmp_path / "Light_gz.fits.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    output = tmp_path / "Light_gz_cal.fits"
    task = task_for(path, masters, output)
    result = calibrate_frame(task)
    assert result.raw_sha256 == task.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    finish(result, output)
    np.testing.assert_array_equal(read_clean(output).data, expected(raw, masters))


@pytest.mark.parametrize(
    ("layout", "hdu"),
    [("uint16", 0), ("float32", 0), ("compressed", 1), ("uint16-steps", 0)],
    ids=["fast-path", "astropy-path", "tile-compressed", "optional-steps"],
)
def test_a_raw_file_rewritten_with_size_and_mtime_kept_is_not_calibrated(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse], layout: str, hdu: int
) -> None:
    """Its pixels are the new file's while the catalog's sha256 is the old one's: the light fails with the
    reason, its output is removed, and the hash of the bytes actually read comes back."""
    files = []
    for name in ("first", "second"):
        raw = rng.integers(600, 50000, SHAPE).astype(np.uint16)
        path = tmp_path / f"{name}.fits"
        if layout == "compressed":
            fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw, nina_header())]).writeto(path)
        elif layout == "float32":
            write_raw(path, raw.astype(np.float32))
        else:
            write_raw(path, raw)
        files.append(path)
    light, other = files
    output = tmp_path / "out" / "first_cal.fits"
    optional = OptionalSteps(bpm=masters["bias"]) if layout == "uint16-steps" else None
    task = task_for(light, masters, output, hdu=hdu, optional=optional)
    good = calibrate_frame(task)
    assert good.error is None, good.error
    assert good.raw_sha256 == task.sha256 == sha256_file(light)
    Path(good.temporary or "").unlink()

    _rewrite_keeping_size_and_mtime(light, other)
    changed = calibrate_frame(task)
    assert changed.error == (
        "raw file changed since it was catalogued (its sha256 differs); run `ccdcal ingest` on it again"
    )
    assert (changed.temporary, changed.sha256) == (None, None)
    assert changed.raw_sha256 == sha256_file(other) != task.sha256
    assert list((tmp_path / "out").iterdir()) == []  # the output of the other pixels is not kept


@pytest.fixture
def big_masters(tmp_path: Path, rng: np.random.Generator) -> dict[str, MasterUse]:
    return {
        "bias": write_master(tmp_path / "bias_big.fits", rng.normal(500, 2, BIG)),
        "dark": write_master(tmp_path / "dark_big.fits", rng.normal(8, 1, BIG)),
        "flat": write_master(tmp_path / "flat_big.fits", rng.normal(1.0, 0.03, BIG)),
    }


def test_a_data_unit_larger_than_a_block_is_streamed_bit_for_bit(
    tmp_path: Path, rng: np.random.Generator, big_masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, BIG).astype(np.uint16)
    path = write_raw(tmp_path / "Light_big.fits", raw)
    output = tmp_path / "Light_big_cal.fits"
    result = calibrate_frame(task_for(path, big_masters, output))
    finish(result, output)  # the sha256 of the file is the one the worker returned
    np.testing.assert_array_equal(read_clean(output).data, expected(raw, big_masters))  # checksums verified
    assert fitsverify_counts(output) == (0, 0)


def test_frames_calibrated_at_once_in_threads_keep_their_own_pixels(
    tmp_path: Path, rng: np.random.Generator, big_masters: dict[str, MasterUse]
) -> None:
    """A Dask worker with several threads runs frames at once: no buffer is shared between them."""
    raws = [rng.integers(600 + 1000 * i, 50000, BIG).astype(np.uint16) for i in range(6)]
    tasks = [
        task_for(write_raw(tmp_path / f"Light_{i}.fits", raw), big_masters, tmp_path / f"Light_{i}_cal.fits")
        for i, raw in enumerate(raws)
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(calibrate_frame, tasks))
    for raw, task, result in zip(raws, tasks, results, strict=True):
        output = finish(result, Path(task.output))
        np.testing.assert_array_equal(read_clean(output).data, expected(raw, big_masters))


def test_preloaded_masters_are_checked_and_a_bad_one_is_left_to_the_light(
    tmp_path: Path, rng: np.random.Generator, big_masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, BIG).astype(np.uint16)
    path = write_raw(tmp_path / "Light.fits", raw)
    good = task_for(path, big_masters, tmp_path / "Light_cal.fits")
    assert preload([good, good]) == 3
    gone = MasterUse("dark", 9, str(tmp_path / "gone.fits"), "0" * 64)
    bad = FrameTask(**{**good.__dict__, "dark": gone, "output": str(tmp_path / "bad_cal.fits")})
    assert preload([bad]) == 2  # the bias and the flat; the missing dark is not an error here
    result = calibrate_frame(bad)
    assert (
        result.error == f"{gone.path}: the dark master is missing; run `ccdcal process` again to rebuild it"
    )
    output = finish(calibrate_frame(good), Path(good.output))
    np.testing.assert_array_equal(read_clean(output).data, expected(raw, big_masters))


# -- the header ------------------------------------------------------------------------------------------


def test_invalid_raw_cards_are_converted_or_left_out_with_history() -> None:
    raw = fits.Header()
    raw["SIMPLE"] = True
    raw["BITPIX"] = 16
    raw["NAXIS"] = 0
    raw["BZERO"] = 32768
    for key, value in {
        "CRVAL1": "124.6185920672",  # a number in a string: converted
        "EQUINOX": "2000.0",
        "WCSAXES": "2",
        "CRPIX2": "center",  # not a number: left out
        "CTYPE1": 5,  # a number where a string is due: converted
        "DATE-OBS": "2019-03-26",  # a valid date: kept
        "DATE-LOC": "26.03.2019 21:00",  # not a date: left out
        "DATAMIN": 0,  # describes the raw pixels: left out
        "OBSERVER": "B. Skiff",
        "BUNIT": "counts",
        "CD1_1": 0.5,  # with PC1_1 (MaxIm DL's WCS, then a solver's): the PC form is kept
        "CROTA2": 3.0,
        "PC1_1": 0.5,
    }.items():
        raw[key] = value
    cards, notes = clean_raw_header(raw)
    kept = {c.keyword: c.value for c in cards}
    assert kept["CRVAL1"] == pytest.approx(124.6185920672)
    assert kept["EQUINOX"] == 2000.0
    assert kept["WCSAXES"] == 2
    assert kept["CTYPE1"] == "5"
    assert kept["DATE-OBS"] == "2019-03-26"
    assert kept["OBSERVER"] == "B. Skiff"
    assert kept["PC1_1"] == 0.5
    dropped = {"SIMPLE", "BITPIX", "NAXIS", "BZERO", "CRPIX2", "DATE-LOC", "DATAMIN", "CD1_1", "CROTA2"}
    assert not dropped & set(kept)
    order = [c.keyword for c in cards]
    assert order.index("WCSAXES") < order.index("CRVAL1")
    assert notes == [
        "raw cards converted to their standard type: CRVAL1, EQUINOX, WCSAXES, CTYPE1",
        "raw card CRPIX2 (not a number) left out: not valid FITS",
        "raw card DATE-LOC ('26.03.2019 21:00' is not an ISO date) left out: not valid FITS",
        "raw cards CD1_1, CROTA2 left out: the PCi_j matrix is present",
        "raw card WCSAXES moved before the other WCS keywords",
    ]
    header = output_header(raw, (3, 4), [("BIASCOR", "b.fits", "master bias subtracted")], ["a step"])
    history = [str(h) for h in header["HISTORY"]]
    assert history[0] == "raw cards converted to their standard type: CRVAL1, EQUINOX, WCSAXES, \\"
    assert "raw BUNIT 'counts' replaced by 'adu'" in history
    assert history[-1] == "a step"
    assert header["BUNIT"] == "adu"
    assert list(header)[:6] == ["SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"]


@pytest.mark.parametrize("value", [0, 1, 0x12345678, 0xFFFFFFFF, 0xFFFF0000, 0x80808080])
def test_checksum_encoding_is_astropys(value: int) -> None:
    assert encode_checksum(value) == fits.PrimaryHDU()._char_encode(value)


def test_outputs_from_real_raw_headers_pass_fitsverify(tmp_path: Path) -> None:
    """Every real frame's header, as a calibrated output: 0 fitsverify errors, readable by astropy."""
    paths = sorted(p for p in SHARED_REAL.rglob("*") if p.is_file() and ".fit" in p.name.lower())
    paths += sorted(p for p in TEST_DATA.rglob("*") if p.is_file() and ".fit" in p.name.lower())
    if not paths:
        pytest.skip("no real frames")
    for number, path in enumerate(paths):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path) as hdul:
                hdu = next(h for h in hdul if h.data is not None and h.is_image)
                raw = hdu.header.copy()
        image = np.zeros((8, 8), np.float32)
        words = np.empty(64, np.uint32)
        total = be_words(image, words)
        cards = output_cards(raw, (8, 8), [], ["test"])
        temporary, digest = write_calibrated(tmp_path, f"{number}.fits", cards, words, total, None)
        assert hashlib.sha256(temporary.read_bytes()).hexdigest() == digest
        assert fitsverify_counts(temporary)[1] == 0, path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(temporary, checksum=True) as hdul:
                hdul.verify("exception")


def test_lowell_wcs_strings_become_numbers(tmp_path: Path) -> None:
    raw = fits.getheader(real_set("lowell-deadparrots-hall42") / "20190326.0126.fits")
    header = output_header(raw, (1370, 1432), [], [])
    assert header["CRVAL1"] == pytest.approx(124.6185920672)
    assert header["CD1_1"] == pytest.approx(-0.0003073728745725)
    assert header["EQUINOX"] == 2000.0
    assert header["CTYPE1"] == "RA---TAN"
    assert header["TRIMSEC"] == "[18:1382,1:1370]"
    history = " ".join(str(h) for h in header["HISTORY"])
    assert "raw cards converted to their standard type: EQUINOX, CRVAL1, CRVAL2" in history


_LINES = st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200), max_size=4)


@given(_LINES)
def test_history_cards_are_written_as_astropy_writes_them(lines: list[str]) -> None:
    """The fast HISTORY rendering of output headers equals :func:`add_history` through astropy."""
    header = fits.Header()
    add_history(header, lines)
    assert _history_images(lines) == header.tostring(endcard=False, padding=False)


@pytest.mark.parametrize(
    ("keyword", "value", "comment"),
    [
        ("BIASCOR", "master_bias_b1x1_g100_sNA_C-10.fits", "master bias subtracted"),
        ("DARKSCAL", 0.2, "dark scale factor t_light / t_dark"),
        ("NMASKED", 12, "flat pixels clamped, flagged in MASK"),
        ("FLAG", True, "a logical"),
        ("FLATCOR", "x" * 60, "a comment far too long to fit on the card with such a long value"),
        ("MJD-OBS", 60000.123456789, "[d] MJD of DATE-OBS"),
    ],
)
def test_provenance_cards_are_written_as_set_card_writes_them(keyword: str, value: Any, comment: str) -> None:
    header = fits.Header()
    set_card(header, keyword, value, comment)
    assert _card_image(keyword, value, type(value), comment) == header.cards[0].image


# -- the optional steps (ccdcal.lights.worker_steps)
# ------------------------------------------------------------

OSCAN_SHAPE = (40, 70)  # lines, columns: data in columns 4-56, overscan in 61-70
PLAN = OverscanPlan("median", Section(61, 70, 1, 40), Section(4, 56, 1, 40), 1)
TRIMMED = (40, 53)


def write_prepared(
    path: Path, data: np.ndarray, role: str, sigma: np.ndarray | None = None, plan: OverscanPlan = PLAN
) -> MasterUse:
    """A master as ccdcal writes it after overscan and trim: OVSCMETH/OVSCSEC/TRIMSECT, maybe UNCERT."""
    header = fits.Header()
    for keyword, value, comment in machine_cards(plan):
        header[keyword] = (value, comment)
    hdus = [fits.PrimaryHDU(data.astype(np.float32) if role != "bpm" else data.astype(np.uint8), header)]
    if sigma is not None:
        hdus.append(uncertainty_hdu(sigma))
    fits.HDUList(hdus).writeto(path)
    return MasterUse(role, 7, str(path), sha256_file(path))


@pytest.fixture
def overscan_raw(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """A 16-bit light: a bias level varying by line, an overscan strip, BIASSEC/TRIMSEC in its header."""
    level = 1000 + 0.3 * np.arange(OSCAN_SHAPE[0])[:, None]
    data = level + rng.normal(0, 4, OSCAN_SHAPE)
    data[:, 3:56] += rng.uniform(200, 3000, (OSCAN_SHAPE[0], 53))
    raw = np.rint(data).astype(np.uint16)
    header = nina_header()
    header["BIASSEC"] = "[61:70,   1:40]"
    header["TRIMSEC"] = "[4:56,1:40]"
    header["CRPIX1"] = 20.0
    header["CRPIX2"] = 10.0
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 10.0, 20.0
    header["CDELT1"], header["CDELT2"] = -0.001, 0.001
    return write_raw(tmp_path / "Light_os.fits", raw, header), raw


def test_steps_that_do_nothing_keep_the_fast_path_bit_for_bit(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse]
) -> None:
    raw = rng.integers(600, 50000, SHAPE).astype(np.uint16)
    path = write_raw(tmp_path / "Light_001.fits", raw)
    plain = calibrate_frame(task_for(path, masters, tmp_path / "a.fits"))
    idle = OptionalSteps(overscan=NO_OVERSCAN, overscan_mode="auto")
    assert not idle.any
    with_idle = calibrate_frame(task_for(path, masters, tmp_path / "b.fits", optional=idle))
    assert plain.sha256 == with_idle.sha256
    assert plain.details == {
        "saturation": {
            "status": "applied",
            "level": 65535.0,
            "source": "data type",
            "detail": "BITPIX 16, BZERO 32768",
            "option": None,
            "flagged": 0,
        },
        "mask": {"flagged": 80, "bits": {"1": 80, "2": 0, "4": 0, "8": 0, "16": 80}},
    }
    assert (with_idle.details, plain.warnings) == (plain.details, ())


def test_every_step_on_one_light(
    tmp_path: Path, rng: np.random.Generator, overscan_raw: tuple[Path, np.ndarray]
) -> None:
    path, raw = overscan_raw
    bias = rng.normal(2.0, 1.0, TRIMMED)
    flat = rng.normal(1.0, 0.02, TRIMMED)
    flat[0, :3] = 0.001
    bad = np.zeros(TRIMMED, dtype=np.uint8)
    bad[5, 5] = bad[6, 7] = bad[0, 1] = 1  # (0, 1): also a clamped flat pixel, flagged by two bits
    sigmas = {"bias": rng.uniform(0.5, 1.0, TRIMMED), "flat": rng.uniform(0.001, 0.003, TRIMMED)}
    used = {
        "bias": write_prepared(tmp_path / "mb.fits", bias, "bias", sigmas["bias"]),
        "flat": write_prepared(tmp_path / "mf.fits", flat, "flat", sigmas["flat"]),
        "bpm": write_prepared(tmp_path / "bpm.fits", bad, "bpm"),
    }
    noise = NoiseModel(2.0, "EGAIN", 6.0, "--readnoise")
    steps = OptionalSteps(
        overscan=PLAN,
        overscan_mode="auto",
        noise=noise,
        cosmic=CosmicParams(),
        cosmic_noise=(2.0, 6.0, "EGAIN, --readnoise"),
        bpm=used["bpm"],
    )
    output = tmp_path / "Light_os_cal.fits"
    task = task_for(path, {"bias": used["bias"], "flat": used["flat"]}, output, dark=None, optional=steps)
    result = calibrate_frame(task)
    finish(result, output)
    data = read_clean(output)

    prepared, level = apply_overscan(raw, PLAN)
    clamped = clamp_flat(flat)[0]
    image = calibrate_image(prepared, bias, None, 1.0, clamped)
    cosmic = (np.asarray(fits.getdata(output, "MASK")) & 4) != 0
    assert data.shape == TRIMMED
    np.testing.assert_array_equal(data.data[~cosmic], image[~cosmic])
    sigma = propagate(
        deviation(prepared - bias.astype(np.float32).astype(np.float64), 2.0, 6.0),
        prepared - bias.astype(np.float32),
        bias_sigma=sigmas["bias"].astype(np.float32),
        flat=clamped.astype(np.float64),
        flat_sigma=sigmas["flat"].astype(np.float32),
    )
    assert isinstance(data.uncertainty, StdDevUncertainty)
    np.testing.assert_allclose(data.uncertainty.array, sigma, rtol=1e-6)
    mask = fits.getdata(output, "MASK")
    assert (mask[0, :3] & 1).all()
    assert (mask[5, 5] & 2, mask[6, 7] & 2) == (2, 2)
    np.testing.assert_array_equal(data.mask, mask != 0)
    assert data.wcs is not None
    assert data.wcs.wcs.crpix[0] == 17.0
    header = fits.getheader(output)
    assert header["OVERSCAN"] == f"Overscan section is [61:70,1:40]: row-wise median, level {level:.6g}"
    assert header["TRIM"] == "Trim data section is [4:56,1:40]"
    assert (header["CRPIX1"], header["CRPIX2"], header["LTV1"]) == (17.0, 10.0, -3.0)
    assert "BIASSEC" not in header
    assert (header["UNCGAIN"], header["UNCRDNS"]) == (2.0, 6.0)
    assert (header["BPMCOR"], header["NBADPIX"], header["CRCLEAN"]) == ("bpm.fits", 3, int(cosmic.sum()))
    # NMASKED counts every flagged pixel, once however many bits it carries; NMASKn each bit's pixels
    assert header["NMASKED"] == int(np.count_nonzero(mask)) == 3 + 2 + int(cosmic.sum())
    assert (header["NMASK1"], header["NMASK2"], header["NMASK4"]) == (3, 3, int(cosmic.sum()))
    assert result.details["mask"] == {
        "flagged": header["NMASKED"],
        "bits": {"1": 3, "2": 3, "4": int(cosmic.sum()), "8": 0, "16": 3},
    }
    assert fits.getheader(output, "MASK")["MASKBIT4"] == "cosmic ray, cleaned (L.A.Cosmic)"
    assert fits.getheader(output, "UNCERT")["UTYPE"] == "StdDevUncertainty"
    history = [str(h) for h in header["HISTORY"]]
    assert f"overscan subtracted: row-wise median of [61:70,1:40], level {level:.6g}" in history
    assert result.details["overscan"] == {
        "status": "applied",
        "mode": "auto",
        "method": "median",
        "biassec": "[61:70,1:40]",
        "trimsec": "[4:56,1:40]",
        "axis": 1,
        "level": level,
    }
    assert result.details["uncertainty"]["masters"] == {"bias": True, "flat": True}
    assert result.details["bpm"] == {"flagged": 3}
    assert result.details["cosmic_rays"]["cleaned"] == int(cosmic.sum())
    assert fitsverify_counts(output) == (0, 0)


def test_a_master_prepared_otherwise_fails_the_light(
    tmp_path: Path, rng: np.random.Generator, overscan_raw: tuple[Path, np.ndarray]
) -> None:
    path, _ = overscan_raw
    untrimmed = MasterUse("bias", 3, str(tmp_path / "plain.fits"), "")
    fits.PrimaryHDU(np.zeros(TRIMMED, np.float32)).writeto(untrimmed.path)
    untrimmed = MasterUse("bias", 3, untrimmed.path, sha256_file(untrimmed.path))
    steps = OptionalSteps(overscan=PLAN)
    result = calibrate_frame(task_for(path, {"bias": untrimmed}, tmp_path / "o.fits", optional=steps))
    assert result.error == (
        "the bias master plain.fits was built from frames prepared with overscan none, and this light is "
        "prepared with median of [61:70,1:40] trim [4:56,1:40]: build the masters with the same "
        "--overscan (`ccdcal process` rebuilds them)"
    )
    other = OverscanPlan("median", Section(61, 70, 1, 40), Section(5, 57, 1, 40), 1)
    shifted = write_prepared(tmp_path / "shifted.fits", np.zeros(TRIMMED), "bias", plan=other)
    result = calibrate_frame(task_for(path, {"bias": shifted}, tmp_path / "o.fits", optional=steps))
    assert result.error is not None
    assert "trim [5:57,1:40]" in result.error


def test_a_signed_light_with_overscan(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = rng.integers(-2000, 3000, OSCAN_SHAPE).astype(np.int16)
    header = nina_header()
    path = write_raw(tmp_path / "signed.fits", raw, header)
    output = tmp_path / "signed_cal.fits"
    finish(calibrate_frame(task_for(path, {}, output, optional=OptionalSteps(overscan=PLAN))), output)
    np.testing.assert_array_equal(read_clean(output).data, apply_overscan(raw, PLAN)[0].astype(np.float32))


@pytest.mark.parametrize("offset", [0, -600])
def test_a_light_far_below_its_bias_is_reported(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse], offset: int
) -> None:
    bias = fits.getdata(masters["bias"].path)  # about 500 ADU, dispersion 2
    raw = np.clip(rng.normal(520 + offset, 5, SHAPE), 0, None).astype(np.uint16)
    path = write_raw(tmp_path / "Light_auto.fits", raw)
    result = calibrate_frame(task_for(path, {"bias": masters["bias"]}, tmp_path / "o.fits", dark=None))
    assert result.error is None
    if offset == 0:
        assert result.warnings == ()
        return
    (warning,) = result.warnings
    assert warning == (
        f"the light's level {np.median(raw):.6g} ADU is far below its master bias bias_master.fits "
        f"({np.median(bias):.6g} ADU, by more than 10 x its dispersion {mad_std(bias):.3g}): it may "
        "already be bias- or dark-subtracted (a capture program's auto-dark)"
    )
    assert result.details["warnings"] == [warning]


# -- saturated and low-response pixels: MASK bits 8 and 16 --------------------------------------------------


def low_flat(
    tmp_path: Path, rng: np.random.Generator, shape: tuple[int, int] = SHAPE
) -> tuple[np.ndarray, Any]:
    """A flat with a vignetted edge (below flat_low 0.5) and a clamped strip (below flat_min 0.01)."""
    flat = rng.normal(1.0, 0.03, shape)
    flat[:, 0] = np.linspace(0.2, 0.6, shape[0])  # half of it below 0.5
    flat[:, -2:] = 0.001
    return flat, write_master(tmp_path / "flat_vignetted.fits", flat)


def expected_mask(raw: np.ndarray, flat: np.ndarray, level: float | None) -> np.ndarray:
    flat32 = flat.astype(np.float32)
    mask = (flat32 < np.float32(0.01)).astype(np.uint8) | (flat32 < np.float32(0.5)).astype(np.uint8) * 16
    if level is not None:
        mask |= (raw >= level).astype(np.uint8) * 8
    return mask


@pytest.mark.parametrize("layout", ["uint16", "int16", "float32", "compressed"])
def test_saturated_raw_pixels_and_a_low_flat_response_are_flagged(
    tmp_path: Path, rng: np.random.Generator, masters: dict[str, MasterUse], layout: str
) -> None:
    """Every pixel whose raw sample is at or above the level carries bit 8 (tested on the raw value: a
    bias far above it does not hide it), every pixel of the flat below flat_low bit 16; NMASKED, NMASK8,
    NMASK16, SATLEVEL, FLATLOW and the steps' record agree with the MASK written. The be16 fast path
    (uint16, int16) and the generic path (float, tile-compressed) give the same MASK."""
    top = {"uint16": 65535, "int16": 32767, "float32": 70000.0, "compressed": 65535}[layout]
    dtype = {"uint16": np.uint16, "int16": np.int16, "float32": np.float32, "compressed": np.uint16}[layout]
    raw = rng.integers(600, 30000, SHAPE).astype(np.float64)
    raw[3, 4] = raw[7, 8] = raw[0, 0] = raw[0, -1] = top  # (0, 0) on the low edge, (0, -1) clamped
    raw[9, 9] = top - 1
    raw = raw.astype(dtype)
    path = tmp_path / "Light_sat.fits"
    if layout == "compressed":
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw, nina_header())]).writeto(path)
    else:
        write_raw(path, raw)
    option = float(top) if layout == "float32" else None  # float data: no level unless --saturation
    with fits.open(path) as hdul:  # the raw header, as stored
        saturation = resolve_saturation(dict(hdul[1 if layout == "compressed" else 0].header), option)
    assert saturation.level == top
    assert saturation.source == ("--saturation" if option else "data type")
    flat, flat_use = low_flat(tmp_path, rng)
    bias = write_master(tmp_path / "bias_high.fits", np.full(SHAPE, 20000.0))
    output = tmp_path / "out" / "Light_sat_cal.fits"
    output.parent.mkdir()
    task = task_for(
        path,
        masters | {"bias": bias, "flat": flat_use},
        output,
        hdu=1 if layout == "compressed" else 0,
        saturation=option,
        flat_low=0.5,
    )
    result = calibrate_frame(task)
    finish(result, output)
    data = read_clean(output)
    mask = fits.getdata(output, "MASK")
    wanted = expected_mask(raw, flat, top)
    np.testing.assert_array_equal(mask, wanted)
    np.testing.assert_array_equal(data.mask, wanted != 0)
    assert (mask[3, 4], mask[7, 8], mask[9, 9] & 8) == (8, 8, 0)
    assert (mask[0, 0], mask[0, -1]) == (8 | 16, 1 | 8 | 16)
    header = fits.getheader(output)
    counts = {"1": 2 * SHAPE[0], "2": 0, "4": 0, "8": 4, "16": int(np.count_nonzero(wanted & 16))}
    assert counts["16"] == 2 * SHAPE[0] + int(np.count_nonzero(flat[:, 0] < 0.5))
    assert header["NMASKED"] == int(np.count_nonzero(wanted))
    assert {bit: header[f"NMASK{bit}"] for bit in counts} == counts
    assert result.details["mask"] == {"flagged": header["NMASKED"], "bits": counts}
    assert result.details["saturation"] == {"status": "applied", **saturation.as_json(), "flagged": 4}
    assert (header["SATLEVEL"], header["FLATLOW"]) == (top, 0.5)
    mask_header = fits.getheader(output, "MASK")
    assert mask_header["MASKBIT8"] == "saturated in the raw frame (SATLEVEL)"
    assert mask_header["MASKBT16"] == "low flat response, below FLATLOW (vignetted)"
    history = joined_history(str(h) for h in header["HISTORY"])
    line = f"saturation level {saturation.describe()}: 4 raw pixels at or above it flagged in MASK (bit 8)"
    assert line in history
    low = f"low flat response: {counts['16']} pixels where the flat is below 0.5 flagged in MASK (bit 16)"
    assert low in history
    assert fitsverify_counts(output) == (0, 0)


def test_the_mask_of_a_trimmed_light_is_of_its_output_area(
    tmp_path: Path, rng: np.random.Generator, overscan_raw: tuple[Path, np.ndarray]
) -> None:
    """With overscan and trim, saturation is found on the raw values (before the overscan is subtracted)
    and the MASK covers the trimmed image: a saturated pixel of the overscan strip is not in it."""
    _, raw = overscan_raw
    raw = raw.copy()
    raw[2, 5] = raw[30, 40] = 65535  # in the trimmed area: columns 4-56 (1-based)
    raw[4, 65] = 65535  # in the overscan strip: not in the output
    raw[6, 6] = 64000
    header = fits.getheader(overscan_raw[0])
    path = write_raw(tmp_path / "Light_os_sat.fits", raw, header)
    flat = rng.normal(1.0, 0.02, TRIMMED)
    flat[:, -3:] = 0.3
    used = {"bias": write_prepared(tmp_path / "mb.fits", rng.normal(2.0, 1.0, TRIMMED), "bias")}
    used["flat"] = write_prepared(tmp_path / "mf.fits", flat, "flat")
    steps = OptionalSteps(overscan=PLAN, overscan_mode="auto")
    output = tmp_path / "Light_os_sat_cal.fits"
    task = task_for(path, used, output, dark=None, optional=steps)  # the level: 65535, the data type's
    result = calibrate_frame(task)
    finish(result, output)
    read_clean(output)
    mask = fits.getdata(output, "MASK")
    assert mask.shape == TRIMMED
    trimmed = raw[PLAN.trim.slices] if PLAN.trim is not None else raw
    np.testing.assert_array_equal(mask, expected_mask(trimmed, flat, 65535.0))
    assert (mask[2, 2], mask[30, 37], mask[6, 3]) == (8, 8, 0)
    header = fits.getheader(output)
    assert (header["NMASK8"], header["NMASK16"]) == (2, 3 * TRIMMED[0])
    assert result.details["saturation"]["flagged"] == 2
    assert fitsverify_counts(output) == (0, 0)


@pytest.mark.parametrize(
    ("cards", "dtype", "source", "level"),
    [
        ({"SATURATE": 40000.0}, np.uint16, "SATURATE", 40000.0),  # LCO's Sinistro writes it
        ({"SATURATE": "unavail", "DATAMAX": 50000}, np.uint16, "DATAMAX", 50000.0),  # SOAR's card passed over
        ({"BSCALE": 2.0, "BZERO": 10.0}, np.int16, "data type", 65544.0),  # read by astropy, scaled
        ({}, np.float32, "none", None),
    ],
)
def test_a_lights_level_comes_from_its_raw_header(
    tmp_path: Path,
    rng: np.random.Generator,
    masters: dict[str, MasterUse],
    cards: dict[str, Any],
    dtype: type,
    source: str,
    level: float | None,
) -> None:
    """The worker reads the level from the raw header as stored (a scaled frame's BZERO and BSCALE too,
    though astropy drops them once it scales the data); a float frame has none unless --saturation."""
    stored = rng.integers(100, 20000, SHAPE).astype(dtype)
    stored[1, 2] = np.iinfo(dtype).max if dtype != np.float32 else 70000
    stored[3, 4] = 50000 if dtype == np.uint16 else stored[3, 4]
    header = nina_header()
    for key, value in cards.items():
        header[key] = value
    path = tmp_path / "Light_level.fits"
    if "BSCALE" in cards:  # the stored values as they are, scaled by the header's BSCALE and BZERO
        primary = fits.PrimaryHDU(stored).header
        for key, value in header.items():
            primary[key] = value
        data = stored.astype(">i2").tobytes()
        path.write_bytes(primary.tostring().encode("ascii") + data + b"\0" * (-len(data) % 2880))
    else:
        fits.PrimaryHDU(stored, header).writeto(path)
    values = fits.getdata(path).astype(np.float64)
    output = tmp_path / "Light_level_cal.fits"
    result = calibrate_frame(task_for(path, masters, output))
    finish(result, output)
    record = result.details["saturation"]
    assert (record["source"], record["level"]) == (source, level)
    flagged = values >= level if level is not None else np.zeros(SHAPE, bool)
    assert record["flagged"] == int(flagged.sum()) == fits.getheader(output)["NMASK8"]
    mask = fits.getdata(output, "MASK")
    np.testing.assert_array_equal((mask & 8) != 0, flagged)
    if level is None:
        assert record["status"] == "not_available"
        assert "SATLEVEL" not in fits.getheader(output)
        assert "no pixel flagged (--saturation sets one)" in " ".join(
            joined_history(str(h) for h in fits.getheader(output)["HISTORY"])
        )
    else:
        assert fits.getheader(output)["SATLEVEL"] == level
    if cards.get("SATURATE") == "unavail":
        assert record["detail"] == "SATURATE = 'unavail' is not a positive number: not used"
    assert fitsverify_counts(output) == (0, 0)
