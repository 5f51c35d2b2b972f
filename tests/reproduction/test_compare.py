"""Two files compared data unit by data unit, and a difference told by its pixels' statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from ccdcal.reproduction.compare import compare_files, difference_text


def write(path: Path, image: np.ndarray, mask: np.ndarray | None = None) -> Path:
    hdus = [fits.PrimaryHDU(image)]
    if mask is not None:
        hdus.append(fits.ImageHDU(mask, name="MASK"))
    fits.HDUList(hdus).writeto(path)
    return path


def test_identical_units_and_the_statistics_of_a_difference(tmp_path: Path) -> None:
    image = np.zeros((10, 10), np.float32)
    image[0, 0] = np.nan
    mask = np.zeros((10, 10), np.uint8)
    recorded = write(tmp_path / "a.fits", image, mask)
    assert [u.same for u in compare_files(recorded, write(tmp_path / "b.fits", image, mask))] == [True, True]
    other, other_mask = image.copy(), mask.copy()
    other[1, :4] = [1, 1, -3, 1]
    other[2, 2] = np.nan
    other_mask[5, 5] = 1 | 4
    primary, masks = compare_files(recorded, write(tmp_path / "c.fits", other, other_mask))
    assert primary.difference == {
        "pixels": 5,
        "total": 100,
        "nan": 1,
        "max_abs": 3.0,
        "mean": 0.0,
        "rms": np.sqrt(12 / 98),
    }
    assert primary.text() == (
        "PRIMARY: 5 of 100 pixels differ (max |Δ| 3, mean Δ +0, rms 0.349927, 1 NaN in one file only)"
    )
    assert masks.difference == {"pixels": 1, "total": 100, "bits": {"1": 1, "4": 1}}
    assert masks.text() == "MASK: 1 of 100 pixels differ (bit 1: 1, bit 4: 1)"


def test_a_unit_in_one_file_only_and_another_shape(tmp_path: Path) -> None:
    image = np.zeros((4, 6), np.float32)
    recorded = write(tmp_path / "a.fits", image)
    primary, mask = compare_files(recorded, write(tmp_path / "b.fits", np.zeros((4, 5), np.float32), image))
    assert primary.text() == "PRIMARY: differs in shape: recorded 6x4, re-made 5x4"
    assert (mask.name, mask.recorded, mask.same) == ("MASK", None, False)
    assert mask.text() == "MASK: in the re-made file only"
    assert difference_text(None) == "differs"
