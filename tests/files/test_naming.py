"""Output file names: the seed's master names, numbers without ``.0``, ``NA``, sanitised filters, versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccdcal.files.naming import calibrated_name, master_name, number_text, safe_token, versioned


@pytest.mark.parametrize(
    ("kind", "keys", "expected"),
    [
        (
            "bias",
            {"xbinning": 2, "ybinning": 2, "gain": 120.0, "exptime": 0.0, "temp_key": -20.0},
            "master_bias_b2x2_g120_sNA_C-20.fits",
        ),
        (
            "dark",
            {"xbinning": 2, "ybinning": 2, "gain": 120.0, "exptime": 10.0, "temp_key": -20.0},
            "master_dark_b2x2_g120_10s_C-20.fits",
        ),
        (
            "flat",
            {"xbinning": 1, "ybinning": 1, "gain": 100.0, "exptime": 3.0, "temp_key": -10.0, "filter": "Ha"},
            "master_flat_b1x1_g100_sNA_C-10_Ha.fits",
        ),
        (
            "dark",
            {"xbinning": 1, "ybinning": 1, "gain": 100, "exptime": 2.5, "temp_key": -15.0},
            "master_dark_b1x1_g100_2.5s_C-15.fits",
        ),
        (
            "dark",
            {"xbinning": 1, "ybinning": 1, "gain": None, "exptime": 300.0, "temp_key": None},
            "master_dark_b1x1_gNA_300s_CNA.fits",
        ),
        (
            "bias",
            {"xbinning": None, "ybinning": None, "gain": None, "exptime": None, "temp_key": None},
            "master_bias_bNAxNA_gNA_sNA_CNA.fits",
        ),
        (
            "flat",
            {"xbinning": 1, "ybinning": 1, "gain": 0.0, "exptime": None, "temp_key": 0.0, "filter": None},
            "master_flat_b1x1_g0_sNA_C0.fits",
        ),
    ],
)
def test_master_names(kind: str, keys: dict, expected: str) -> None:
    assert master_name(kind, **keys) == expected


def test_a_dark_holding_the_bias_is_marked() -> None:
    name = master_name("dark", xbinning=2, ybinning=2, gain=120, exptime=10, temp_key=-20, includes_bias=True)
    assert name == "master_dark_b2x2_g120_10s_C-20_withbias.fits"


def test_only_flats_carry_the_filter() -> None:
    keys = {"xbinning": 1, "ybinning": 1, "gain": 100, "exptime": 10, "temp_key": -10, "filter": "Ha"}
    assert master_name("dark", **keys) == "master_dark_b1x1_g100_10s_C-10.fits"
    assert master_name("bias", **keys) == "master_bias_b1x1_g100_sNA_C-10.fits"


@pytest.mark.parametrize(
    ("filter_", "token"),
    [("../../x", "x"), ("O III", "OIII"), ("H-alpha+", "H-alpha+"), ("/", "NA"), ("Ha/../../etc", "Haetc")],
)
def test_filters_are_sanitised(filter_: str, token: str, tmp_path: Path) -> None:
    name = master_name("flat", xbinning=1, ybinning=1, gain=100, exptime=1, temp_key=-10, filter=filter_)
    assert name == f"master_flat_b1x1_g100_sNA_C-10_{token}.fits"
    assert "/" not in name
    assert ".." not in name.removesuffix(".fits")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_safe_token_keeps_letters_digits_minus_plus_only() -> None:
    assert safe_token("'; DROP TABLE frames; --") == "DROPTABLEframes--"
    assert safe_token(None) == "NA"
    assert safe_token("é") == "NA"
    assert len(safe_token("x" * 100)) == 40


@pytest.mark.parametrize(
    ("value", "text"),
    [(120.0, "120"), (-20.0, "-20"), (-15, "-15"), (2.5, "2.5"), (0.125, "0.125"), (None, "NA"), (-0.0, "0")],
)
def test_number_text(value: float | None, text: str) -> None:
    assert number_text(value) == text


def test_number_text_tiny_and_non_finite() -> None:
    assert number_text(5e-8) == "5e-08"
    assert number_text(float("nan")) == "NA"
    assert number_text(float("inf")) == "NA"


def test_versioned_adds_v2_then_v3(tmp_path: Path) -> None:
    name = "master_dark_b2x2_g120_10s_C-20.fits"
    assert versioned(tmp_path, name) == tmp_path / name
    (tmp_path / name).touch()
    assert versioned(tmp_path, name) == tmp_path / "master_dark_b2x2_g120_10s_C-20_v2.fits"
    (tmp_path / "master_dark_b2x2_g120_10s_C-20_v2.fits").touch()
    assert versioned(tmp_path, name).name == "master_dark_b2x2_g120_10s_C-20_v3.fits"


def test_versioned_respects_names_taken_in_the_catalog(tmp_path: Path) -> None:
    name = "master_bias_b1x1_g100_sNA_C-10.fits"
    taken = {str(tmp_path / name), str(tmp_path / "master_bias_b1x1_g100_sNA_C-10_v2.fits")}
    assert versioned(tmp_path, name, taken).name == "master_bias_b1x1_g100_sNA_C-10_v3.fits"


@pytest.mark.parametrize(
    ("raw", "out"),
    [
        ("/raw/LIGHT/Light_001.fits", "Light_001_cal.fits"),
        ("m51.FIT", "m51_cal.fits"),
        ("x.fits.fz", "x_cal.fits"),
        ("x.fits.gz", "x_cal.fits"),
        ("a.b.fts", "a.b_cal.fits"),
    ],
)
def test_calibrated_name(raw: str, out: str) -> None:
    assert calibrated_name(raw) == out
