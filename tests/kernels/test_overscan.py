"""Overscan and trim: FITS sections as ccdproc reads them, the subtraction as ccdproc does it."""

from __future__ import annotations

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.modeling.models import Polynomial1D
from astropy.nddata import CCDData
from ccdproc.utils.slices import slice_from_string
from hypothesis import given
from hypothesis import strategies as st

from ccdcal.errors import UsageError
from ccdcal.kernels.overscan import (
    NO_OVERSCAN,
    OverscanMode,
    OverscanPlan,
    Section,
    apply_overscan,
    describe,
    parse_mode,
    parse_section,
    recorded_plan,
    resolve,
    signature_of_header,
    trimmed_header_changes,
)
from tests.conftest import real_set

SHAPE = (40, 60)  # lines, columns


@pytest.fixture
def raw() -> np.ndarray:
    """A 16-bit frame: a sloped bias level per line, signal, and an overscan strip in columns 51-60."""
    rng = np.random.default_rng(9)
    level = 1000 + 0.5 * np.arange(SHAPE[0])[:, None]
    image = level + rng.normal(0, 5, SHAPE)
    image[:, 3:48] += rng.uniform(100, 5000, (SHAPE[0], 45))
    return np.rint(image).astype(np.uint16)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1388:1432,1:1370]", Section(1388, 1432, 1, 1370)),
        ("[   4:  13,   1: 520]", Section(4, 13, 1, 520)),
        (" [ 18 : 1382 , 1:1370 ] ", Section(18, 1382, 1, 1370)),
        ("[*,1:10]", Section(1, 1432, 1, 10)),
    ],
)
def test_sections_are_fits_one_based_x_first(text: str, expected: Section) -> None:
    section = parse_section(text, (1370, 1432))
    assert section == expected
    data = np.arange(1370 * 1432).reshape(1370, 1432)
    np.testing.assert_array_equal(data[section.slices], data[slice_from_string(text, fits_convention=True)])


def test_a_single_number_is_one_column_or_line() -> None:
    # IRAF's meaning; ccdproc's slice_from_string reads "[7,*]" as the first 7 columns
    assert parse_section("[7,*]", (1370, 1432)) == Section(7, 7, 1, 1370)
    assert parse_section("[1:5, 3]", (10, 10)).shape == (1, 5)


@given(
    x0=st.integers(1, 30),
    nx=st.integers(0, 29),
    y0=st.integers(1, 20),
    ny=st.integers(0, 19),
    spaces=st.lists(st.sampled_from(["", " ", "  "]), min_size=6, max_size=6),
)
def test_sections_equal_ccdproc_slices(x0: int, nx: int, y0: int, ny: int, spaces: list[str]) -> None:
    a, b, c, d, e, f = spaces
    text = f"{a}[{b}{x0}:{x0 + nx}{c},{d}{y0}:{y0 + ny}{e}]{f}"
    shape = (50, 70)
    data = np.arange(shape[0] * shape[1]).reshape(shape)
    section = parse_section(text, shape)
    np.testing.assert_array_equal(data[section.slices], data[slice_from_string(text, fits_convention=True)])
    assert section.text == f"[{x0}:{x0 + nx},{y0}:{y0 + ny}]"
    assert parse_section(section.text, shape) == section


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1:10,1:5", "section '1:10,1:5' is not enclosed in square brackets"),
        ("[1:10]", "section '[1:10]' does not have two ranges (x, y)"),
        ("[10:1,1:5]", "section '[10:1,1:5]': x range 10:1 is empty or reversed"),
        ("[0:4,1:5]", "section '[0:4,1:5]': x range 0:4 is empty or reversed"),
        ("[1:61,1:5]", "section '[1:61,1:5]': x range ends at 61, beyond the image's 60"),
        ("[1:6,1:41]", "section '[1:6,1:41]': y range ends at 41, beyond the image's 40"),
        ("[a:6,1:4]", "section '[a:6,1:4]': x range 'a:6' is not first:last"),
        ("[1:6:2,1:4]", "section '[1:6:2,1:4]': x range '1:6:2' is not first:last"),
    ],
)
def test_bad_sections_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^section ") as raised:
        parse_section(text, SHAPE)
    assert str(raised.value) == message


