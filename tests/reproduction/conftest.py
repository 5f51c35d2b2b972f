"""Reduced nights every optional step of ccdcal took part in, for ``ccdcal reproduce`` (on SQLite, then
PostgreSQL): the simulated night with bad-pixel masks, a scaled dark, uncertainty and cosmic rays, and a
small CCD with an overscan strip reduced with every step too."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Calibration, Frame, Master
from ccdcal.catalog.queries import MatchRules
from ccdcal.files.fitsio import sha256_file
from ccdcal.ingestion.core import ingest
from ccdcal.kernels.cosmic import CosmicParams
from ccdcal.kernels.options import StepOptions
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.masters.build import build_masters
from ccdcal.masters.groups import MasterOptions
from ccdcal.simulate import simulate_night
from tests.conftest import pg_database

#: Every optional step of a light: uncertainty (with a read noise: the simulated headers have none), cosmic
#: rays (the bad-pixel mask applies when one is built).
ALL_STEPS = StepOptions(uncertainty=True, readnoise=3.5, cosmic=CosmicParams())


@dataclass
class Reduced:
    """A reduced night: its folder, catalog, raw folder, masters and outputs."""

    root: Path
    db: str
    raw: Path

    @property
    def masters(self) -> Path:
        return self.root / "masters"

    @property
    def calibrated(self) -> Path:
        return self.root / "calibrated"

    def catalog(self) -> Catalog:
        return Catalog(self.db)


def reduce(root: Path, db: str, raw: Path, optional: StepOptions, *, dark_scale: bool = False) -> Reduced:
    """Ingest ``raw``, build the masters with bad-pixel masks, then calibrate with ``optional``."""
    night = Reduced(root, db, raw)
    with night.catalog() as catalog:
        ingest(catalog, [raw])
        masters = MasterOptions(masters_dir=night.masters, bpm=True, optional=optional.for_masters())
        assert build_masters(catalog, masters).exit_code == 0
        options = ProcessOptions(
            masters_dir=night.masters,
            output_dir=night.calibrated,
            jobs=1,
            rules=MatchRules(dark_scale=dark_scale),
            optional=optional,
        )
        summary = process(catalog, options)
        assert summary.exit_code == 0, summary.problem_lines()
        assert summary.of("calibrated")
    return night


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory, module_db_url: str) -> Reduced:
    """The simulated night without its 60 s darks (Light_001, 60 s, takes the 300 s dark scaled by 0.2;
    the flats a 2 s or 5 s dark flat), every master with its bad-pixel mask, every light with uncertainty
    and cosmic rays."""
    root = tmp_path_factory.mktemp("reproduce")
    sim = simulate_night(root / "raw", seed=3, shape=(48, 64), n_bias=3, n_dark=3, n_flat=3, n_light=2)
    for path in sim.files["dark"]:
        if "_60s_" in path.name:
            path.unlink()
    return reduce(root, module_db_url, root / "raw", ALL_STEPS, dark_scale=True)


SHAPE = (40, 70)


def write_overscan_ccd(root: Path) -> Path:
    """A CCD with an overscan strip (BIASSEC/TRIMSEC), EGAIN and RDNOISE: 3 biases, 3 flats, 2 lights."""
    rng = np.random.default_rng(5)
    root.mkdir(parents=True)
    level = 1200 + 0.4 * np.arange(SHAPE[0])[:, None]
    flat_field = rng.normal(1.0, 0.02, (SHAPE[0], 53))
    flat_field[10, 20] = 0.2  # a dead pixel for the bad-pixel mask
    frames = [("bias", i, 0.0, 0.0) for i in range(3)]
    frames += [("flat", i, 2.0, 20000.0) for i in range(3)] + [("light", i, 60.0, 800.0) for i in range(2)]
    for kind, i, exptime, signal in frames:
        data = level + rng.normal(0, 4, SHAPE) + i
        data[:, 3:56] += signal * flat_field
        if kind == "light":
            data[5 + i, 30] += 5000.0  # a cosmic ray
        header = fits.Header()
        header["IMAGETYP"] = kind.upper()
        header["EXPTIME"] = exptime
        header["FILTER"] = "V"
        header["DATE-OBS"] = f"2026-01-01T0{i}:00:00"
        header["BIASSEC"] = "[61:70,1:40]"
        header["TRIMSEC"] = "[4:56,1:40]"
        header["EGAIN"], header["RDNOISE"] = 1.5, 6.0
        fits.PrimaryHDU(np.rint(data).astype(np.uint16), header).writeto(root / f"{kind}_{i}.fits")
    return root


@pytest.fixture(scope="module")
def ccd(tmp_path_factory: pytest.TempPathFactory, module_db_url: str) -> Iterator[Reduced]:
    """The overscan CCD reduced with every step, in a catalog of its own on the backend of
    ``module_db_url``: overscan fitted by a line and trimmed, bad-pixel mask, uncertainty, cosmic rays."""
    root = tmp_path_factory.mktemp("reproduce-ccd")
    optional = StepOptions.parse(overscan="poly:1", uncertainty=True, cosmic_rays=True)
    raw = write_overscan_ccd(root / "raw")
    if not module_db_url.startswith("postgresql"):
        yield reduce(root, str(root / "ccdcal.db"), raw, optional)
        return
    with pg_database() as url:
        yield reduce(root, url, raw, optional)


def calibration_of(catalog: Catalog, light: str) -> Calibration:
    """The current calibration of the light whose file name starts with ``light``."""
    with catalog.reading() as session:
        return session.scalars(
            select(Calibration)
            .join(Frame, Frame.id == Calibration.frame_id)
            .where(Frame.path.contains(light), Calibration.status == "current")
        ).one()


def master_of(catalog: Catalog, kind: str, **keys: Any) -> Master:
    with catalog.reading() as session:
        return session.scalars(select(Master).filter_by(kind=kind, status="current", **keys)).one()


@contextmanager
def flipped(path: Path | str, hdu: int = 0, at: int = 100) -> Iterator[tuple[str, str]]:
    """One byte of ``hdu``'s data unit flipped for the length of the block: (sha256 before, after)."""
    path = Path(path)
    with fits.open(path) as hdul:
        offset = int(hdul.fileinfo(hdu)["datLoc"]) + at
    before, content = sha256_file(path), bytearray(path.read_bytes())
    stat = path.stat()
    content[offset] ^= 0x10
    path.write_bytes(bytes(content))
    try:
        yield before, sha256_file(path)
    finally:
        content[offset] ^= 0x10
        path.write_bytes(bytes(content))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
