"""The data units of a FITS file ccdcal wrote, each hashed as stored: what ``ccdcal reproduce`` compares.

A calibrated light or a master is the same result when its pixels are, whatever its header holds (the
version that wrote it, the HISTORY of the QA of that day): so two files are compared HDU by HDU, on the
sha256 of each data unit's bytes exactly as the file stores them (big-endian, BZERO and BSCALE not applied,
the fill to a multiple of 2880 bytes left out). The HDUs are named as ccdcal writes them: ``PRIMARY`` (the
image), ``UNCERT``, ``MASK``; an extension without EXTNAME is ``HDU{n}``.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from astropy.io import fits

from ccdcal.errors import FitsFormatError

_CHUNK = 1 << 22


@dataclass(frozen=True)
class DataUnit:
    """One HDU's data unit: its name, index, BITPIX, shape (NAXISn, numpy order) and sha256.

    ``sha256`` is of the bytes as stored; a HDU without data has the sha256 of no bytes.
    """

    name: str
    index: int
    bitpix: int
    shape: tuple[int, ...]
    sha256: str


def data_units(path: str | os.PathLike[str]) -> list[DataUnit]:
    """Every HDU of a FITS file with the sha256 of its data unit as stored.

    Raises
    ------
    FitsFormatError
        When the file cannot be read as FITS (the reason names the file).
    """
    units: list[DataUnit] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul, open(path, "rb") as handle:
                for index, hdu in enumerate(hdul):
                    header = hdu.header if not isinstance(hdu, fits.CompImageHDU) else hdu._header
                    start = int(hdul.fileinfo(index)["datLoc"])
                    units.append(_unit(handle, index, header, start))
    except (OSError, ValueError, IndexError, TypeError, KeyError) as exc:
        raise FitsFormatError(f"cannot read its data units: {exc}", str(path)) from exc
    return units


def _unit(handle: BinaryIO, index: int, header: fits.Header, start: int) -> DataUnit:
    bitpix = int(header.get("BITPIX", 8))
    naxis = int(header.get("NAXIS", 0))
    axes = [int(header.get(f"NAXIS{n}", 0)) for n in range(1, naxis + 1)]
    count = math.prod(axes) if axes else 0
    size = abs(bitpix) // 8 * int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
    digest = hashlib.sha256()
    handle.seek(start)
    left = size
    while left > 0:
        chunk = handle.read(min(left, _CHUNK))
        if not chunk:
            raise ValueError(f"HDU {index}: the data unit ends before its {size} bytes")
        digest.update(chunk)
        left -= len(chunk)
    name = "PRIMARY" if index == 0 else str(header.get("EXTNAME") or f"HDU{index}").strip().upper()
    return DataUnit(name, index, bitpix, tuple(reversed(axes)), digest.hexdigest())


def unit_data(path: str | os.PathLike[str], index: int) -> np.ndarray | None:
    """The values of one HDU's data (BZERO and BSCALE applied), or ``None`` when it has none.

    Raises
    ------
    FitsFormatError
        When the file cannot be read (the reason names the file).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(path, memmap=False) as hdul:
                data = hdul[index].data
                return None if data is None else np.array(data)
    except (OSError, ValueError, IndexError, TypeError) as exc:
        raise FitsFormatError(f"cannot read HDU {index}: {exc}", str(path)) from exc
