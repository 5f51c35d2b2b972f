"""The ``.ccdcal-catalog`` marker: a folder claimed by the first catalog that writes into it, refused to
any other before anything is written; a folder made before the markers adopted only by the catalog whose
rows name its files."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.errors import FolderOwnerError
from ccdcal.files.fitsio import TEMP_PREFIX, stamp_version
from ccdcal.files.ownership import MARKER, FolderOwner, claim_folder, read_marker, written_by_ccdcal

ONE = FolderOwner(str(uuid.UUID(int=1)), "/data/ccdcal.db")
OTHER = FolderOwner(str(uuid.UUID(int=2)), "/data/test.db")


def claim(folder: Path, owner: FolderOwner, names_files: bool = False) -> None:
    claim_folder(
        folder, owner, what="masters folder", option="--masters-dir", names_files=lambda: names_files
    )


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def ccdcal_fits(path: Path) -> None:
    header = fits.Header()
    stamp_version(header)
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header).writeto(path)


def test_the_first_catalog_claims_a_new_folder_and_another_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "masters"
    claim(folder, ONE)
    assert (folder / MARKER).read_text() == f"{ONE.catalog_id}\nccdcal catalog /data/ccdcal.db\n"
    assert read_marker(folder) == ONE
    claim(folder, ONE)  # its own: nothing to do
    before = listing(folder)
    with pytest.raises(FolderOwnerError) as refused:
        claim(folder, OTHER)
    assert str(refused.value) == (
        f"the masters folder {folder} belongs to another catalog (id {ONE.catalog_id}; it is "
        "/data/ccdcal.db): use another --masters-dir, or work on the catalog that owns it (--db)"
    )
    assert listing(folder) == before


def test_a_folder_of_other_files_is_claimed(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("seeing 2 arcsec")
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(tmp_path / "other.fits")  # not ccdcal's
    claim(tmp_path, OTHER)
    assert read_marker(tmp_path) == OTHER


def test_a_folder_of_ccdcal_files_without_a_marker_is_adopted_only_by_the_catalog_that_knows_them(
    tmp_path: Path,
) -> None:
    ccdcal_fits(tmp_path / "master_bias_b1x1_g0_sNA_C-10.fits")
    before = listing(tmp_path)
    with pytest.raises(FolderOwnerError) as refused:
        claim(tmp_path, OTHER, names_files=False)
    assert str(refused.value) == (
        f"the masters folder {tmp_path} holds files ccdcal wrote (such as master_bias_b1x1_g0_sNA_C-10.fits) "
        f"that this catalog does not record, and no {MARKER} naming their catalog: use another "
        "--masters-dir, or work on the catalog that wrote them (--db)"
    )
    assert listing(tmp_path) == before
    claim(tmp_path, ONE, names_files=True)
    assert read_marker(tmp_path) == ONE


def test_a_temporary_file_alone_does_not_make_a_folder_anothers(tmp_path: Path) -> None:
    """A run of the same catalog may be claiming the folder (its marker still a temporary file)."""
    (tmp_path / f"{TEMP_PREFIX}{'0' * 20}-{'1' * 16}").write_bytes(b"half")
    claim(tmp_path, OTHER, names_files=False)
    assert read_marker(tmp_path) == OTHER


@pytest.mark.parametrize("content", [b"", b"not an id\n", b"\xff\xfe"])
def test_a_marker_that_names_no_catalog_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / MARKER).write_bytes(content)
    with pytest.raises(FolderOwnerError, match=r"names no catalog .*remove it if .* is this catalog's"):
        claim(tmp_path, ONE)
    assert (tmp_path / MARKER).read_bytes() == content


def test_two_catalogs_claiming_at_once_one_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other catalog's marker appears between the check and the write: never replaced."""
    import os

    from ccdcal.files import ownership

    real_link = os.link

    def late(source: str, target: str) -> None:
        (tmp_path / MARKER).write_text(f"{OTHER.catalog_id}\n")
        real_link(source, target)

    monkeypatch.setattr(ownership.os, "link", late)
    with pytest.raises(FolderOwnerError, match=f"belongs to another catalog \\(id {OTHER.catalog_id}\\)"):
        claim(tmp_path, ONE)
    assert read_marker(tmp_path) == FolderOwner(OTHER.catalog_id, "")
    assert [p.name for p in tmp_path.iterdir()] == [MARKER]  # its temporary removed


def test_written_by_ccdcal_reads_the_header_only(tmp_path: Path) -> None:
    ccdcal_fits(tmp_path / "mine.fits")
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(tmp_path / "theirs.fits")
    (tmp_path / "short.fits").write_bytes(b"SIMPLE  =")
    assert written_by_ccdcal(tmp_path / "mine.fits")
    assert not written_by_ccdcal(tmp_path / "theirs.fits")
    assert not written_by_ccdcal(tmp_path / "short.fits")
    assert not written_by_ccdcal(tmp_path / "absent.fits")
