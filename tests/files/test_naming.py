"""Output file names: the seed's master names, numbers without ``.0``, ``NA``, sanitised filters, versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccdcal.files.naming import (
    calibrated_name,
    free_master_name,
    group_hash,
    master_name,
    master_stems,
    number_text,
    safe_token,
)


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


KEYS = {"xbinning": 2, "ybinning": 2, "gain": 120.0, "temp_key": -10.0, "instrument": "ZWO ASI294MM Pro"}
BASE = "master_bias_b2x2_g120_sNA_C-10"


def nothing(name: str) -> bool:
    return False


def test_the_stems_a_group_may_take() -> None:
    stems = master_stems("bias", KEYS)
    digest = group_hash("bias", KEYS, False)
    assert stems == [
        BASE,
        f"{BASE}_ZWOASI294MMPro",
        f"{BASE}_h{digest[:6]}",
        f"{BASE}_h{digest[:10]}",
        f"{BASE}_h{digest[:16]}",
        f"{BASE}_h{digest}",
    ]
    flat = master_stems("flat", {**KEYS, "filter": "H a"}, includes_bias=False)
    assert flat[1] == "master_flat_b2x2_g120_sNA_C-10_Ha_ZWOASI294MMPro"
    dark = master_stems("dark", {**KEYS, "exptime": 60.0}, includes_bias=True)
    assert dark[:2] == [
        "master_dark_b2x2_g120_60s_C-10_withbias",
        "master_dark_b2x2_g120_60s_C-10_ZWOASI294MMPro_withbias",
    ]
    assert len(master_stems("bias", {**KEYS, "instrument": "A" * 40})[1]) == len(BASE) + 1 + 16
    assert master_stems("bias", {**KEYS, "instrument": None})[1].startswith(f"{BASE}_h")
    assert group_hash("bias", KEYS, False) != group_hash("bias", {**KEYS, "offset": 30.0}, False)


def test_a_new_group_takes_the_plain_name_or_its_token() -> None:
    stems = master_stems("bias", KEYS)
    assert free_master_name(stems, [], [], 1, nothing) == f"{BASE}.fits"
    taken = [f"{BASE}.fits", f"{BASE}_v2.fits"]
    assert free_master_name(stems, [], taken, 1, nothing) == f"{BASE}_ZWOASI294MMPro.fits"
    both = [*taken, f"{BASE}_ZWOASI294MMPro.fits"]
    assert free_master_name(stems, [], both, 1, nothing) == f"{stems[2]}.fits"
    on_disk = {f"{BASE}.fits"}.__contains__  # a file the catalog does not know holds the name too
    assert free_master_name(stems, [], [], 1, on_disk) == f"{BASE}_ZWOASI294MMPro.fits"


def test_a_group_keeps_its_name_and_vn_is_its_version() -> None:
    stems = master_stems("bias", KEYS)
    token = f"{BASE}_ZWOASI294MMPro"
    ours = [f"{token}.fits", f"{token}_v2.fits"]
    assert free_master_name(stems, ours, [f"{BASE}.fits"], 3, nothing) == f"{token}_v3.fits"
    assert free_master_name(stems, [f"{BASE}.fits"], [], 2, nothing) == f"{BASE}_v2.fits"
    # a file the catalog does not know has the version's name: the next number, still this group's
    assert (
        free_master_name(stems, [f"{BASE}.fits"], [], 2, {f"{BASE}_v2.fits"}.__contains__)
        == f"{BASE}_v3.fits"
    )


def test_a_name_that_looks_like_a_version_of_another_is_not_taken() -> None:
    """A flat of filter ``v2`` would read as version 2 of the flat without a filter (and the reverse)."""
    plain = master_stems("flat", {**KEYS, "filter": None})
    v2 = master_stems("flat", {**KEYS, "filter": "v2"})
    assert v2[0] == f"{plain[0]}_v2"
    assert free_master_name(v2, [], [f"{plain[0]}.fits"], 1, nothing) == f"{plain[0]}_v2_ZWOASI294MMPro.fits"
    assert (
        free_master_name(plain, [], [f"{plain[0]}_v2.fits"], 1, nothing) == f"{plain[0]}_ZWOASI294MMPro.fits"
    )


def test_every_name_held_is_an_error() -> None:
    with pytest.raises(FileExistsError, match="no free name for master_bias"):
        free_master_name(master_stems("bias", KEYS), [], [], 1, lambda name: True)


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
