"""The folders a command writes into, claimed for its catalog before anything is written
(:mod:`ccdcal.files.ownership`): ``masters`` and ``process`` (and ``ccdcal run``) refuse a folder another
catalog owns."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from sqlalchemy import exists, or_, select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Master
from ccdcal.files.fitsio import check_folder as check_not_a_file
from ccdcal.files.fitsio import check_writable
from ccdcal.files.ownership import FolderOwner, check_folder, write_marker

#: A folder to claim: its path, its role in messages, and the option (or config key) that chose it.
Claimed = tuple[Path, str, str]


def own_folders(catalog: Catalog, *folders: Claimed) -> None:
    """Claim each folder for ``catalog`` (created when absent), or refuse it before anything is written:
    every folder is checked first (its owner, then that files can be written in it), then the markers
    of those not claimed yet are written.

    Raises
    ------
    FolderOwnerError
        A folder belongs to another catalog.
    OutputError
        A folder cannot be written (:func:`~ccdcal.files.fitsio.check_writable`).
    """
    catalog.require_writable()
    owner = FolderOwner(catalog.catalog_id, catalog.name)
    claims = [(folder.expanduser().resolve(), what, option) for folder, what, option in folders]
    for folder, _what, _option in claims:
        check_not_a_file(folder)  # a file where the folder should be: said as such, first
    unmarked = [  # every folder checked before any is written
        (folder, what, option)
        for folder, what, option in claims
        if check_folder(
            folder, owner, what=what, option=option, names_files=partial(_names_files_in, catalog, folder)
        )
    ]
    for folder, _what, _option in claims:
        check_writable(folder)
    for folder, what, option in unmarked:
        write_marker(folder, owner, what=what, option=option)


def _names_files_in(catalog: Catalog, folder: Path) -> bool:
    """Whether a master or calibration row of the catalog names a file in ``folder``."""
    prefix = os.path.join(str(folder), "")
    with catalog.reading() as session:
        return bool(
            session.scalar(
                select(
                    or_(
                        exists().where(Master.path.startswith(prefix, autoescape=True)),
                        exists().where(Calibration.path.startswith(prefix, autoescape=True)),
                    )
                )
            )
        )
