"""Zscale previews: astropy's limits, area averaging, orientation, any FITS layout, clear errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.visualization import ZScaleInterval
from PIL import Image

from ccdcal.errors import FitsFormatError, NotFoundError, UsageError
from ccdcal.report.previews import fits_stem, preview_file, read_frame, render, shrink, zscale_limits


def grey(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "L"
        return np.asarray(image)


def sky(shape: tuple[int, int] = (40, 60), seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 10.0, shape).astype(np.float32)
    image[5, 7] = 60000.0  # a hot pixel zscale ignores
    return image


def test_render_uses_astropy_zscale_and_puts_row_0_at_the_bottom() -> None:
    image = sky()
    image[0, :] = 5000.0  # the first FITS row: white, at the bottom of the picture
    shown = render(image, 0)
    low, high = ZScaleInterval().get_limits(image)
    assert shown.limits == pytest.approx((low, high), rel=1e-12)
    assert (shown.width, shown.height, shown.shape) == (60, 40, (40, 60))
    pixels = grey(shown.png)
    assert pixels.shape == (40, 60)
    assert (pixels[-1] == 255).all()
    expected = np.clip(np.rint((image[1:].astype(np.float64) - low) * 255.0 / (high - low)), 0, 255)
    assert np.array_equal(pixels[:-1][::-1], expected.astype(np.uint8))
    assert shown.note is None


def test_shrink_area_averages_to_the_longest_side() -> None:
    image = sky((100, 200))
    small = shrink(image, 50)
    assert small.shape == (25, 50)
    blocks = image.reshape(25, 4, 50, 4).mean(axis=(1, 3), dtype=np.float64)
    np.testing.assert_allclose(small, blocks, rtol=1e-6)
    ramp = np.add.outer(np.arange(100.0), 2 * np.arange(200.0)).astype(np.float32)
    odd = shrink(ramp, 120)  # a ratio of 0.6: each output pixel averages the 1 or 2 pixels it covers
    assert odd.shape == (60, 120)
    centre = (np.arange(120) + 0.5) / 0.6 - 0.5  # the ramp at the centre of each output pixel
    # within half a source pixel of the centre on each axis (slopes 1 and 2)
    np.testing.assert_allclose(odd, np.add.outer(centre[:60], 2 * centre), atol=0.5 * 1 + 0.5 * 2)
    assert shrink(image, 0) is image
    assert shrink(image, 200) is image


def test_render_shrinks_big_frames_and_shows_non_finite_pixels_at_the_median() -> None:
    image = sky((300, 900))
    image[10:12, 10:12] = np.nan
    shown = render(image, 256)
    assert (shown.width, shown.height, shown.shape) == (256, 85, (300, 900))
    assert shown.note == "4 non-finite pixels shown at " + f"{float(np.nanmedian(image)):.6g}"
    assert grey(shown.png).shape == (85, 256)


def test_flat_and_empty_images_get_a_usable_range() -> None:
    assert zscale_limits(np.full((8, 8), 3.0, np.float32)) == (3.0, 4.0)
    assert zscale_limits(np.full((8, 8), np.nan, np.float32)) == (0.0, 1.0)
    assert set(np.unique(grey(render(np.full((8, 8), 3.0, np.float32), 0).png))) == {0}


def test_read_frame_finds_the_image_of_a_tile_compressed_file(tmp_path: Path) -> None:
    path = tmp_path / "Light_007.fits.fz"
    data = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(path)
    image, hdu, note = read_frame(path)
    assert (hdu, note, image.dtype) == (1, None, np.float32)
    np.testing.assert_array_equal(image, data)
    assert fits_stem(path) == "Light_007"


def test_read_frame_applies_bzero_and_shows_the_first_plane_of_a_cube(tmp_path: Path) -> None:
    path = tmp_path / "cube.fits"
    cube = np.stack([np.full((4, 5), 40000, np.uint16), np.zeros((4, 5), np.uint16)])
    fits.PrimaryHDU(cube).writeto(path)  # uint16: BITPIX 16 with BZERO 32768
    image, hdu, note = read_frame(path)
    assert (hdu, note, image.shape) == (0, "first plane of a 3-D cube", (4, 5))
    assert (image == 40000).all()


def test_read_frame_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.fits"
    with pytest.raises(NotFoundError, match="^" + str(missing) + ": no such file$"):
        read_frame(missing)
    table = tmp_path / "table.fits"
    column = fits.Column("a", "J", array=[1])
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([column])]).writeto(table)
    with pytest.raises(FitsFormatError, match=r"table.fits: no HDU holds an image of two or more axes$"):
        read_frame(table)
    with pytest.raises(FitsFormatError, match=r"table.fits: HDU 1 is a table, not an image$"):
        read_frame(table, 1)
    with pytest.raises(FitsFormatError, match=r"table.fits: no HDU 5: the file has HDUs 0 to 1$"):
        read_frame(table, 5)
    text = tmp_path / "notes.fits"
    text.write_text("not FITS at all\n")
    with pytest.raises(FitsFormatError, match=r"notes.fits: cannot read it as FITS"):
        read_frame(text)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("Light_001.fits", "Light_001"),
        ("Light_001.FIT", "Light_001"),
        ("m51.fts.gz", "m51"),
        ("a.b.fits.fz", "a.b"),
        ("image.png", "image"),
    ],
)
def test_fits_stem(name: str, stem: str) -> None:
    assert fits_stem(name) == stem


def test_preview_file_writes_in_the_current_folder_never_beside_the_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    frame = raw / "Light_001.fits"
    fits.PrimaryHDU(sky()).writeto(frame)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = preview_file(frame, max_size=30)
    assert result.output == work / "Light_001.png"
    assert sorted(p.name for p in raw.iterdir()) == ["Light_001.fits"]
    assert sorted(p.name for p in work.iterdir()) == ["Light_001.png"]
    assert grey(result.output.read_bytes()).shape == (20, 30)
    assert result.as_dict() == {
        "source": str(frame),
        "output": str(work / "Light_001.png"),
        "hdu": 0,
        "width": 30,
        "height": 20,
        "shape": [40, 60],
        "zscale": list(result.preview.limits),
        "note": None,
    }


def test_preview_file_refuses_to_replace_the_frame_or_write_nowhere(tmp_path: Path) -> None:
    frame = tmp_path / "Light_001.fits"
    fits.PrimaryHDU(sky()).writeto(frame)
    before = frame.read_bytes()
    with pytest.raises(UsageError, match=r"is the frame itself; choose another file name for the PNG$"):
        preview_file(frame, frame)
    assert frame.read_bytes() == before
    with pytest.raises(UsageError, match=f"folder {tmp_path / 'no'} does not exist$"):
        preview_file(frame, tmp_path / "no" / "x.png")
    with pytest.raises(UsageError, match=r"^--max-size -1 is out of range: use a whole number 0 <= x"):
        preview_file(frame, tmp_path / "x.png", max_size=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Light_001.fits"]


def test_a_header_astropy_complains_about_still_shows_and_warning_filters_are_left_as_they_were(
    tmp_path: Path,
) -> None:
    frame = tmp_path / "sharpcap.fits"
    header = fits.Header()
    header["CCD-TEMP"] = (-10.0, "temperature in C")
    fits.PrimaryHDU(np.arange(16, dtype=np.uint16).reshape(4, 4), header).writeto(frame)
    frame.write_bytes(frame.read_bytes().replace(b"temperature in C", b"temperature in\xb0C"))  # not ASCII
    filters = list(warnings.filters)
    image, _, _ = read_frame(frame)
    assert float(image.sum()) == 120.0
    assert warnings.filters == filters
    result = preview_file(frame, tmp_path / "p.png")
    assert (result.preview.width, result.preview.height) == (4, 4)
    assert warnings.filters == filters
