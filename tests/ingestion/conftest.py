"""Small FITS files built on demand for ingest tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

MakeFits = Callable[..., Path]


@pytest.fixture
def make_fits() -> MakeFits:
    """Write a small 2-D FITS image with the given header cards; returns its path."""

    def make(path: Path, cards: dict[str, Any] | None = None, shape=(8, 10), seed: int = 0) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        data = rng.integers(900, 1100, size=shape).astype(np.uint16)
        header = fits.Header()
        for key, value in (cards or {}).items():
            header[key] = value
        fits.PrimaryHDU(data, header).writeto(path)
        return path

    return make
