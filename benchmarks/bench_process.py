"""Calibration speed: ``ccdcal process`` against a loop of ``ccdproc.ccd_process`` + ``CCDData.write``.

Builds, in a temporary folder, a simulated night (``ccdcal.simulate``: a cooled CMOS camera, N.I.N.A.
headers, uint16 pixels with BZERO 32768) with N lights (default 50 of 2048 x 2048), ingests it and builds
its masters (not timed), then times, on the same frames in the same run:

1. ccdproc: for each light, ``CCDData.read`` + ``ccdproc.ccd_process(master_bias, dark_frame,
   master_flat, dark_scale=True, min_value=0.01)`` + ``CCDData.write`` (masters read once);
2. ccdcal: ``ccdcal.lights.pipeline.process(..., redo=True)`` with ``--jobs 1`` then ``--jobs 2``: end to end,
   planning, masters check, per-frame work and every catalog write (rows, superseding, renames);
3. with ``--dask``: the same with ``--scheduler`` on a Dask ``LocalCluster`` of two worker processes (one
   thread each), started once before the timed passes (a cluster that already runs, as on a site).

``--db postgresql+psycopg://...`` puts the catalog in that (empty) PostgreSQL database instead of SQLite.

Each contender is timed on its second pass, replacing the files of its first: on a virtual machine, page
cache never used before can cost ten times more to write than recycled pages, and both should pay the
same. ccdcal's first pass also loads numba's compiled kernels (warmed up before workers are forked) and
reads the masters into the coordinator's cache (forked workers inherit it), as ccdproc's loop is given its
masters read once; a command-line run reads each master once more (about 30 ms a 2048 x 2048 master).

Prints per-frame times, the throughput ratio against ccdproc, the scaling from one job to two, and the
largest difference between ccdcal's output and ccdproc's definition (``flat_correct(..., norm_value=1)``)
on the first light.

``--repeat N`` runs N rounds, each timing ccdproc, ``--jobs 1`` and ``--jobs 2`` one after the other, and
prints each round's ratios and the medians (a shared machine's speed drifts: a ratio is only fair
within a round); ``--one-cpu`` pins ccdproc and ``--jobs 1`` to one CPU, so that no thread of either
borrows the second core; ``--reuse DIR`` starts from a folder an earlier ``--keep DIR`` left.

Run: ``.venv/bin/python benchmarks/bench_process.py [--quick] [--lights N] [--size S] [--keep DIR]
[--reuse DIR] [--repeat N] [--one-cpu] [--db URL] [--dask]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TARGET_RATIO = 3.0


def prepare(folder: Path, n_lights: int, size: int, db: str | None = None) -> tuple[Any, dict[str, Path]]:
    """Simulate, ingest, build masters; return the catalog and the master files by name part."""
    from ccdcal.catalog.db import Catalog
    from ccdcal.ingestion.core import ingest
    from ccdcal.masters.build import build_masters
    from ccdcal.masters.groups import MasterOptions
    from ccdcal.simulate import simulate_night

    start = time.perf_counter()
    night = simulate_night(
        folder / "raw", seed=1, shape=(size, size), n_bias=5, n_dark=3, n_flat=5, n_light=n_lights
    )
    print(
        f"simulated {sum(len(f) for f in night.files.values())} frames in {time.perf_counter() - start:.1f} s"
    )
    catalog = Catalog(db or folder / "ccdcal.db")
    ingest(catalog, [night.root])
    start = time.perf_counter()
    summary = build_masters(catalog, MasterOptions(masters_dir=folder / "masters"))
    print(f"built {len(summary.of('built'))} masters in {time.perf_counter() - start:.1f} s")
    masters = {Path(r.path).name: Path(r.path) for r in summary.of("built") if r.path}
    return catalog, masters


def run_ccdproc(lights: list[Path], masters: dict[str, Path], out: Path) -> list[float]:
    """ccdproc's calibration of every light, written as a file; per-frame seconds."""
    import astropy.units as u
    import ccdproc
    from astropy.nddata import CCDData

    def master(part: str) -> CCDData:
        (name,) = [n for n in masters if part in n]
        return CCDData.read(masters[name], unit="adu" if "flat" not in part else "")

    bias = master("bias")
    darks = {t: master(f"_{t}s_") for t in ("60", "300")}
    flats = {f: master(f"_{f}.fits") for f in ("R", "Ha")}
    out.mkdir(parents=True, exist_ok=True)
    times = []
    for light in lights:
        start = time.perf_counter()
        ccd = CCDData.read(light, unit="adu")
        band = ccd.header["FILTER"]
        result = ccdproc.ccd_process(
            ccd,
            master_bias=bias,
            dark_frame=darks["60" if band == "R" else "300"],
            master_flat=flats[band],
            exposure_key="EXPTIME",
            exposure_unit=u.s,
            dark_scale=True,
            min_value=0.01,
        )
        result.write(out / light.name, overwrite=True)
        times.append(time.perf_counter() - start)
    return times


