"""A file being written is ingested once whole and settled; one that never becomes whole is rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.watch.settle import Settler


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame_bytes(tmp_path: Path) -> bytes:
    fits.PrimaryHDU(np.zeros((40, 50), np.uint16)).writeto(tmp_path / "model.fits")
    return (tmp_path / "model.fits").read_bytes()


def test_a_frame_written_in_chunks_is_ready_once_whole_and_settled(tmp_path: Path) -> None:
    content = frame_bytes(tmp_path)
    clock = Clock()
    settler = Settler(settle=0.2, give_up=60, clock=clock)
    path = tmp_path / "Light_001.fits"
    path.write_bytes(content[:3000])
    settler.see(path)
    assert settler.wait() == pytest.approx(0.2)
    clock.now += 0.3
    assert settler.due().ready == []  # held its size, but not whole: looked at again later
    with path.open("ab") as stream:
        stream.write(content[3000:])
    clock.now += 0.1
    assert settler.due().ready == []  # its size changed: the settle period starts again
    clock.now += 0.1
    assert settler.due().ready == []
    clock.now += 0.2
    decided = settler.due()
    assert (decided.ready, decided.rejected, decided.gone) == ([path], [], [])
    assert len(settler) == 0
    assert settler.wait() is None


def test_a_file_that_stays_truncated_is_rejected_with_the_reason(tmp_path: Path) -> None:
    content = frame_bytes(tmp_path)
    clock = Clock()
    settler = Settler(settle=0.2, give_up=5, clock=clock)
    path = tmp_path / "cut.fits"
    path.write_bytes(content[:4000])
    settler.see(path)
    for _ in range(19):
        clock.now += 0.25
        assert settler.due().rejected == []
    clock.now += 0.25
    assert settler.due().rejected == [
        (path, "still not whole 5 s after it appeared: its data unit 0 is 2880 bytes short of 4000")
    ]


def test_a_file_that_is_not_fits_is_rejected_at_once_and_a_deleted_one_is_gone(tmp_path: Path) -> None:
    clock = Clock()
    settler = Settler(clock=clock)
    text, gone = tmp_path / "log.fits", tmp_path / "gone.fits"
    text.write_text("not a frame\n" * 400)
    gone.write_bytes(b"SIMPLE  =")
    settler.see(text)
    settler.see(gone)
    gone.unlink()
    clock.now += 0.5
    decided = settler.due()
    assert decided.rejected == [(text, "not a FITS file (it does not begin with SIMPLE =)")]
    assert (decided.ready, decided.gone) == ([], [gone])


def test_a_frame_renamed_into_place_is_ready_after_one_settle_period(tmp_path: Path) -> None:
    content = frame_bytes(tmp_path)
    clock = Clock()
    settler = Settler(settle=0.25, clock=clock)
    (tmp_path / ".Light_002.fits.part").write_bytes(content)
    path = tmp_path / "Light_002.fits"
    (tmp_path / ".Light_002.fits.part").rename(path)
    settler.see(path)
    clock.now += 0.125
    assert settler.due().ready == []
    clock.now += 0.125
    assert settler.due().ready == [path]
