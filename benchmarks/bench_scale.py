"""Catalog scale: planning 100,000 lights and ``ccdcal status`` on a catalog of 200,000 frames.

Fills a fresh catalog (SQLite by default, or ``--db postgresql+psycopg://...``) by direct bulk inserts with
a realistic spread of keys: three cameras (a cooled CMOS at 1x1 and 2x2, a CCD, an LN2-cooled CCD without
darks), 400 nights, seven filters, set-point temperatures with the sensor a few tenths off, dark
exposures matching the lights'; 100,000 raw calibration frames and 100,000 lights, none calibrated, and
5,000 current masters (their files are not written: planning reads only the catalog). The lights are
sparse files of the catalogued size and mtime (planning checks that each raw file is still the one
catalogued), so every light is planned in full: its masters matched in SQL, its output chosen.

Then times, on that catalog:

1. ``process --dry-run`` (:func:`ccdcal.pipeline.dry_run`): masters plan + the plan of every light;
2. ``ccdcal status`` (:func:`ccdcal.status.catalog_status`);

and prints the query plans of the matching and grouping selects (each must use an index).

Run: ``.venv/bin/python benchmarks/bench_scale.py [--frames N] [--db URL] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PLAN_TARGET = 5.0
STATUS_TARGET = 1.0

CAMERAS = [
    # instrument, binnings, gain, offset, set temps, kinds with frames
    ("ZWO ASI294MM Pro", (1, 2), 120.0, 30.0, (-10.0, -15.0), ("bias", "dark", "flat")),
    ("SBIG STL-1001E", (1,), None, None, (-20.0, -25.0), ("bias", "dark", "flat")),
    ("PI LN2 1340", (1,), None, None, (None,), ("bias", "flat")),
]
FILTERS = ["L", "R", "G", "B", "Ha", "OIII", "SII"]
EXPOSURES = [60.0, 120.0, 300.0, 600.0]
SHAPE = {1: (4144, 2822), 2: (2072, 1411)}


def fill(catalog: Any, folder: Path, n_frames: int, n_masters: int, seed: int = 1) -> dict[str, int]:
    """Bulk insert frames and masters, and write the lights as sparse files; return counts by kind."""
    import os

    from sqlalchemy import insert

    from ccdcal.catalog.models import Frame, Master, utcnow

    rng = random.Random(seed)
    start = dt.datetime(2025, 1, 1, 20, 0, 0)
    nights = 400
    now = utcnow()
    counts: dict[str, int] = {}
    frames: list[dict[str, Any]] = []
    setups = []
    for instrument, binnings, gain, offset, temps, kinds in CAMERAS:
        for binning in binnings:
            for temp in temps:
                setups.append((instrument, binning, gain, offset, temp, kinds))
    n_lights = n_frames // 2
    for index in range(n_frames):
        instrument, binning, gain, offset, temp, kinds = rng.choice(setups)
        night = rng.randrange(nights)
        when = start + dt.timedelta(days=night, seconds=rng.uniform(0, 8 * 3600))
        kind = "light" if index < n_lights else rng.choice(kinds)
        exptime = {
            "bias": 0.0,
            "dark": rng.choice(EXPOSURES),
            "flat": rng.choice([1.0, 2.0, 5.0]),
            "light": rng.choice(EXPOSURES),
        }[kind]
        band = rng.choice(FILTERS) if kind in ("flat", "light") else None
        ccd_temp = None if temp is None else round(temp + rng.gauss(0, 0.3), 2)
        naxis1, naxis2 = SHAPE[binning]
        counts[kind] = counts.get(kind, 0) + 1
        path = folder / "data" / f"night{night:03d}" / kind / f"{instrument[:4]}_{index:07d}.fits"
        size, mtime = naxis1 * naxis2 * 2 + 5760, 1.7e9 + index
        if kind == "light":
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                handle.truncate(size)
            os.utime(path, (mtime, mtime))
        frames.append(
            {
                "path": str(path),
                "sha256": f"{index:064x}",
                "size": size,
                "mtime": mtime,
                "status": "ok",
                "hdu": 0,
                "imagetyp": kind,
                "imagetyp_source": "header",
                "exptime": exptime,
                "ccd_temp": ccd_temp,
                "set_temp": temp,
                "temp_key": temp if temp is not None else None,
                "xbinning": binning,
                "ybinning": binning,
                "gain": gain,
                "offset": offset,
                "filter": band,
                "instrument": instrument,
                "readout_mode": None,
                "naxis1": naxis1,
                "naxis2": naxis2,
                "bitpix": 16,
                "date_obs": when,
                "is_bad": False,
                "ingested_at": now,
            }
        )
    masters: list[dict[str, Any]] = []
    for index in range(n_masters):
        instrument, binning, gain, offset, temp, kinds = rng.choice(setups)
        kind = rng.choice(kinds)
        night = rng.randrange(nights)
        naxis1, naxis2 = SHAPE[binning]
        exptime = rng.choice(EXPOSURES) if kind == "dark" else None
        band = rng.choice(FILTERS) if kind == "flat" else None
        masters.append(
            {
                "kind": kind,
                "path": str(folder / "masters" / f"master_{kind}_{index:05d}.fits"),
                "sha256": f"{index:064x}",
                "identity": f"{index:064x}",
                "version": 1,
                "xbinning": binning,
                "ybinning": binning,
                "gain": gain,
                "offset": offset,
                "exptime": exptime,
                "temp_key": temp,
                "filter": band,
                "instrument": instrument,
                "readout_mode": None,
                "naxis1": naxis1,
                "naxis2": naxis2,
                "includes_bias": False,
                "ccd_temp_mean": None if temp is None else round(temp + rng.gauss(0, 0.2), 3),
                "date_obs_mean": start + dt.timedelta(days=night, hours=2),
                "n_inputs": rng.randint(3, 50),
                "method": "sigma_clipped_median",
                "parameters": {},
                "status": "current",
                "is_bad": False,
                "created_at": now,
            }
        )
    with catalog.session() as session:
        for i in range(0, len(frames), 20_000):
            session.execute(insert(Frame), frames[i : i + 20_000])
        for i in range(0, len(masters), 20_000):
            session.execute(insert(Master), masters[i : i + 20_000])
    counts["masters"] = n_masters
    return counts


def explain(catalog: Any) -> None:
    """Print the query plans of the matching and grouping selects."""
    from ccdcal.catalog.explain import matching_plans

    for name, plan in matching_plans(catalog).items():
        print(f"  {name}:")
        for line in plan:
            print(f"    {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="raw frames (half of them lights)")
    parser.add_argument("--masters", type=int, default=5_000, help="current masters")
    parser.add_argument("--db", default=None, help="a SQLAlchemy URL (default: SQLite in a temp folder)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--explain", action="store_true", help="print the query plans too")
    args = parser.parse_args()

    from ccdcal.catalog.db import Catalog
    from ccdcal.pipeline import ProcessOptions, dry_run
    from ccdcal.status import catalog_status

    folder = args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-bench-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        catalog = Catalog(args.db or folder / "ccdcal.db")
        begin = time.perf_counter()
        counts = fill(catalog, folder, args.frames, args.masters)
        print(f"catalog {catalog.name}: filled in {time.perf_counter() - begin:.1f} s: {counts}")
        options = ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated")
        begin = time.perf_counter()
        summary = dry_run(catalog, options)
        plan = time.perf_counter() - begin
        outcomes: dict[str, int] = {}
        for light in summary.lights:
            outcomes[light.outcome] = outcomes.get(light.outcome, 0) + 1
        print(
            f"process --dry-run: {plan:.2f} s for {len(summary.lights)} lights "
            f"({plan / max(len(summary.lights), 1) * 1e6:.0f} µs a light; target {PLAN_TARGET:g} s) "
            f"{outcomes}"
        )
        begin = time.perf_counter()
        status = catalog_status(catalog)
        took = time.perf_counter() - begin
        print(
            f"status: {took:.2f} s (target {STATUS_TARGET:g} s); "
            f"{sum(len(g) for g in status['groups'].values())} groups"
        )
        if args.explain:
            explain(catalog)
        catalog.close()
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
