"""One light's calibration: the worker's read paths and failures, the output header, checksums, fitsverify."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from hypothesis import given
from hypothesis import strategies as st

from ccdcal.calfits import (
    _card_image,
    _history_images,
    clean_raw_header,
    encode_checksum,
    output_cards,
    output_header,
    write_calibrated,
)
from ccdcal.calibrate import FrameTask, MasterUse, calibrate_frame
from ccdcal.fitsfiles import add_history, set_card, sha256_file
from ccdcal.steps.light import be_words, calibrate_image, clamp_flat
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
    assert history[0] == "raw cards converted to their standard type: CRVAL1, EQUINOX, WCSAXES,"
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
