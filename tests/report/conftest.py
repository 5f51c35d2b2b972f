"""A processed simulated night for the report tests: 3 lights calibrated, 1 not (no 120 s dark), 1 file
rejected (its name holds HTML), ingested into a SQLite catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from astropy.io import fits

from ccdcal.catalog.db import Catalog
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.simulate import simulate_night

SHAPE = (60, 80)
#: A raw file that is not FITS, with a name a browser would read as markup if it were not escaped.
REJECTED_NAME = "bad<img src=x onerror=alert(1)>.fits"


@dataclass(frozen=True)
class Night:
    """Where the processed night is, and its run ids."""

    root: Path
    db: Path | str
    masters: Path
    calibrated: Path
    ingest_run: int
    process_run: int


def make_night(folder: Path, *, unmatched: bool = True, db: str | None = None) -> Night:
    """Simulate, ingest and process a small night in ``folder`` (see the module docstring); the catalog is
    ``folder/c.db``, or ``db`` (a URL)."""
    root = simulate_night(folder / "raw", seed=11, shape=SHAPE, n_bias=3, n_dark=3, n_flat=3, n_light=3).root
    if unmatched:
        with fits.open(root / "LIGHT" / "Light_001.fits") as hdul:
            header, data = hdul[0].header.copy(), hdul[0].data.copy()
        header["EXPTIME"] = 120.0
        fits.PrimaryHDU(data, header).writeto(root / "LIGHT" / "Light_120s.fits")
        (root / "LIGHT" / REJECTED_NAME).write_bytes(b"this is not a FITS file\n")
    catalog_db = db if db is not None else folder / "c.db"
    with Catalog(catalog_db) as catalog:
        ingested = ingest(catalog, [root])
        processed = process(
            catalog,
            ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated", jobs=1),
        )
    assert ingested.run_id is not None
    assert processed.run_id is not None
    return Night(
        root, catalog_db, folder / "masters", folder / "calibrated", ingested.run_id, processed.run_id
    )


@pytest.fixture(scope="session")
def night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    """The processed night, shared: tests only read it (a report is written to their own tmp_path)."""
    return make_night(tmp_path_factory.mktemp("report-night"))
