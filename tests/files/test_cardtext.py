"""Text ccdcal writes into cards reads back exactly (ccdcal.files.cardtext; docs/design.md, Files)."""

from __future__ import annotations

import warnings

import pytest
from astropy.io import fits
from hypothesis import example, given
from hypothesis import strategies as st

from ccdcal.files.cardtext import (
    HISTORY_TEXT,
    card_name,
    history_lines,
    history_pieces,
    name_from_card,
)
from ccdcal.files.fitsio import add_history, set_card
from ccdcal.trace.headertrace import calibrated_from, header_lines

#: File names as a file system may hold them: any characters but ``/`` and NUL (the undecodable bytes
#: os.fsdecode gives as surrogates are in the examples).
NAMES = st.text(
    st.characters(exclude_characters="/\x00", exclude_categories=("Cs",)), min_size=1, max_size=300
)
SHA = "0123456789abcdef" * 4


def through_a_file(header: fits.Header) -> fits.Header:
    """The header as it reads back from its FITS text."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        return fits.Header.fromstring(header.tostring())


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("Light_001.fits", "Light_001.fits"),
        ("M 51 light 1.fits", "M 51 light 1.fits"),
        ('it\'s a "light".fits', 'it\'s a "light".fits'),
        ("Lumière_星雲_Ω.fits", "Lumi%C3%A8re_%E6%98%9F%E9%9B%B2_%CE%A9.fits"),
        ("flat 100%.fits", "flat 100%25.fits"),
        ("two\nlines.fits", "two%0Alines.fits"),
        ("back\\slash.fits", "back\\slash.fits"),
        ("  padded  ", "  padded%20%20"),
        ("caf\udce9.fits", "caf%E9.fits"),  # an undecodable byte, as os.fsdecode gives it
    ],
)
def test_names_are_written_as_printable_ascii_and_read_back(name: str, written: str) -> None:
    assert card_name(name) == written
    assert name_from_card(written) == name


@given(NAMES)
@example("x" * 250 + ".fits")
@example("ccdcal: calibrated from a.fits sha256 " + SHA + ".fits")
@example("\\" * 71 + "é")
@example("caf\udce9 \udcff.fits")
def test_a_raw_light_named_in_history_reads_back_exactly(name: str) -> None:
    """The ``calibrated from NAME sha256 HEX`` line of any name, cut over HISTORY cards and read again."""
    header = fits.Header()
    header["CCDCALV"] = "0"
    add_history(
        header, ["raw cards converted: CRVAL1", f"ccdcal: calibrated from {card_name(name)} sha256 {SHA}"]
    )
    add_history(header, ["pixels: (light - bias - dark x scale) / flat, float32"])
    assert calibrated_from(through_a_file(header)) == (name, SHA)


@given(NAMES)
def test_an_input_named_in_imcmb_reads_back_exactly(name: str) -> None:
    header = fits.Header()
    set_card(header, "IMCMB001", card_name(name))
    set_card(header, "IMSHA001", SHA)
    assert name_from_card(through_a_file(header)["IMCMB001"]) == name


@given(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300), max_size=5))
def test_history_lines_read_back_as_written(lines: list[str]) -> None:
    """Printable ASCII lines (trailing blanks are dropped) come back from the cards unchanged."""
    header = fits.Header()
    add_history(header, lines)
    assert all(len(str(card.value)) <= HISTORY_TEXT for card in header.cards)
    assert header_lines(through_a_file(header)) == [line.rstrip() for line in lines]


def test_long_lines_are_cut_after_a_space_and_marked() -> None:
    pieces = history_pieces(f"bias subtracted: master_bias_b2x2_g120_sNA_C-10.fits sha256 {SHA}")
    assert pieces == ["bias subtracted: master_bias_b2x2_g120_sNA_C-10.fits sha256 \\", SHA]
    assert history_lines(pieces) == [f"bias subtracted: master_bias_b2x2_g120_sNA_C-10.fits sha256 {SHA}"]
    assert history_pieces("a path C:\\data\\") == ["a path C:\\\\data\\\\"]
    assert history_lines(history_pieces("a path C:\\data\\")) == ["a path C:\\data\\"]


def test_history_text_is_ascii() -> None:
    assert history_pieces("-10 °C ±2, ΔT 0.5 → ok, tab\there") == ["-10 C +/-2, dT 0.5 -> ok, tab?here"]


def test_a_card_that_is_not_history_ends_a_line_cut_short() -> None:
    assert history_lines(["first \\", None, "second"]) == ["first ", "second"]
