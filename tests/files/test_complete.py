"""A FITS file is whole when every header ends and every data unit holds what its header promises."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.files.complete import BLOCK, completeness


def written(path: Path, *extensions: fits.ImageHDU | fits.CompImageHDU) -> bytes:
    data = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50)
    fits.HDUList([fits.PrimaryHDU(data), *extensions]).writeto(path)
    return path.read_bytes()


def test_a_frame_as_astropy_writes_it_is_whole(tmp_path: Path) -> None:
    content = written(tmp_path / "f.fits")
    assert len(content) == 3 * BLOCK  # a header block, two data blocks
    found = completeness(tmp_path / "f.fits")
    assert (found.whole, found.reason, found.hdus, found.fits) == (True, None, 1, True)


def test_a_file_caught_while_it_is_written_is_not_whole(tmp_path: Path) -> None:
    content = written(tmp_path / "f.fits")
    part = tmp_path / "part.fits"
    for size in (0, 5, 80, BLOCK - 1, BLOCK, BLOCK + 1, BLOCK + 3999):
        part.write_bytes(content[:size])
        found = completeness(part)
        assert (found.whole, found.fits, found.hdus) == (False, True, 0), size
    part.write_bytes(content[:1000])
    assert completeness(part).reason == "the primary header stops after 1000 bytes, before its END card"
    part.write_bytes(content[: BLOCK + 1000])
    assert completeness(part).reason == "its data unit 0 is 3000 bytes short of 4000"


def test_a_last_data_unit_without_its_padding_is_whole(tmp_path: Path) -> None:
    content = written(tmp_path / "f.fits")
    (tmp_path / "unpadded.fits").write_bytes(content[: BLOCK + 4000])
    assert completeness(tmp_path / "unpadded.fits").whole


def test_extensions_and_tile_compression(tmp_path: Path) -> None:
    image = np.ones((30, 20), np.float32)
    content = written(tmp_path / "mef.fits", fits.ImageHDU(image, name="SCI"), fits.ImageHDU(image * 2))
    assert (completeness(tmp_path / "mef.fits").whole, completeness(tmp_path / "mef.fits").hdus) == (True, 3)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(content[: 3 * BLOCK + 100])  # into the first extension's header
    found = completeness(cut)
    assert (found.whole, found.hdus, found.reason) == (
        False,
        1,
        "the header of HDU 1 stops after 100 bytes, before its END card",
    )
    compressed = fits.CompImageHDU(np.arange(64 * 64, dtype=np.int32).reshape(64, 64))
    content = written(tmp_path / "f.fits.fz", compressed)
    assert completeness(tmp_path / "f.fits.fz").whole
    cut.write_bytes(content[:-BLOCK])  # the heap of compressed tiles short
    assert not completeness(cut).whole


def test_bytes_after_the_last_hdu_that_begin_no_extension_leave_it_whole(tmp_path: Path) -> None:
    content = written(tmp_path / "f.fits")
    (tmp_path / "tail.fits").write_bytes(content + b"\0" * 100)
    assert completeness(tmp_path / "tail.fits").whole
    (tmp_path / "xten.fits").write_bytes(content + b"XTEN")  # an extension's first bytes: still writing
    assert not completeness(tmp_path / "xten.fits").whole


def test_a_file_that_is_not_fits_never_will_be(tmp_path: Path) -> None:
    (tmp_path / "notes.fits").write_text("observing log\n" * 300)
    found = completeness(tmp_path / "notes.fits")
    assert (found.whole, found.fits) == (False, False)
    assert found.reason == "not a FITS file (it does not begin with SIMPLE =)"


@pytest.mark.parametrize("cut", [0, 200])
def test_a_gzipped_frame_is_whole_when_its_stream_ends(tmp_path: Path, cut: int) -> None:
    content = gzip.compress(written(tmp_path / "f.fits"))
    path = tmp_path / "f.fits.gz"
    path.write_bytes(content[: len(content) - cut] if cut else content)
    found = completeness(path)
    assert found.whole is (cut == 0)
    if cut:
        assert found.reason == "the gzip stream stops before its end"


def test_every_real_frame_is_whole(real_data: Path) -> None:
    files = [p for p in real_data.rglob("*") if p.is_file() and p.suffix.lower() in (".fits", ".fit", ".fz")]
    assert len(files) >= 70
    assert [str(p) for p in files if not completeness(p).whole] == []
