"""A small processed night for the provenance, audit and impact tests (a helper module, not tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ccdcal.catalog.db import Catalog
from ccdcal.ingestion.core import ingest
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.lights.summary import ProcessSummary
from ccdcal.simulate import SimulatedNight, simulate_night

SHAPE = (48, 64)
BIAS = "master_bias_b2x2_g120_sNA_C-10.fits"
DARK = {t: f"master_dark_b2x2_g120_{t}s_C-10.fits" for t in (2, 5, 60, 300)}
FLAT = {"R": "master_flat_b2x2_g120_sNA_C-10_R.fits", "Ha": "master_flat_b2x2_g120_sNA_C-10_Ha.fits"}


@dataclass
class Night:
    """A simulated night ingested into ``db`` and processed into ``masters/`` and ``calibrated/``.

    Light_001 is in R at 60 s, Light_002 in Ha at 300 s (3 frames of each calibration kind).
    """

    root: Path
    db: Path | str
    night: SimulatedNight

    @property
    def masters(self) -> Path:
        return self.root / "masters"

    @property
    def calibrated(self) -> Path:
        return self.root / "calibrated"

    def raw(self, name: str) -> Path:
        """A raw file by name (``Bias_001.fits``)."""
        (found,) = [f for files in self.night.files.values() for f in files if f.name == name]
        return found

    def raw_named(self, prefix: str) -> list[Path]:
        """The raw files whose name starts with ``prefix``, sorted."""
        return sorted(f for files in self.night.files.values() for f in files if f.name.startswith(prefix))

    def options(self) -> ProcessOptions:
        return ProcessOptions(masters_dir=self.masters, output_dir=self.calibrated, jobs=1)

    def process(self) -> ProcessSummary:
        """Ingest the raw folder again, then process."""
        with Catalog(self.db) as catalog:
            ingest(catalog, [self.night.root])
            return process(catalog, self.options())


def processed_night(root: Path, *, seed: int = 3, n_bias: int = 3, db: str | None = None) -> Night:
    """Simulate, ingest and process a night under ``root`` (catalog ``db``, by default ``root/ccdcal.db``)."""
    night = simulate_night(root / "raw", seed=seed, shape=SHAPE, n_bias=n_bias, n_dark=3, n_flat=3, n_light=2)
    result = Night(root, db if db is not None else root / "ccdcal.db", night)
    summary = result.process()
    assert summary.exit_code == 0, summary.problem_lines()
    return result
