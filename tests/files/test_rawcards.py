"""Raw cards made FITS-valid (ccdcal.files.rawcards): every card fitsverify rejects whose value a raw header
can hold is converted or left out, with a HISTORY line naming it, and the output passes fitsverify."""

from __future__ import annotations

import io
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from ccdcal.files.calibrated import output_cards, write_calibrated
from ccdcal.files.rawcards import clean_raw_header, fits_date
from ccdcal.kernels.light import be_words
from tests.conftest import fitsverify_counts


def raw_header(*images: str) -> fits.Header:
    """A raw 16-bit header holding ``images`` as written (astropy would refuse to write most of them)."""
    text = fits.PrimaryHDU(np.zeros((4, 4), np.uint16)).header.tostring(endcard=False, padding=False)
    text += "".join(image.ljust(80)[:80] for image in images) + "END".ljust(80)
    text += " " * (-len(text) % 2880)
    data = np.zeros((4, 4), ">i2").tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(io.BytesIO(text.encode("latin-1") + data + bytes(-len(data) % 2880))) as hdul:
            return hdul[0].header.copy()


def calibrated(tmp_path: Path, header: fits.Header) -> Path:
    """A calibrated output written from ``header`` (zero pixels), in ``tmp_path``."""
    image = np.zeros((8, 8), np.float32)
    words = np.empty(64, np.uint32)
    total = be_words(image, words)
    cards = output_cards(header, (8, 8), [("BIASCOR", "b.fits", "master bias subtracted")], ["a step"])
    path, _ = write_calibrated(tmp_path, "out.fits", cards, words, total, None)
    return path


#: (raw card, what the output holds: the card as written, or None when left out, and the HISTORY text).
CASES = [
    # impossible dates, in every DATE... keyword fitsverify checks
    ("DATE-OBS= '2026-02-30T25:61:61'", None, "DATE-OBS ('2026-02-30T25:61:61' is an impossible date"),
    ("DATE    = '2026-02-29'", None, "DATE ('2026-02-29' is an impossible date or time)"),
    ("DATE-END= '2026-13-01T00:00:00'", None, "DATE-END ('2026-13-01T00:00:00' is an impossible"),
    ("DATE-BEG= '2026-01-01T24:00:00'", None, "DATE-BEG ('2026-01-01T24:00:00' is an impossible"),
    ("DATE-AVG= '2026-01-01T23:59:61'", None, "DATE-AVG ('2026-01-01T23:59:61' is an impossible"),
    ("DATEREF = '1900-02-29'", None, "DATEREF ('1900-02-29' is an impossible date or time)"),
    ("DATE_OBS= '32/12/99'", None, "DATE_OBS ('32/12/99' is an impossible date or time)"),
    ("DATE-LOC= '2026-02-28T21:00:00+02:00'", None, "DATE-LOC ('2026-02-28T21:00:00+02:00' has a time zone"),
    ("DATE-OBS= 'yesterday'", None, "DATE-OBS ('yesterday' is not an ISO date)"),
    ("DATE-OBS=              2026.5", None, "DATE-OBS (2026.5 is not a date string)"),
    ("DATE-OBS=", None, "DATE-OBS (no value)"),
    # ISO dates in forms CFITSIO does not read: written in the standard form
    (
        "DATE-OBS= '2026-02-28 21:05:09'",
        "DATE-OBS= '2026-02-28T21:05:09'",
        "'2026-02-28 21:05:09' written as",
    ),
    ("DATE-OBS= '2026-02-28T21:05'", "DATE-OBS= '2026-02-28T21:05:00'", "'2026-02-28T21:05' written as"),
    ("DATE-END= '2026-02-28T21:05:09.5Z'", "DATE-END= '2026-02-28T21:05:09.5'", "09.5Z' written as"),
    ("DATE-BEG= '2026-02-28T21:05:09 UTC'", "DATE-BEG= '2026-02-28T21:05:09'", "09 UTC' written as"),
    ("DATE    = ' 2026-02-28'", "DATE    = '2026-02-28'", "DATE ' 2026-02-28' written as '2026-02-28'"),
    # valid dates stay as they are
    ("DATE-OBS= '2024-02-29T23:59:60.5'", "DATE-OBS= '2024-02-29T23:59:60.5'", None),
    ("DATE-OBS= '31/12/99'", "DATE-OBS= '31/12/99'", None),
    # numbers fitsverify cannot read
    (
        "FOCUSPOS=                1.5e3 / steps",
        "FOCUSPOS=               1500.0 / steps",
        "standard form: FOCUSPOS",
    ),
    ("AIRMASS =                  NaN", None, "AIRMASS (NaN is not a finite number)"),
    ("SKYTEMP =                 -inf", None, "SKYTEMP (-inf is not a finite number)"),
    ("CRVAL1  =                1e400", None, "CRVAL1 (inf is not a finite number)"),
    # reserved keywords of another type
    ("MJD-OBS = '61099.5'", "MJD-OBS =              61099.5", "standard type: MJD-OBS"),
    ("MJD-AVG = 'abc'", None, "MJD-AVG (not a number)"),
    ("EPOCH   = 'J2000'", None, "EPOCH (not a number)"),
    ("WCSAXES =                  2.0", "WCSAXES =                    2", "standard type: WCSAXES"),
    ("SSYSOBS =                    1", "SSYSOBS = '1       '", "standard type: SSYSOBS"),
    ("OBJECT  =                    T", "OBJECT  = 'True    '", "standard type: OBJECT"),
    # text outside printable ASCII, a keyword not left-justified, text after a value
    ("COMMENT written\tby a tab", "COMMENT written?by a tab", "made ASCII (other characters as ?): COMMENT"),
    ("OBSNOTE = 'tab\there'", "OBSNOTE = 'tab?here'", "made ASCII (other characters as ?): OBSNOTE"),
    ("   FOO  =                    1", "FOO     =                    1", "standard form: FOO"),
    ("BAR     = 'a'b'", "BAR     = 'a''b    '", "standard form: BAR"),
]


