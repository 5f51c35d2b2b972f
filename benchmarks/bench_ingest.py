"""Ingest speed: the ``ccdcal ingest`` command against ``ccdproc.ImageFileCollection(keywords='*')`` on the
same tree, in the same run.

Builds N FITS files (default 3,000) with realistic ~200-card headers (N.I.N.A.-style keys, observatory and
WCS keys, HISTORY and COMMENT cards, numbers, strings, booleans) and small images, then, in rounds that
alternate the two so that a shared machine's drift weighs on both alike:

1. ``ImageFileCollection(location, keywords='*')`` — ccdproc's header table of every card, called in this
   process (its imports not counted);
2. ``ccdcal ingest`` as a user runs it: a new process (start-up included) into a new SQLite catalog, every
   card stored, with ``--jobs`` workers when given.

Prints each one's median of the rounds and the ratio of the medians (the goal: 5x, 10x as a moonshot), then
a re-ingest of the unchanged tree as a command.

Run: ``.venv/bin/python benchmarks/bench_ingest.py [--files N] [--rounds R] [--jobs J] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from peers import ENV
from sqlalchemy import text

from ccdcal.catalog.db import Catalog

KINDS = (("BIAS", 0.0, None), ("DARK", 300.0, None), ("FLAT", 2.5, "R"), ("LIGHT", 300.0, "Ha"))


def realistic_header(i: int, kind: str, exptime: float, filt: str | None) -> fits.Header:
    """About 200 cards as a capture program plus an observatory pipeline would write them."""
    rng = np.random.default_rng(i)
    h = fits.Header()
    h["IMAGETYP"] = (kind, "Type of exposure")
    h["EXPOSURE"] = (exptime, "[s] Exposure duration")
    h["EXPTIME"] = (exptime, "[s] Exposure duration")
    h["DATE-LOC"] = (
        f"2026-03-14T21:{i // 60 % 60:02d}:{i % 60:02d}.123456",
        "Time of observation (local)",
    )
    h["DATE-OBS"] = (
        f"2026-03-14T20:{i // 60 % 60:02d}:{i % 60:02d}.123456",
        "Time of observation (UTC)",
    )
    h["XBINNING"] = (2, "X axis binning factor")
    h["YBINNING"] = (2, "Y axis binning factor")
    h["GAIN"] = (120, "Sensor gain")
    h["OFFSET"] = (30, "Sensor gain offset")
    h["EGAIN"] = (0.98, "[e-/ADU] Electrons per A/D unit")
    h["XPIXSZ"] = (9.26, "[um] Pixel X axis size")
    h["YPIXSZ"] = (9.26, "[um] Pixel Y axis size")
    h["INSTRUME"] = ("ZWO ASI294MM Pro", "Imaging instrument name")
    h["SET-TEMP"] = (-10.0, "[degC] CCD temperature setpoint")
    h["CCD-TEMP"] = (round(-10 + rng.normal(0, 0.1), 2), "[degC] CCD temperature")
    h["READOUTM"] = ("Normal", "Sensor readout mode")
    h["USBLIMIT"] = (40, "Camera-specific USB setting")
    h["TELESCOP"] = ("Celestron EdgeHD 8", "Name of telescope")
    h["FOCALLEN"] = (2032.0, "[mm] Focal length")
    if filt:
        h["FILTER"] = (filt, "Active filter name")
    h["OBJECT"] = ("M 42", "Name of the object of interest")
    h["RA"] = (83.822083 + rng.normal(0, 1e-3), "[deg] RA of telescope")
    h["DEC"] = (-5.391111 + rng.normal(0, 1e-3), "[deg] Declination of telescope")
    h["OBJCTRA"] = ("05 35 17", "[H M S] RA of imaged object")
    h["OBJCTDEC"] = ("-05 23 28", "[D M S] Declination of imaged object")
    h["EQUINOX"] = (2000.0, "Equinox of celestial coordinate system")
    h["SWCREATE"] = ("N.I.N.A. 3.1.2.9001", "Software that created this file")
    h["ROWORDER"] = ("TOP-DOWN", "FITS Image Orientation")
    h["SITELAT"] = (46.1234, "[deg] Observation site latitude")
    h["SITELONG"] = (7.5432, "[deg] Observation site longitude")
    h["SITEELEV"] = (1020.0, "[m] Observation site elevation")
    h["AIRMASS"] = (1.2 + i % 10 / 100, "Airmass at frame center (Gueymard 1993)")
    h["PIERSIDE"] = ("West", "Telescope pointing state")
    h["FOCNAME"] = ("ZWO EAF", "Focusing equipment name")
    h["FOCPOS"] = (int(12000 + i % 50), "[step] Focuser position")
    h["FOCTEMP"] = (4.5, "[degC] Focuser temperature")
    h["CTYPE1"] = ("RA---TAN", "first parameter RA, projection TANgential")
    h["CTYPE2"] = ("DEC--TAN", "second parameter DEC, projection TANgential")
    h["CRPIX1"] = 1024.5
    h["CRPIX2"] = 1024.5
    h["CRVAL1"] = 83.822083
    h["CRVAL2"] = -5.391111
    h["CDELT1"] = -0.000261
    h["CDELT2"] = 0.000261
    h["CROTA2"] = 0.0
    h["SIMPLEOK"] = (True, "a logical value")
    for n in range(120):
        key = f"PIPE{n:04d}"
        kind_n = n % 4
        if kind_n == 0:
            h[key] = (float(rng.normal()), "calibration coefficient")
        elif kind_n == 1:
            h[key] = (int(rng.integers(0, 10000)), "counter")
        elif kind_n == 2:
            h[key] = (f"value {n} of the pipeline", "string parameter")
        else:
            h[key] = (bool(n % 8 == 3), "flag")
    for n in range(18):
        h.add_history(f"step {n}: processed by the acquisition software, pass {n}")
    for n in range(8):
        h.add_comment(f"observer note {n}: seeing fair, transparency good")
    return h


def build_tree(root: Path, n_files: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).integers(500, 600, size=(32, 32)).astype(np.uint16)
    for i in range(n_files):
        kind, exptime, filt = KINDS[i % len(KINDS)]
        folder = root / kind
        folder.mkdir(exist_ok=True)
        fits.PrimaryHDU(data, realistic_header(i, kind, exptime, filt)).writeto(
            folder / f"{kind.lower()}_{i:05d}.fits"
        )


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def command_seconds(args: list[str]) -> float:
    """Wall seconds of one run of a command in a new process (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def new_catalog(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="reader processes (default: ccdcal's)")
    parser.add_argument("--keep", type=Path, help="build the tree here and keep it (reused when it exists)")
    args = parser.parse_args()

    from ccdproc import ImageFileCollection

    work = args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-bench-ingest-"))
    tree = work / "raw"
    if not tree.exists():
        print(f"building {args.files} files in {tree} ...", flush=True)
        build_tree(tree, args.files)
    files = sorted(tree.rglob("*.fits"))
    n_cards = len(fits.getheader(files[0]))
    print(f"{len(files)} files, {n_cards} cards each, {files[0].stat().st_size} bytes each")

    # ImageFileCollection reads one folder; give it the same files in one folder via links.
    flat = work / "flat"
    if not flat.exists():
        flat.mkdir()
        for path in files:
            (flat / path.name).symlink_to(path)

    exe = shutil.which("ccdcal") or str(Path(sys.executable).with_name("ccdcal"))
    db = work / "bench.db"
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    ingest = [exe, "--db", str(db), "-q", "ingest", *jobs, str(tree)]
    t_ifc: list[float] = []
    t_cmd: list[float] = []
    for _ in range(args.rounds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds, collection = timed(ImageFileCollection, str(flat), keywords="*")
        t_ifc.append(seconds)
        rows = len(collection.summary)
        del collection
        gc.collect()
        new_catalog(db)
        t_cmd.append(command_seconds(ingest))
    ifc, cmd = statistics.median(t_ifc), statistics.median(t_cmd)
    print(f"median of {args.rounds} rounds, alternating:")
    print(f"  ccdproc ImageFileCollection(keywords='*'):  {ifc:7.2f} s  ({rows} rows)  {sorted(t_ifc)}")
    print(
        f"  `ccdcal ingest` (new process, new catalog, --jobs {args.jobs or 'auto'}): {cmd:7.2f} s  "
        f"(every card stored)  {sorted(t_cmd)}"
    )
    print(f"  ratio: ccdcal ingest is {ifc / cmd:5.2f}x faster (goal 5x)")
    with Catalog(db) as catalog, catalog.reading() as session:
        cards = session.execute(text("SELECT count(*) FROM header_cards")).scalar_one()
    print(f"  header_cards rows: {cards} ({cards / max(len(files), 1):.0f} a file)")
    t_again = statistics.median(command_seconds(ingest) for _ in range(3))
    t_version = statistics.median(command_seconds([exe, "--version"]) for _ in range(3))
    print(f"`ccdcal ingest` unchanged: {t_again:.3f} s (`ccdcal --version` {t_version:.3f} s)")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
