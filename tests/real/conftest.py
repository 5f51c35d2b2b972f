"""What every real-data test's outputs must hold, checked after each test on every calibrated light it
wrote (under its ``tmp_path``): ``NMASKED`` counts every pixel its MASK flags, and each ``NMASKn`` the
pixels of bit n (docs/design.md, Science); and what each test asks of its catalog at its end
(:func:`every_result_reproduced`): every calibrated file and master made again, bit for bit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Master
from ccdcal.lights.history import MASK_BITS
from ccdcal.reproduction.core import reproduce


def mask_counts_hold(path: Path) -> None:
    with fits.open(path) as hdul:
        header = hdul[0].header
        if "CCDCALV" not in header or "NMASKED" not in header:
            return
        mask = np.asarray(hdul["MASK"].data) if "MASK" in hdul else np.zeros(1, dtype=np.uint8)
        assert header["NMASKED"] == int(np.count_nonzero(mask)), path
        for bit, _ in MASK_BITS:
            assert header[f"NMASK{bit}"] == int(np.count_nonzero(mask & bit)), (path, bit)


@pytest.fixture(autouse=True)
def outputs_count_their_masks(tmp_path: Path) -> Iterator[None]:
    yield
    for path in sorted(tmp_path.rglob("*_cal*.fits")):
        mask_counts_hold(path)


def every_result_reproduced(catalog: Catalog) -> int:
    """``ccdcal reproduce`` of every current calibrated file and every master of the catalog: each made
    again bit for bit (exit 0). Returns how many."""
    with catalog.reading() as session:
        refs = [
            f"calibration:{i}" for i in session.scalars(select(Calibration.id).filter_by(status="current"))
        ]
        refs += [f"master:{i}" for i in session.scalars(select(Master.id))]
    failed = {}
    for ref in refs:
        result = reproduce(catalog, ref)
        if result.exit_code:
            failed[ref] = result.lines()
    assert failed == {}
    assert refs
    return len(refs)
