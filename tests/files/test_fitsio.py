"""FITS writing: atomic writes with their sha256, cards that fit, HISTORY wrapping, pixel reads."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal._version import __version__
from ccdcal.errors import FitsFormatError, OutputError
from ccdcal.files.fitsio import (
    TEMP_PREFIX,
    add_history,
    check_writable,
    read_image,
    remove_stale_temporaries,
    set_card,
    sha256_file,
    stamp_version,
    temporary_path,
    write_atomic,
)
from tests.conftest import fitsverify_counts


def hdul(value: float = 1.0, header: fits.Header | None = None) -> fits.HDUList:
    return fits.HDUList([fits.PrimaryHDU(np.full((4, 5), value, np.float32), header)])


def test_write_atomic_leaves_no_temporary_and_returns_the_files_sha256(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "master.fits"
    digest = write_atomic(path, hdul(2.5))
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.fits"]
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    with fits.open(path, checksum=True) as opened:  # CHECKSUM/DATASUM are written and verify
        assert "CHECKSUM" in opened[0].header
        assert "DATASUM" in opened[0].header
        np.testing.assert_array_equal(opened[0].data, np.full((4, 5), 2.5, np.float32))


def test_write_atomic_writes_the_same_bytes_for_the_same_hdus(tmp_path: Path) -> None:
    """The CHECKSUM and DATASUM comments hold no time of writing: a master made again from the same
    inputs is the same file (the sha256 recorded in the HISTORY of the masters built on it included)."""

    def extended() -> fits.HDUList:
        header = fits.Header([("IMAGETYP", "MASTER FLAT")])
        mask = fits.ImageHDU(np.eye(4, 5, dtype=np.uint8), name="MASK")
        return fits.HDUList([fits.PrimaryHDU(np.full((4, 5), 0.5, np.float32), header), mask])

    first, second = tmp_path / "a.fits", tmp_path / "b.fits"
    write_atomic(first, extended())
    write_atomic(second, extended())
    assert first.read_bytes() == second.read_bytes()
    with fits.open(first, checksum=True) as opened:  # a wrong sum would warn, an error here
        for hdu in opened:
            assert (hdu.header.comments["CHECKSUM"], hdu.header.comments["DATASUM"]) == (
                "HDU checksum",
                "data unit checksum",
            )
        assert opened[0].header["EXTEND"] is True
    assert fitsverify_counts(first) == (0, 0)


def test_write_atomic_replaces_by_default(tmp_path: Path) -> None:
    path = tmp_path / "m.fits"
    write_atomic(path, hdul(1.0))
    digest = write_atomic(path, hdul(2.0))
    assert sha256_file(path) == digest
    assert fits.getdata(path)[0, 0] == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["m.fits"]


def test_write_atomic_without_overwrite_keeps_the_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "m.fits"
    first = write_atomic(path, hdul(1.0))
    with pytest.raises(FileExistsError):
        write_atomic(path, hdul(2.0), overwrite=False)
    assert sha256_file(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["m.fits"]
    assert write_atomic(tmp_path / "n.fits", hdul(3.0), overwrite=False) == sha256_file(tmp_path / "n.fits")


def test_a_failed_write_leaves_neither_temporary_nor_final_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'm.fits'}: disk full; check "):
        write_atomic(tmp_path / "m.fits", hdul())
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_named_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError) as raised:
        write_atomic(tmp_path / "m.fits", hdul())
    assert str(raised.value) == (
        f"cannot write {tmp_path / 'm.fits'}: No space left on device; "
        f"free some space on the disk of {tmp_path}, then run the command again"
    )
    assert raised.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_check_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_writable(tmp_path / "new" / "folder")
    assert (tmp_path / "new" / "folder").is_dir()
    assert list((tmp_path / "new" / "folder").iterdir()) == []
    real_open = open

    def denied(file: object, *args: object, **kwargs: object) -> object:
        if str(file).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(OutputError) as raised:
        check_writable(tmp_path / "locked")
    assert str(raised.value) == (
        f"cannot write in {tmp_path / 'locked'}: Permission denied; "
        f"make {tmp_path / 'locked'} writable or choose another folder"
    )


def test_temporaries_name_their_owner_and_only_dead_owners_are_stale(tmp_path: Path) -> None:
    import subprocess
    import time

    from ccdcal.runtime.owners import HOST, HOST_TOKEN, owner_tag

    mine = temporary_path(tmp_path)
    assert mine.name.startswith(f"{TEMP_PREFIX}{owner_tag()}-")
    assert owner_tag() == f"{os.getpid():08x}{HOST_TOKEN}"
    finished = subprocess.Popen(["true"])
    finished.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        files = {
            "mine": mine,
            "dead": tmp_path / f"{TEMP_PREFIX}{finished.pid:08x}{HOST_TOKEN}-{'0' * 16}",
            "alive": tmp_path / f"{TEMP_PREFIX}{alive.pid:08x}{HOST_TOKEN}-{'1' * 16}",
            "untagged": tmp_path / f"{TEMP_PREFIX}{'2' * 32}-c.fits",
            "remote-new": tmp_path / f"{TEMP_PREFIX}{1:08x}{'e' * 12}-{'3' * 16}",
            "remote-old": tmp_path / f"{TEMP_PREFIX}{1:08x}{'e' * 12}-{'4' * 16}",
            # The id of a process that started after the file was written: a reused id, its owner is gone.
            "reused": tmp_path / f"{TEMP_PREFIX}{alive.pid:08x}{HOST_TOKEN}-{'5' * 16}",
            # Written by a ccdcal before fixed-length names: their owners are read the same way.
            "legacy-dead": tmp_path / f"{TEMP_PREFIX}{finished.pid}@{HOST}~{'6' * 32}-a.fits",
            "legacy-alive": tmp_path / f"{TEMP_PREFIX}{alive.pid}@{HOST}~{'7' * 32}-b.fits",
            # A dead process's journal is the proof recovery reads: never removed as stale.
            "journal": tmp_path / f"{TEMP_PREFIX}{finished.pid:08x}{HOST_TOKEN}-{'8' * 16}.journal",
        }
        for path in files.values():
            path.write_bytes(b"half")
        old = time.time() - 2 * 86400
        os.utime(files["remote-old"], (old, old))
        os.utime(files["reused"], (old, old))
        assert remove_stale_temporaries(tmp_path) == 5
        left = {name for name, path in files.items() if path.exists()}
        assert left == {"mine", "alive", "remote-new", "legacy-alive", "journal"}
    finally:
        alive.kill()
        alive.wait()


def test_temporary_names_are_short_whatever_the_final_name_and_the_host(tmp_path: Path) -> None:
    """A final name of 250 bytes is written through a temporary name of 49 characters; a host name of
    any length changes nothing (the owner tag holds a hash of it: checked in a child process whose host
    name is 252 characters)."""
    import subprocess
    import sys

    from ccdcal.runtime.owners import HOST_TOKEN, parse_tag

    name = "L" * 245 + ".fits"  # 250 bytes: allowed, but no room for a prefix
    assert len(temporary_path(tmp_path).name) == 49
    assert len(temporary_path(tmp_path, ".journal").name) == 57
    digest = write_atomic(tmp_path / name, hdul(1.0))
    assert sha256_file(tmp_path / name) == digest
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert parse_tag(temporary_path(tmp_path).name[len(TEMP_PREFIX) :]) == (os.getpid(), HOST_TOKEN)
    script = (
        "import socket, sys\n"
        "socket.gethostname = lambda: 'observatory-' + 'x' * 240\n"
        "from pathlib import Path\n"
        "from ccdcal.files.fitsio import temporary_path\n"
        "from ccdcal.runtime.owners import HOST_TOKEN\n"
        "print(len(temporary_path(Path(sys.argv[1])).name), HOST_TOKEN)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    length, token = child.stdout.split()
    assert int(length) == 49
    assert token == hashlib.sha256(("observatory-" + "x" * 240).encode()).hexdigest()[:12]


def test_an_interrupted_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.fits"
    before = write_atomic(path, hdul(1.0))

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fits.HDUList, "writeto", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, hdul(2.0))
    assert sha256_file(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.fits"]


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc-m.fits").write_bytes(b"half")
    (tmp_path / "keep.fits").write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.fits"]
    assert remove_stale_temporaries(tmp_path / "absent") == 0


def test_set_card_shortens_comments_at_a_word_without_warning(tmp_path: Path) -> None:
    header = fits.Header()
    long = "master bias subtracted from every input frame before the combine, by file name"
    set_card(header, "BIASCOR", "master_bias_b2x2_g120_sNA_C-10_v12.fits", long)
    set_card(header, "NCOMBINE", 5, long)
    set_card(header, "EMPTY", "", "")
    set_card(header, "FULL", "a" * 68, "no room left")
    for card in header.cards:
        assert len(card.image) == 80
        assert long.startswith(card.comment)
    assert header.comments["BIASCOR"] == "master bias subtracted"
    assert header.comments["NCOMBINE"] == "master bias subtracted from every input frame"
    assert header.comments["FULL"] == ""
    write_atomic(tmp_path / "c.fits", hdul(header=header))  # filterwarnings=error: no VerifyWarning
    assert fitsverify_counts(tmp_path / "c.fits") == (0, 0)


def test_set_card_long_strings_declare_the_convention(tmp_path: Path) -> None:
    header = fits.Header()
    name = "N.I.N.A._2026-03-14_21-30-01_M51_Ha_-10.00C_300.00s_gain120_offset30_0001.fits"
    set_card(header, "IMCMB001", name)
    set_card(header, "IMCMB002", name + "x", "a comment")
    assert header["LONGSTRN"] == "OGIP 1.0"
    path = tmp_path / "long.fits"
    write_atomic(path, hdul(header=header))
    assert fits.getheader(path)["IMCMB001"] == name
    assert fitsverify_counts(path) == (0, 0)


def test_add_history_cuts_long_lines_and_marks_each_piece_but_the_last() -> None:
    """A long line is cut after a space (or at the card's width), each piece but the last ending with a
    backslash, so that the line reads back exactly (docs/design.md, Files)."""
    header = fits.Header()
    sha = "e53ad1b435f31579fbb71c51bbaa3d24fa34cc13af5fc8ad0f2b2dc8fde9b081"
    line = f"bias subtracted: master_bias_b2x2_g120_sNA_C-10.fits sha256 {sha}"
    add_history(header, [line, "x" * 150, ""])
    history = [str(h) for h in header["HISTORY"]]
    assert history[:2] == ["bias subtracted: master_bias_b2x2_g120_sNA_C-10.fits sha256 \\", sha]
    assert history[2:5] == ["x" * 71 + "\\", "x" * 71 + "\\", "x" * 8]
    assert history[5] == ""
    assert all(len(h) <= 72 for h in history)


def test_stamp_version() -> None:
    header = fits.Header()
    stamp_version(header)
    assert header["CCDCALV"] == __version__


def test_read_image(tmp_path: Path) -> None:
    path = tmp_path / "u16.fits"
    data = np.array([[0, 65535]], dtype=np.uint16)
    fits.PrimaryHDU(data).writeto(path)
    image = read_image(path, 0, np.float64)
    assert image.dtype == np.float64
    np.testing.assert_array_equal(image, [[0.0, 65535.0]])
    with pytest.raises(FitsFormatError, match=r"u16\.fits"):
        read_image(path, 1)
    (tmp_path / "bad.fits").write_bytes(b"not a fits file")
    with pytest.raises(FitsFormatError):
        read_image(tmp_path / "bad.fits")
    fits.PrimaryHDU().writeto(tmp_path / "empty.fits")
    with pytest.raises(FitsFormatError, match="no pixels"):
        read_image(tmp_path / "empty.fits")


def test_set_card_writes_text_a_card_cannot_hold_as_printable_ascii() -> None:
    """A header value with a tab or non-ASCII (kept as it is in the catalog) never stops a write."""
    header = fits.Header()
    set_card(header, "FILTER", "R\tx", "filter ±")
    set_card(header, "OBJECT", "Lumière")
    assert (header["FILTER"], header.comments["FILTER"], header["OBJECT"]) == ("R?x", "filter +/-", "Lumi?re")