def run_ccdcal(
    catalog: Any, folder: Path, jobs: int, scheduler: str | None = None
) -> tuple[float, int, list[float]]:
    """``process --redo --jobs N [--scheduler ADDR]``: wall seconds, lights calibrated, worker seconds per
    frame."""
    from ccdcal.lights.options import ProcessOptions
    from ccdcal.lights.pipeline import process

    options = ProcessOptions(
        masters_dir=folder / "masters",
        output_dir=folder / "calibrated",
        jobs=jobs,
        redo=True,
        scheduler=scheduler,
    )
    start = time.perf_counter()
    summary = process(catalog, options)
    wall = time.perf_counter() - start
    seconds = [light.seconds for light in summary.of("calibrated") if light.seconds is not None]
    return wall, len(summary.of("calibrated")), seconds


def run_dask(catalog: Any, folder: Path, n_lights: int) -> float:
    """Seconds a frame of ``process --redo --scheduler ADDR`` on a 2-worker LocalCluster started here."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_ccdcal(catalog, folder, 2, cluster.scheduler_address)  # warm-up: workers load the kernels
        wall, done, worker = run_ccdcal(catalog, folder, 2, cluster.scheduler_address)
    assert done == n_lights, f"{done} of {n_lights} lights calibrated"
    print(
        f"  ccdcal process --scheduler (Dask) {wall / n_lights * 1e3:7.1f} ms  "
        f"(worker {statistics.fmean(worker) * 1e3:.1f} ms a frame, wall {wall:.2f} s)"
    )
    return wall / n_lights


def agreement(catalog: Any, light: Path) -> float:
    """max |ccdcal − ccdproc definition| / max(|ccdproc|, 1) on one light."""
    import astropy.units as u
    import ccdproc
    from astropy.io import fits
    from astropy.nddata import CCDData
    from sqlalchemy import select

    from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master

    with catalog.session() as session:
        frame_id = session.scalar(select(Frame.id).where(Frame.path == str(light)))
        calibration = session.scalars(
            select(Calibration).where(Calibration.frame_id == frame_id, Calibration.status == "current")
        ).one()
        used = {
            link.role: session.get(Master, link.master_id).path  # type: ignore[union-attr]
            for link in session.scalars(
                select(CalibrationMaster).where(CalibrationMaster.calibration_id == calibration.id)
            )
        }
    data = CCDData(fits.getdata(light).astype(np.float64), unit="adu", meta=fits.getheader(light))
    data = ccdproc.subtract_bias(data, CCDData.read(used["bias"]))
    data = ccdproc.subtract_dark(
        data, CCDData.read(used["dark"]), exposure_time="EXPTIME", exposure_unit=u.s, scale=True
    )
    data = ccdproc.flat_correct(data, CCDData.read(used["flat"]), min_value=0.01, norm_value=1)
    ours = fits.getdata(calibration.path).astype(np.float64)
    return float(np.max(np.abs(ours - data.data) / np.maximum(np.abs(data.data), 1.0)))


def report_rounds(rounds: list[tuple[float, Any, Any]], n_lights: int) -> None:
    """Per-frame times (median over rounds, with the range), and the ratios of each round."""

    def line(label: str, values: list[float], extra: str = "") -> None:
        values = sorted(v * 1e3 for v in values)
        spread = f"; {len(values)} rounds {values[0]:.1f} to {values[-1]:.1f} ms" if len(values) > 1 else ""
        print(f"  {label:<33}{statistics.median(values):7.1f} ms  ({extra}{spread})".replace("(; ", "("))

    line("ccdproc ccd_process + write", [r[0] for r in rounds])
    for jobs in (1, 2):
        runs = [r[jobs] for r in rounds]
        worker = statistics.median(statistics.fmean(run[2]) for run in runs)
        line(
            f"ccdcal process --jobs {jobs}",
            [run[0] / n_lights for run in runs],
            f"worker {worker * 1e3:.1f} ms a frame; wall incl. plan and catalog writes",
        )
    ones = [r[0] / (r[1][0] / n_lights) for r in rounds]
    twos = [r[0] / (r[2][0] / n_lights) for r in rounds]
    scaling = [r[1][0] / r[2][0] for r in rounds]
    print("  ratios by round (ccdproc / ccdcal, same round):")
    print("    --jobs 1: " + ", ".join(f"{x:.2f}x" for x in ones))
    print("    --jobs 2: " + ", ".join(f"{x:.2f}x" for x in twos))
    print("    scaling:  " + ", ".join(f"{x:.2f}x" for x in scaling))
    print(
        f"\nthroughput vs ccdproc (median of rounds): {statistics.median(ones):.2f}x with one job, "
        f"{statistics.median(twos):.2f}x with two (target {TARGET_RATIO:g}x on one core); "
        f"scaling from one job to two {statistics.median(scaling):.2f}x"
    )


def fits_side(path: Path) -> int:
    """NAXIS1 of a FITS file's primary image."""
    from astropy.io import fits

    return int(fits.getheader(path)["NAXIS1"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 lights of 512 x 512")
    parser.add_argument("--lights", type=int, default=None, help="number of lights (default 50)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 2048)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--db", default=None, help="catalog URL (an empty database; default SQLite)")
    parser.add_argument("--dask", action="store_true", help="also on a 2-worker Dask LocalCluster")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a folder kept by an earlier --keep: skip simulation and masters",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds (ccdproc, --jobs 1, --jobs 2 each time; medians compared)",
    )
    parser.add_argument(
        "--one-cpu",
        action="store_true",
        help="pin ccdproc and --jobs 1 (threads included) to one CPU",
    )
    args = parser.parse_args()
    n_lights = args.lights or (10 if args.quick else 50)
    size = args.size or (512 if args.quick else 2048)
    folder = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-bench-process-"))
    warnings.simplefilter(
        "ignore"
    )  # astropy's WCS 'datfix' notes on the N.I.N.A. headers, in ccdproc's reads
    try:
        if args.reuse:
            from ccdcal.catalog.db import Catalog

            catalog = Catalog(args.db or folder / "ccdcal.db")
            masters = {path.name: path for path in sorted((folder / "masters").glob("*.fits"))}
        else:
            catalog, masters = prepare(folder, n_lights, size, args.db)
        lights = sorted((folder / "raw" / "LIGHT").iterdir())
        n_lights = len(lights)
        size = fits_side(lights[0])
        everywhere = os.sched_getaffinity(0)
        one_cpu = {min(everywhere)} if args.one_cpu else everywhere
        for light in lights:  # page cache
            light.read_bytes()
        print(f"\n{n_lights} lights of {size} x {size} (uint16), masters float32; per frame, end to end:")
        if args.one_cpu:
            print(f"ccdproc and --jobs 1 pinned to CPU {min(everywhere)}")
        os.sched_setaffinity(0, one_cpu)
        run_ccdproc(lights, masters, folder / "ccdproc")  # warm-ups: their timed passes replace these files
        run_ccdcal(catalog, folder, 1)  # and numba's cache, the masters read
        rounds = []  # (ccdproc s/frame, --jobs 1 run, --jobs 2 run): one after the other, same conditions
        for _ in range(args.repeat):
            os.sched_setaffinity(0, one_cpu)
            reference = statistics.fmean(run_ccdproc(lights, masters, folder / "ccdproc"))
            one = run_ccdcal(catalog, folder, 1)
            os.sched_setaffinity(0, everywhere)
            two = run_ccdcal(catalog, folder, 2)
            for _wall, done, _worker in (one, two):
                assert done == n_lights, f"{done} of {n_lights} lights calibrated"
            rounds.append((reference, one, two))
        os.sched_setaffinity(0, everywhere)
        report_rounds(rounds, n_lights)
        per_ccdproc = statistics.median(r[0] for r in rounds)
        results = {1: statistics.median(r[1][0] for r in rounds) / n_lights}
        results[2] = statistics.median(r[2][0] for r in rounds) / n_lights
        if args.dask:
            per_dask = run_dask(catalog, folder, n_lights)
            print(
                f"Dask LocalCluster (2 workers): {per_dask * 1e3:.1f} ms a frame, "
                f"{per_ccdproc / per_dask:.2f}x ccdproc, {results[2] / per_dask:.2f}x of --jobs 2"
            )
        difference = agreement(catalog, lights[0])
        print(f"largest difference from ccdproc (norm_value=1), first light: {difference:.2e}")
        catalog.close()
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