def test_modes() -> None:
    assert parse_mode("auto") == OverscanMode("auto")
    assert parse_mode(" Median ") == OverscanMode("median")
    assert parse_mode("poly:3") == OverscanMode("poly", 3)
    assert parse_mode("poly:3").text == "poly:3"
    for bad in ("mean", "poly", "poly:x", "poly:10", ""):
        with pytest.raises(UsageError) as raised:
            parse_mode(bad)
        assert str(raised.value) == f"--overscan {bad!r}: use auto, off, median or poly:N (N from 0 to 9)"


def test_median_overscan_and_trim_equal_ccdproc_to_the_bit(raw: np.ndarray) -> None:
    values = {"BIASSEC": "[51:60,1:40]", "TRIMSEC": "[4:48, 1:40]"}
    plan = resolve(OverscanMode("auto"), values, SHAPE)
    assert plan.signature() == {"method": "median", "biassec": "[51:60,1:40]", "trimsec": "[4:48,1:40]"}
    assert plan.axis == 1
    image, level = apply_overscan(raw, plan)
    reference = ccdproc.trim_image(
        ccdproc.subtract_overscan(
            CCDData(raw.astype(np.float64), unit="adu"),
            fits_section="[51:60,1:40]",
            median=True,
            overscan_axis=None,
        ),
        fits_section="[4:48,1:40]",
    )
    np.testing.assert_array_equal(image, reference.data)
    assert image.shape == (40, 45)
    assert level == pytest.approx(float(np.median(np.median(raw[:, 50:].astype(float), axis=1))))


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_polynomial_overscan_equals_ccdproc(raw: np.ndarray, degree: int) -> None:
    plan = resolve(parse_mode(f"poly:{degree}"), {"BIASSEC": "[51:60,1:40]"}, SHAPE)
    assert plan.method == f"poly:{degree}"
    image, _ = apply_overscan(raw, plan)
    reference = ccdproc.subtract_overscan(
        CCDData(raw.astype(np.float64), unit="adu"),
        fits_section="[51:60,1:40]",
        median=True,
        model=Polynomial1D(degree),
        overscan_axis=1,
    )
    np.testing.assert_allclose(image, reference.data, rtol=1e-10)


def test_a_strip_along_the_bottom_is_collapsed_per_column() -> None:
    rng = np.random.default_rng(2)
    raw = (1000 + np.arange(30)[None, :] + rng.normal(0, 3, (20, 30))).astype(np.float64)
    plan = resolve(OverscanMode("median"), {"BIASSEC": "[1:30,17:20]"}, (20, 30))
    assert plan.axis == 0
    image, _ = apply_overscan(raw, plan)
    reference = ccdproc.subtract_overscan(
        CCDData(raw, unit="adu"), fits_section="[1:30,17:20]", median=True, overscan_axis=None
    )
    np.testing.assert_array_equal(image, reference.data)
    assert describe(plan, 1.0)[0][1] == "Overscan section is [1:30,17:20]: column-wise median, level 1"


def test_resolve_rules() -> None:
    auto, off = OverscanMode("auto"), OverscanMode("off")
    assert resolve(auto, {}, SHAPE) == NO_OVERSCAN
    assert not resolve(auto, {}, SHAPE).applies
    assert resolve(off, {"BIASSEC": "[51:60,1:40]", "TRIMSEC": "[4:48,1:40]"}, SHAPE) == NO_OVERSCAN
    trim_only = resolve(auto, {"DATASEC": "[4:48,1:40]"}, SHAPE)
    assert (trim_only.method, trim_only.trim) == ("none", Section(4, 48, 1, 40))
    assert resolve(auto, {"DATASEC": "[1:60,1:40]"}, SHAPE) == NO_OVERSCAN  # the whole frame
    preferred = resolve(auto, {"TRIMSEC": "[4:48,1:40]", "DATASEC": "[1:50,1:40]"}, SHAPE)
    assert preferred.trim == Section(4, 48, 1, 40)
    with pytest.raises(ValueError, match=r"\[|BIASSEC") as raised:
        resolve(OverscanMode("median"), {}, SHAPE)
    assert str(raised.value) == "--overscan median needs a BIASSEC keyword, and the header has none"
    with pytest.raises(ValueError, match=r"\[|BIASSEC") as raised:
        resolve(auto, {"BIASSEC": "[51:60,2:40]"}, SHAPE)
    assert str(raised.value) == (
        "BIASSEC [51:60,2:40] does not cover every image line of the 60x40 frame: its overscan cannot "
        "be subtracted line by line (use --overscan off)"
    )
    with pytest.raises(ValueError, match=r"\[|BIASSEC") as raised:
        resolve(auto, {"BIASSEC": "[45:60,1:40]", "TRIMSEC": "[4:48,1:40]"}, SHAPE)
    assert str(raised.value) == "BIASSEC [45:60,1:40] overlaps the trim section [4:48,1:40]"
    with pytest.raises(ValueError, match=r"\[|BIASSEC") as raised:
        resolve(auto, {"BIASSEC": "[51:70,1:40]"}, SHAPE)
    assert str(raised.value) == ("BIASSEC: section '[51:70,1:40]': x range ends at 70, beyond the image's 60")