@pytest.mark.parametrize(
    ("raw", "written", "history"), CASES, ids=[c[0][:8].strip() + c[0][9:30] for c in CASES]
)
def test_each_card_fitsverify_rejects_is_converted_or_left_out(
    tmp_path: Path, raw: str, written: str | None, history: str | None
) -> None:
    header = raw_header(raw, "OBSERVER= 'kept as it is'")
    cards, notes = clean_raw_header(header)
    images = [card.image.rstrip() for card in cards]
    keyword = raw[:8].strip()
    if written is None:
        assert not any(image.startswith(keyword.ljust(8)) for image in images), images
    else:
        assert written.rstrip() in images
    assert "OBSERVER= 'kept as it is'" in images
    if history is None:
        assert notes == []
    else:
        assert any(history in note for note in notes), notes
    path = calibrated(tmp_path, header)
    assert fitsverify_counts(path)[1] == 0
    shown = " ".join(str(line) for line in fits.getheader(path)["HISTORY"])
    assert keyword in shown or history is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        CCDData.read(path, unit="adu")


def test_all_at_once(tmp_path: Path) -> None:
    """Every case in one header: one output, 0 fitsverify errors."""
    path = calibrated(tmp_path, raw_header(*(raw for raw, _, _ in CASES)))
    assert fitsverify_counts(path)[1] == 0


#: Date texts and what fitsverify says of them (True: accepted as it is).
DATES = {
    "2026-02-28": True,
    "2026-02-28T21:05:09": True,
    "2026-02-28T21:05:09.123456789": True,
    "2026-02-28T21:05:09.": True,
    "2024-02-29T23:59:60.999": True,
    "2000-02-29": True,
    "0000-01-01": True,
    "9999-12-31T23:59:59": True,
    "21:05:09": True,
    "31/12/99": True,
    "1900-02-29": False,
    "2026-02-29": False,
    "2026-04-31": False,
    "2026-00-10": False,
    "2026-02-28T24:00:00": False,
    "2026-02-28T23:60:00": False,
    "2026-02-28T23:59:61": False,
    "2026-2-28": False,
    "12026-02-28": False,
    "29/02/99": False,
    "00/01/99": False,
    "2026-02-28T21:05": False,
    "2026-02-28 21:05:09": False,
    "2026-02-28T21:05:09Z": False,
    "": False,
}


@pytest.mark.parametrize(("text", "accepted"), DATES.items())
def test_fits_date_agrees_with_fitsverify(tmp_path: Path, text: str, accepted: bool) -> None:
    """A date :func:`fits_date` keeps as it is passes fitsverify; one it changes or refuses does not."""
    assert (fits_date(text) == text) is accepted
    exe = shutil.which("fitsverify")
    if exe is None:
        pytest.skip("fitsverify (HEASARC) is not installed: apt-get install fitsverify")
    path = tmp_path / "date.fits"
    header = fits.PrimaryHDU(np.zeros((4, 4), np.float32)).header.tostring(endcard=False, padding=False)
    header += f"DATE-OBS= '{text}'".ljust(80) + "END".ljust(80)
    header += " " * (-len(header) % 2880)
    data = np.zeros((4, 4), ">f4").tobytes()
    path.write_bytes(header.encode("ascii") + data + bytes(-len(data) % 2880))
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False).stdout
    assert ("0 error(s)" in out) is accepted, out


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("2026-02-28 21:05", "2026-02-28T21:05:00"),
        ("2026-02-28t21:05:09.25", "2026-02-28T21:05:09.25"),
        ("2026-02-28T21:05:09+00:00", "2026-02-28T21:05:09"),
        ("2026-02-28T21:05:09UTC", "2026-02-28T21:05:09"),
        (" 2026-02-28  ", "2026-02-28"),
        ("2026-02-28Z", None),
        ("2026-02-28T21:05:09-05:00", None),
        ("2026-02-30T25:61:61", None),
        ("26.03.2019 21:00", None),
    ],
)
def test_fits_date_converts_what_it_can(text: str, fixed: str | None) -> None:
    assert fits_date(text) == fixed
