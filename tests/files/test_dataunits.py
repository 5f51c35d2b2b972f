"""The data units of a FITS file, hashed as stored: a header card changes none of them, a pixel changes
its own unit only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.errors import FitsFormatError
from ccdcal.files.dataunits import data_units, unit_data


def write(path: Path, image: np.ndarray, mask: np.ndarray, note: str = "a") -> Path:
    header = fits.Header()
    header["NOTE"] = note
    fits.HDUList(
        [
            fits.PrimaryHDU(image, header),
            fits.ImageHDU(mask, name="MASK"),
            fits.ImageHDU(np.zeros((3, 2), np.float32)),
        ]
    ).writeto(path, overwrite=True)
    return path


def test_each_unit_is_hashed_as_stored(tmp_path: Path) -> None:
    image = np.arange(35, dtype=np.float32).reshape(5, 7)
    mask = np.zeros((5, 7), np.uint8)
    units = data_units(write(tmp_path / "a.fits", image, mask))
    assert [(u.name, u.index, u.bitpix, u.shape) for u in units] == [
        ("PRIMARY", 0, -32, (5, 7)),
        ("MASK", 1, 8, (5, 7)),
        ("HDU2", 2, -32, (3, 2)),
    ]
    assert units[0].sha256 == hashlib.sha256(image.astype(">f4").tobytes()).hexdigest()
    assert units[1].sha256 == hashlib.sha256(mask.tobytes()).hexdigest()
    np.testing.assert_array_equal(unit_data(tmp_path / "a.fits", 0), image)


def test_a_header_changes_no_unit_and_a_pixel_its_own(tmp_path: Path) -> None:
    image = np.ones((4, 4), np.float32)
    mask = np.zeros((4, 4), np.uint8)
    first = data_units(write(tmp_path / "a.fits", image, mask))
    assert data_units(write(tmp_path / "b.fits", image, mask, note="another header")) == first
    mask[1, 2] = 4
    changed = data_units(write(tmp_path / "c.fits", image, mask))
    assert [a.sha256 == b.sha256 for a, b in zip(first, changed, strict=True)] == [True, False, True]


def test_a_file_that_is_not_fits_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.fits"
    path.write_bytes(b"not a fits file" * 200)
    with pytest.raises(FitsFormatError, match=r"x\.fits: cannot read its data units"):
        data_units(path)