@pytest.mark.parametrize("mode", ["auto", "poly:2"])
def test_a_recorded_plan_is_the_plan(mode: str) -> None:
    """What ``calibrations.steps`` and ``masters.parameters`` record of a plan (its signature and axis)
    gives that plan back (``ccdcal reproduce``); without the axis, the one resolve chooses."""
    values = {"BIASSEC": "[51:60,1:40]", "TRIMSEC": "[4:48,1:40]"}
    plan = resolve(parse_mode(mode), values, SHAPE)
    record = {"mode": mode, **plan.signature(), "axis": plan.axis, "level": 1200.5}
    assert recorded_plan(record, SHAPE) == plan
    assert recorded_plan({**plan.signature()}, SHAPE) == plan
    assert recorded_plan({"method": "none", "biassec": None, "trimsec": "[4:48,1:40]"}, SHAPE) == resolve(
        OverscanMode("auto"), {"TRIMSEC": "[4:48,1:40]"}, SHAPE
    )
    with pytest.raises(ValueError, match=r"^overscan method 'spline' is not none, median or poly:N$"):
        recorded_plan({"method": "spline"}, SHAPE)


def test_real_saao_frame_with_spaces_in_biassec() -> None:
    path = real_set("astropy-ccdproc") / "a8280271.fits"
    with fits.open(path) as hdul:
        header, raw = hdul[0].header, hdul[0].data.astype(np.float64)
    plan = resolve(OverscanMode("auto"), dict(header), raw.shape)
    assert plan.signature() == {"method": "median", "biassec": "[4:13,1:520]", "trimsec": "[17:528,1:520]"}
    image, _ = apply_overscan(raw, plan)
    reference = ccdproc.trim_image(
        ccdproc.subtract_overscan(
            CCDData(raw, unit="adu"), fits_section=header["BIASSEC"], median=True, overscan_axis=None
        ),
        fits_section=header["TRIMSEC"],
    )
    np.testing.assert_array_equal(image, reference.data)


def test_trimmed_header_moves_the_wcs_and_drops_the_raw_sections() -> None:
    header = fits.Header()
    header["BIASSEC"] = "[51:60,1:40]"
    header["TRIMSEC"] = "[4:48,3:40]"
    header["DATASEC"] = "[4:48,3:40]"
    header["CRPIX1"] = 30.0
    header["CRPIX2"] = "20.5"
    header["CRPIX1A"] = 10
    header["LTV1"] = -2.0
    plan = OverscanPlan("median", Section(51, 60, 1, 40), Section(4, 48, 3, 40), 1)
    lines = trimmed_header_changes(header, plan)
    assert "BIASSEC" not in header
    assert "TRIMSEC" not in header
    assert header["DATASEC"] == "[1:45,1:38]"
    assert (header["CRPIX1"], header["CRPIX2"], header["CRPIX1A"]) == (27.0, 18.5, 7.0)
    assert (header["LTV1"], header["LTV2"]) == (-5.0, -2.0)
    assert lines == [
        "trimmed: TRIMSEC, BIASSEC removed (they described the raw frame)",
        "trimmed: CRPIX1, CRPIX2, CRPIX1A moved by the trim offset (3, 2)",
    ]
    assert trimmed_header_changes(fits.Header(), NO_OVERSCAN) == []


def test_masters_record_their_preparation() -> None:
    plan = OverscanPlan("poly:2", Section(51, 60, 1, 40), Section(4, 48, 1, 40), 1)
    cards = {k: v for k, v, _ in describe(plan, 1000.25)}
    assert cards == {
        "OVERSCAN": "Overscan section is [51:60,1:40]: poly:2 fit of row medians, level 1000.25",
        "TRIM": "Trim data section is [4:48,1:40]",
        "OVSCMETH": "poly:2",
        "OVSCSEC": "[51:60,1:40]",
        "TRIMSECT": "[4:48,1:40]",
    }
    assert signature_of_header(cards) == plan.signature()
    assert signature_of_header({}) == NO_OVERSCAN.signature()
