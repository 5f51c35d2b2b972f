"""Header dialects → normalised frame columns (pure functions)."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import PurePath

import pytest
from astropy.io import fits
from astropy.io.fits.card import Undefined
from astropy.io.fits.verify import VerifyError
from hypothesis import assume, given
from hypothesis import strategies as st

from ccdcal.ingestion.cards import header_values, parse_header
from ccdcal.ingestion.normalise import (
    CONSULTED_KEYS,
    binning,
    celsius,
    folders_between,
    normalise,
    normalise_imagetyp,
    parse_date_obs,
    temp_key,
    type_from_folders,
)
from tests.ingestion.test_cards import COMMENTS, PROPERTY, VALUES, header_bytes


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Bias Frame", "bias"),
        ("BIAS", "bias"),
        ("zero", "bias"),
        ("Dark Frame", "dark"),
        ("DARK", "dark"),
        ("Flat Field", "flat"),
        ("Flat Frame", "flat"),
        ("FLAT", "flat"),
        ("SKYFLAT", "flat"),
        ("DOMEFLAT", "flat"),
        ("Twilight Flat", "flat"),
        ("Light Frame", "light"),
        ("LIGHT", "light"),
        ("OBJECT", "light"),
        ("object", "light"),
        ("SCIENCE", "light"),
        ("DarkFlat", "dark"),
        ("Dark Flat", "dark"),
        ("FlatDark", "dark"),
        ("Flat Dark", "dark"),
        ("flat_field", "flat"),
        ("Tricolor Image", None),
        ("", None),
        (None, None),
    ],
)
def test_imagetyp_dialects(text: str | None, kind: str | None) -> None:
    assert normalise_imagetyp(text) == kind


def test_type_from_the_nearest_folder_that_names_one() -> None:
    root = PurePath("/data/night")
    path = PurePath("/data/night/darks/300s/frame.fits")
    assert folders_between(path, root) == ["300s", "darks", "night"]
    assert type_from_folders(folders_between(path, root)) == "dark"
    assert type_from_folders(["M42", "LIGHT"]) == "light"
    assert type_from_folders(["Flat"]) == "flat"
    assert type_from_folders(["BIAS"]) == "bias"
    assert type_from_folders(["session1", "raw"]) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"XBINNING": 2, "YBINNING": 2}, (2, 2)),
        ({"XBINNING": 1}, (1, 1)),
        ({"BINNING": "2x2"}, (2, 2)),
        ({"CCDSUM": "3 3"}, (3, 3)),
        ({"CCDSUM": "1 2"}, (1, 2)),
        ({}, (None, None)),
    ],
)
def test_binning_dialects(values: dict, expected: tuple) -> None:
    assert binning(values) == expected


def test_temperatures_above_150_are_kelvin() -> None:
    assert celsius(180.2) == pytest.approx(-92.95)
    assert celsius(-20.0) == -20.0
    assert celsius("NaN") is None
    assert celsius(None) is None


def test_temp_key_prefers_set_point_then_rounds() -> None:
    assert temp_key(-10.0, -9.6) == -10.0
    assert temp_key(None, -9.6) == -10.0
    assert temp_key(None, 0.189) == 0.0
    assert temp_key(None, 9.5) == 10.0
    assert temp_key(None, None) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"DATE-OBS": "2026-03-14T21:03:11.123456"}, dt.datetime(2026, 3, 14, 21, 3, 11, 123456)),
        ({"DATE-OBS": "2019-09-06T19:39:32.937"}, dt.datetime(2019, 9, 6, 19, 39, 32, 937000)),
        ({"DATE-OBS": "2019-03-26", "UTCSTART": "01:04:25.00"}, dt.datetime(2019, 3, 26, 1, 4, 25)),
        ({"DATE-OBS": "2013-07-13", "UT": "00:57:33"}, dt.datetime(2013, 7, 13, 0, 57, 33)),
        (
            {"DATE-OBS": "2022-10-23", "TIME-OBS": "01:29:18.000"},
            dt.datetime(2022, 10, 23, 1, 29, 18),
        ),
        ({"DATE-OBS": "2022-10-23"}, dt.datetime(2022, 10, 23)),
        ({"DATE-OBS": "14/03/98"}, dt.datetime(1998, 3, 14)),
        ({"DATE-OBS": "2026-03-14T21:03:11.1234567Z"}, dt.datetime(2026, 3, 14, 21, 3, 11, 123456)),
        ({"DATE-OBS": "not a date"}, None),
        ({"DATE-OBS": "2026-13-45"}, None),
        ({}, None),
    ],
)
def test_date_obs_dialects(values: dict, expected: dt.datetime | None) -> None:
    assert parse_date_obs(values) == expected


def test_normalise_a_nina_header() -> None:
    columns = normalise(
        {
            "IMAGETYP": "DARK",
            "EXPOSURE": 60.0,
            "EXPTIME": 60.0,
            "XBINNING": 2,
            "YBINNING": 2,
            "GAIN": 120,
            "OFFSET": 30,
            "SET-TEMP": -10.0,
            "CCD-TEMP": -9.8,
            "INSTRUME": "ZWO ASI294MM Pro",
            "READOUTM": "Normal",
            "FILTER": " Ha ",
            "EGAIN": 0.98,
            "NAXIS1": 320,
            "NAXIS2": 240,
            "BITPIX": 16,
            "DATE-OBS": "2026-03-14T21:03:11",
        }
    )
    assert columns == {
        "imagetyp": "dark",
        "imagetyp_header": "DARK",
        "imagetyp_source": "header",
        "exptime": 60.0,
        "ccd_temp": -9.8,
        "set_temp": -10.0,
        "temp_key": -10.0,
        "xbinning": 2,
        "ybinning": 2,
        "gain": 120.0,
        "offset": 30.0,
        "filter": "Ha",
        "instrument": "ZWO ASI294MM Pro",
        "readout_mode": "Normal",
        "naxis1": 320,
        "naxis2": 240,
        "bitpix": 16,
        "date_obs": dt.datetime(2026, 3, 14, 21, 3, 11),
    }


def test_egain_is_not_gain_and_strings_are_numbers_only_where_numeric() -> None:
    columns = normalise({"EGAIN": 2.3, "EXPTIME": "40      ", "FILTER1": "J", "BLKLEVEL": 100})
    assert columns["gain"] is None
    assert columns["exptime"] == 40.0
    assert columns["filter"] == "J"
    assert columns["offset"] == 100.0


def test_folder_type_used_only_when_the_header_names_none() -> None:
    assert normalise({}, "bias")["imagetyp"] == "bias"
    assert normalise({}, "bias")["imagetyp_source"] == "folder"
    assert normalise({"IMAGETYP": "Light Frame"}, "flat")["imagetyp"] == "light"
    assert normalise({"IMAGETYP": "Tricolor Image"}, None)["imagetyp"] is None
    assert normalise({"IMAGETYP": "Tricolor Image"}, None)["imagetyp_header"] == "Tricolor Image"


# -- properties: any card through the parser and the normaliser ------------------------------------------

CONSULTED = sorted(CONSULTED_KEYS)
ASCII = st.characters(min_codepoint=0, max_codepoint=127)


@st.composite
def consulted_cards(draw: st.DrawFn) -> str:
    """A card of a keyword the normaliser reads, with any value: numbers, strings, T/F, dates, junk."""
    keyword = draw(st.sampled_from(CONSULTED))
    value = draw(
        st.one_of(
            VALUES,
            st.sampled_from(
                ["'abc'", "-60", "NaN", "'NaN'", "1e400", "'2x2'", "'2 2'", "'2026-03-14T19:20:15'"]
            ),
            st.text(ASCII, max_size=70),
        )
    )
    indicator = draw(st.sampled_from(["= ", "=", "  "]))
    return f"{keyword:8}{indicator}{value}{draw(COMMENTS)}"[:80].ljust(80)


def _normalised(images: list[str]) -> dict[str, object]:
    cards, _ = parse_header(header_bytes(*images))
    return normalise(header_values(cards, CONSULTED_KEYS), "light")


@PROPERTY
@given(
    st.lists(st.one_of(st.text(ASCII, min_size=80, max_size=80), consulted_cards()), min_size=1, max_size=8)
)
def test_any_ascii_cards_never_raise_in_parser_or_normaliser(images: list[str]) -> None:
    assume(not any(image[:3] == "END" for image in images))
    columns = _normalised(images)
    assert set(columns) >= {"imagetyp", "exptime", "ccd_temp", "filter", "date_obs"}
    assert columns["exptime"] is None or columns["exptime"] >= 0


@PROPERTY
@given(st.lists(consulted_cards(), min_size=1, max_size=6))
def test_normalised_values_agree_with_astropy_where_it_parses_the_cards(images: list[str]) -> None:
    assume(not any(image[:3] == "END" for image in images))
    values: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header = fits.Header.fromstring(header_bytes(*images).decode("ascii"))
            for card in header.cards:
                keyword = card.keyword
                value = card.value
                assume(card.keyword == keyword)  # astropy renamed it (a record-valued card)
                if keyword in CONSULTED_KEYS and keyword not in values:
                    values[keyword] = None if isinstance(value, Undefined) else value
        except (VerifyError, ValueError):
            assume(False)  # astropy cannot parse these cards: only "never raises" applies
    assert _normalised(images) == normalise(values, "light")
