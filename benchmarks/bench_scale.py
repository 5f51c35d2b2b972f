"""Catalog scale: planning 100,000 lights and ``ccdcal status`` on a catalog of 200,000 frames.

Fills a fresh catalog (SQLite by default, or ``--db postgresql+psycopg://...``) by direct bulk inserts with
a realistic spread of keys: three cameras (a cooled CMOS at 1x1 and 2x2, a CCD, an LN2-cooled CCD without
darks), 400 nights, seven filters, set-point temperatures with the sensor a few tenths off, dark
exposures matching the lights'; 100,000 raw calibration frames and 100,000 lights, none calibrated, and
5,000 current masters (their files are not written: planning reads only the catalog). The lights are
sparse files of the catalogued size and mtime (planning checks that each raw file is still the one
catalogued), so every light is planned in full: its masters matched, its output chosen. With
``--history``, a catalog in use instead: each master made of frames of its camera (``master_inputs``), and
every light calibrated once with masters of its camera (a current calibration and its
``calibration_masters``). A PostgreSQL catalog is ``VACUUM ANALYZE``-d after filling, as autovacuum keeps a
catalog in use.

Then times, on that catalog:

1. ``process --dry-run`` (:func:`ccdcal.lights.pipeline.dry_run`): masters plan + the plan of every light,
   and the ``ccdcal process --dry-run`` command in a new process (interpreter start, imports, the plan
   of every light printed), as a user would wait for it;
2. ``ccdcal status`` (:func:`ccdcal.status.catalog_status`), and the ``ccdcal status`` command in a new
   process (interpreter start, imports, the table printed);

and with ``--explain`` prints the query plans of the matching and grouping selects (each must use an
index).

Run: ``.venv/bin/python benchmarks/bench_scale.py [--frames N] [--db URL] [--keep DIR] [--history]``; then
``--reuse DIR`` (with the same ``--db``) times that catalog again without filling it; ``--repeat N`` runs
each measure N times (the minimum is reported, with the maximum); ``--profile FILE`` writes cProfile stats
of one dry run. With ``--db postgresql+psycopg://HOST/NAME`` the catalog is a database of its own,
``NAME_bench_scale``, created for the run and dropped after it unless ``--keep`` (``NAME`` itself, e.g. the
tests' ``test``, is not touched).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import subprocess
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


def add_history(catalog: Any, folder: Path, seed: int = 2) -> dict[str, int]:
    """A catalog in use: each master made of frames of its kind and camera, and every light calibrated
    once (a current calibration with a bias, dark and flat of its camera, its ``steps`` as a calibration
    records them; output files not written)."""
    from sqlalchemy import insert, select

    from ccdcal.catalog.models import Calibration, CalibrationMaster, Frame, Master, MasterInput, utcnow

    rng = random.Random(seed)
    now = utcnow()
    with catalog.session() as session:
        frames: dict[tuple[Any, ...], list[tuple[int, str]]] = {}
        query = select(Frame.id, Frame.sha256, Frame.imagetyp, Frame.instrument, Frame.xbinning)
        for frame_id, sha256, kind, instrument, binning in session.execute(query):
            frames.setdefault((kind, instrument, binning), []).append((frame_id, sha256))
        masters: dict[tuple[Any, ...], list[tuple[int, str, str]]] = {}
        inputs = []
        query = select(
            Master.id,
            Master.kind,
            Master.instrument,
            Master.xbinning,
            Master.n_inputs,
            Master.path,
            Master.sha256,
        )
        for master_id, kind, instrument, binning, n_inputs, path, digest in session.execute(query):
            masters.setdefault((kind, instrument, binning), []).append((master_id, path, digest))
            pool = frames.get((kind, instrument, binning), [])
            for frame_id, sha256 in rng.sample(pool, min(n_inputs, len(pool))):
                inputs.append({"master_id": master_id, "frame_id": frame_id, "sha256": sha256})
        calibrations, links = [], []
        for key in (k for k in frames if k[0] == "light"):
            for frame_id, sha256 in frames[key]:
                calibration_id = len(calibrations) + 1
                steps: dict[str, Any] = {}
                for role in ("bias", "dark", "flat"):
                    choice = masters.get((role, *key[1:]))
                    if not choice:
                        steps[role] = {
                            "status": "not_available",
                            "reason": f"no {role} frames in the catalog",
                        }
                        continue
                    master_id, path, digest = rng.choice(choice)
                    links.append({"calibration_id": calibration_id, "role": role, "master_id": master_id})
                    delta_temp, delta_time = round(rng.uniform(-1, 1), 3), rng.uniform(-8e4, 8e4)
                    steps[role] = {  # as a calibration records it (Step.as_json, then the flat's extras)
                        "status": "applied",
                        "reason": f"nearest match: ΔT {delta_temp:+.2f} °C, Δt {delta_time / 3600:+.2f} h",
                        "master_id": master_id,
                        "path": path,
                        "sha256": digest,
                        "delta_temp": delta_temp,
                        "delta_time": delta_time,
                        "scale": 1.0 if role == "dark" else None,
                        "pinned": False,
                    }
                if "path" in steps["flat"]:
                    steps["flat"] |= {"flat_min": 0.01, "masked": 0, "norm_value": 1.0}
                calibrations.append(
                    {
                        "id": calibration_id,
                        "frame_id": frame_id,
                        "raw_sha256": sha256,
                        "path": str(folder / "calibrated" / f"light_{frame_id:07d}_cal.fits"),
                        "sha256": f"{frame_id:064x}",
                        "status": "current",
                        "steps": steps,
                        "created_at": now,
                    }
                )
        for model, rows in ((MasterInput, inputs), (Calibration, calibrations), (CalibrationMaster, links)):
            for i in range(0, len(rows), 20_000):
                session.execute(insert(model), rows[i : i + 20_000])
    return {
        "master_inputs": len(inputs),
        "calibrations": len(calibrations),
        "calibration_masters": len(links),
    }


def explain(catalog: Any) -> None:
    """Print the query plans of the matching and grouping selects, and the tables any reads in full."""
    from ccdcal.catalog.explain import planned_statements, query_plan, table_scans

    with catalog.session() as session:
        for name, statement in planned_statements().items():
            plan = query_plan(session, statement)
            print(f"  {name}: full scans {table_scans(plan) or 'none'}")
            for line in plan:
                print(f"    {line}")


def timed(label: str, call: Any, repeat: int, profile: Path | None, before: Any = None) -> Any:
    """Run ``call`` ``repeat`` times; print min and spread of the wall time; return the last result.

    With ``profile``, the first run is under cProfile (its stats written to ``profile``) and not timed;
    ``before`` (if given) is called, untimed, before each run.
    """
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(call)
        profiler.dump_stats(str(profile))
        print(f"  {label}: profile written to {profile}")
    times, result = [], None
    for _ in range(repeat):
        result = None  # the previous result is freed before the clock starts
        if before is not None:
            before()
        begin = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - begin)
    spread = f" (max {max(times):.2f} s over {len(times)} runs)" if len(times) > 1 else ""
    print(f"  {label}: min {min(times):.3f} s{spread}")
    return result, min(times)


def bench_database(url: str) -> str:
    """The PostgreSQL database the benchmark works in: ``{database}_bench_scale`` on the server of
    ``url`` (the database ``url`` names is never touched: the tests' ``test`` database stays as it is)."""
    from sqlalchemy import make_url

    target = make_url(url)
    return target.set(database=f"{target.database or 'postgres'}_bench_scale").render_as_string(
        hide_password=False
    )


def create_pg_database(url: str) -> None:
    """Create the benchmark's PostgreSQL database afresh (dropped first if a former run left it)."""
    from sqlalchemy import create_engine, make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    admin.dispose()


def analyze(url: str) -> None:
    """``VACUUM ANALYZE`` a PostgreSQL database (table statistics and visibility, as autovacuum keeps)."""
    from sqlalchemy import create_engine

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def drop_pg_database(url: str) -> None:
    """Drop the benchmark's PostgreSQL database."""
    from sqlalchemy import create_engine, make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
    admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="raw frames (half of them lights)")
    parser.add_argument("--masters", type=int, default=5_000, help="current masters")
    parser.add_argument(
        "--db",
        default=None,
        help="a SQLAlchemy URL (default: SQLite in the work folder); on PostgreSQL the catalog is the "
        "database NAME_bench_scale beside the one named, created and dropped at the end unless --keep",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument(
        "--reuse", type=Path, default=None, help="time the catalog filled by an earlier --keep run here"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each measure (min reported)")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of a dry run here")
    parser.add_argument(
        "--history",
        action="store_true",
        help="a catalog in use: masters with their inputs, every light calibrated once (with --keep)",
    )
    parser.add_argument("--explain", action="store_true", help="print the query plans too")
    args = parser.parse_args()

    from ccdcal.catalog.db import Catalog

    folder = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-bench-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    is_pg = args.db is not None and args.db.startswith("postgresql")
    db = bench_database(args.db) if is_pg else str(folder / "ccdcal.db")
    try:
        if is_pg and args.reuse is None:
            create_pg_database(db)
        catalog = Catalog(db)
        if args.reuse is None:
            begin = time.perf_counter()
            counts = fill(catalog, folder, args.frames, args.masters)
            if args.history:
                counts |= add_history(catalog, folder)
            if is_pg:  # what autovacuum does to a catalog in use
                analyze(db)
            print(f"catalog {catalog.name}: filled in {time.perf_counter() - begin:.1f} s: {counts}")
        else:
            print(f"catalog {catalog.name}: reused")
        measure(catalog, folder, args)
        if args.explain:
            explain(catalog)
        catalog.close()
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(folder, ignore_errors=True)
            if is_pg:
                drop_pg_database(db)
    return 0


def measure(catalog: Any, folder: Path, args: argparse.Namespace) -> None:
    """Time the dry run and ``status`` on the filled catalog."""
    from ccdcal.lights.options import ProcessOptions
    from ccdcal.lights.pipeline import dry_run
    from ccdcal.status import catalog_status

    options = ProcessOptions(masters_dir=folder / "masters", output_dir=folder / "calibrated")
    url = catalog.url.render_as_string(hide_password=False)
    # A dry run's provisional masters are rolled back: on PostgreSQL they leave dead rows, which autovacuum
    # clears on a server where it runs; here each run starts from a vacuumed catalog.
    tidy = (lambda: analyze(url)) if catalog.url.get_backend_name() == "postgresql" else None
    summary, plan = timed(
        "process --dry-run", lambda: dry_run(catalog, options), args.repeat, args.profile, tidy
    )
    outcomes: dict[str, int] = {}
    for light in summary.lights:
        outcomes[light.outcome] = outcomes.get(light.outcome, 0) + 1
    print(
        f"process --dry-run: {plan:.2f} s for {len(summary.lights)} lights "
        f"({plan / max(len(summary.lights), 1) * 1e6:.0f} µs a light; target {PLAN_TARGET:g} s) "
        f"{outcomes}; masters {len(summary.masters_of('build'))} to build, "
        f"{len(summary.masters_of('current'))} current, {len(summary.masters_of('skipped'))} skipped"
    )
    ccdcal = str(Path(sys.executable).with_name("ccdcal"))
    folders = ["--masters-dir", str(folder / "masters"), "--output-dir", str(folder / "calibrated")]
    plan_command = [ccdcal, "--db", url, "process", "--dry-run", *folders]
    _, wall = timed(
        "ccdcal process --dry-run (command line)",
        lambda: subprocess.run(plan_command, check=True, stdout=subprocess.DEVNULL),
        args.repeat,
        None,
        tidy,
    )
    print(
        f"ccdcal process --dry-run, command line: {wall:.2f} s wall, start-up and the printed plan "
        f"({2 * len(summary.lights)} lines) included (target {PLAN_TARGET:g} s)"
    )
    status, took = timed("status", lambda: catalog_status(catalog), args.repeat, None)
    print(
        f"status: {took:.2f} s (target {STATUS_TARGET:g} s); "
        f"{sum(len(g) for g in status['groups'].values())} groups"
    )
    command = [ccdcal, "--db", url, "status"]
    _, wall = timed(
        "ccdcal status (command line)",
        lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL),
        args.repeat,
        None,
    )
    print(f"ccdcal status, command line: {wall:.2f} s wall, start-up included (target {STATUS_TARGET:g} s)")


if __name__ == "__main__":
    sys.exit(main())
