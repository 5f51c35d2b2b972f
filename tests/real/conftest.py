"""What every real-data test's outputs must hold, checked after each test on every calibrated light it
wrote (under its ``tmp_path``): ``NMASKED`` counts every pixel its MASK flags, and each ``NMASKn`` the
pixels of bit n (docs/design.md, Science)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ccdcal.lights.history import MASK_BITS


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
