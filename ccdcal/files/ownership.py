"""Which catalog owns a masters or output folder: the ``.ccdcal-catalog`` marker (docs/design.md, Files).

Two catalogs must never write into one folder: each would take the other's masters and outputs for files
it does not know — name its own files after them, or clean them up as left by a run of its own that died.
So the first catalog that writes into a folder claims it, writing its id (``catalog_info.catalog_id``) to
``.ccdcal-catalog`` there, and another catalog is refused, before it writes anything, with the fix. A
folder made before the markers (ccdcal files, no marker) is adopted by the catalog whose rows name files
in it, and refused to any other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ccdcal.errors import FolderOwnerError
from ccdcal.files.fitsio import output_error, temporary_path

#: The marker file of a folder a catalog owns.
MARKER = ".ccdcal-catalog"
# Header blocks read when looking for ccdcal's CCDCALV card (a master of 999 inputs has ~60).
_MAX_HEADER_BLOCKS = 200
# Bytes of a marker read: its id, then the catalog's description after this.
_MARKER_BYTES = 4096
_DESCRIBED = "ccdcal catalog"


@dataclass(frozen=True)
class FolderOwner:
    """A catalog as a folder's owner: its id, and how messages name it (a path, a password-free URL)."""

    catalog_id: str
    catalog: str


def read_marker(folder: Path) -> FolderOwner | None:
    """The owner a folder's marker names; ``None`` when it has no marker.

    Raises
    ------
    FolderOwnerError
        When the marker cannot be read or holds no catalog id.
    """
    marker = folder / MARKER
    try:
        with open(marker, "rb") as handle:
            text = handle.read(_MARKER_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FolderOwnerError(
            f"cannot read {marker}: {exc.strerror or exc}; make it readable, or remove it if {folder} is "
            "this catalog's"
        ) from exc
    lines = text.splitlines() or [""]
    try:
        catalog_id = str(uuid.UUID(lines[0].strip()))
    except ValueError:
        raise FolderOwnerError(
            f"{marker} names no catalog (its first line is not a catalog id); remove it if {folder} is "
            "this catalog's"
        ) from None
    described = lines[1].strip() if len(lines) > 1 else ""
    return FolderOwner(catalog_id, described.removeprefix(_DESCRIBED).strip())


def claim_folder(
    folder: Path, owner: FolderOwner, *, what: str, option: str, names_files: Callable[[], bool]
) -> None:
    """Make ``folder`` (created when absent) ``owner``'s, or refuse it (:func:`check_folder`).

    Raises
    ------
    FolderOwnerError
        As :func:`check_folder`. Nothing was written.
    OutputError
        The marker cannot be written (a read-only folder, a full disk).
    """
    if check_folder(folder, owner, what=what, option=option, names_files=names_files):
        write_marker(folder, owner, what=what, option=option)


def check_folder(
    folder: Path, owner: FolderOwner, *, what: str, option: str, names_files: Callable[[], bool]
) -> bool:
    """Whether ``owner`` may write into ``folder``, reading it only: ``False`` when its marker names
    ``owner`` already, ``True`` when it has none yet.

    Parameters
    ----------
    folder : Path
        The folder, resolved.
    owner : FolderOwner
        The catalog that is about to write into it.
    what : str
        The folder's role in messages (``masters folder``, ``output folder``).
    option : str
        Where the user chose it (``--masters-dir``), named in the fix.
    names_files : callable
        Whether the catalog's rows name files in the folder: a folder without a marker that holds ccdcal
        files is adopted only then.

    Raises
    ------
    FolderOwnerError
        The marker names another catalog, or the folder holds ccdcal files of another catalog (no marker,
        and the catalog does not know them).
    """
    found = read_marker(folder)
    if found is not None:
        if found.catalog_id != owner.catalog_id:
            raise _foreign(folder, found, what, option)
        return False
    if folder.is_dir():
        example = _ccdcal_file(folder)
        if example is not None and not names_files():
            raise FolderOwnerError(
                f"the {what} {folder} holds files ccdcal wrote (such as {example}) that this catalog does "
                f"not record, and no {MARKER} naming their catalog: use another {option}, or work on the "
                f"catalog that wrote them (--db)"
            )
    return True


def _foreign(folder: Path, found: FolderOwner, what: str, option: str) -> FolderOwnerError:
    """The refusal of a folder another catalog owns: the folder, that catalog, and the fix."""
    where = f"; it is {found.catalog}" if found.catalog else ""
    return FolderOwnerError(
        f"the {what} {folder} belongs to another catalog (id {found.catalog_id}{where}): use another "
        f"{option}, or work on the catalog that owns it (--db)"
    )


def write_marker(folder: Path, owner: FolderOwner, *, what: str, option: str) -> None:
    """Write ``owner``'s marker in ``folder`` (created when absent), never over another's: a catalog
    claiming the folder at the same time wins or loses as a whole (a marker is published by a hard link,
    which never replaces a file); the loser is refused as by :func:`check_folder`."""
    marker = folder / MARKER
    text = f"{owner.catalog_id}\n{_DESCRIBED} {owner.catalog}\n".encode("utf-8", "replace")
    temporary: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(folder)
        with open(temporary, "wb") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, marker)
        except FileExistsError:
            pass
        except OSError:  # no hard links here: created only when absent
            with open(marker, "xb") as handle:
                handle.write(text)
    except FileExistsError:
        pass
    except OSError as exc:
        raise output_error(folder, exc, folder=True) from exc
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    found = read_marker(folder)
    if found is None or found.catalog_id != owner.catalog_id:  # another catalog claimed it first
        raise _foreign(folder, found or FolderOwner("?", ""), what, option)


def _ccdcal_file(folder: Path) -> str | None:
    """The name of a FITS file ccdcal wrote in ``folder`` (its CCDCALV card), else ``None``. Temporary
    files do not count: a run of the same catalog may be claiming the folder at this moment."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    for entry in entries:
        if entry.name.lower().endswith(".fits") and entry.is_file() and written_by_ccdcal(Path(entry.path)):
            return entry.name
    return None


def written_by_ccdcal(path: Path) -> bool:
    """Whether a file's primary header carries ccdcal's CCDCALV card (read without astropy)."""
    try:
        with open(path, "rb") as handle:
            for _ in range(_MAX_HEADER_BLOCKS):
                block = handle.read(2880)
                cards = [block[i : i + 8] for i in range(0, len(block), 80)]
                if b"CCDCALV " in cards:
                    return True
                if len(block) < 2880 or b"END     " in cards:
                    return False
    except OSError:
        return False
    return False
