"""A whole night as users run it: ``ccdcal run config.ini`` against Siril's script and the seed's ccdproc
steps, each a new process from start to its last file, on the same raw frames in the same run.

The night (``ccdcal.simulate``, a cooled mono CMOS camera, uint16 with BZERO 32768), by default 62 frames
of 2048 x 2048: 10 biases, 7 darks at each of the lights' exposures (60 s and 300 s), 7 flats in each of two
filters (R, Ha; no dark at their exposures, so bias only), 24 lights (12 R at 60 s, 12 Ha at 300 s).

1. ccdcal: ``ccdcal run config.ini`` (the generated default: ingest, masters, calibration; ``jobs = auto``)
   on a new catalog each round;
2. Siril (``siril-cli``, Debian package ``siril``; skipped when absent): the frames linked into one folder
   per group, as its scripts expect, then one script: ``convert`` + ``stack rej s 3 3 -nonorm`` the biases,
   each dark group stacked the same way (Siril's darks keep the bias), each flat group ``preprocess
   -bias`` + ``stack rej s 3 3 -norm=mul``, each light group ``preprocess -dark -flat``;
3. ccdproc (the seed's steps, as a Python script in a new process): ``ccdproc.combine`` (median, 3σ
   clipping with the median and ``mad_std``) of the biases, of each dark group minus the bias, of each
   flat group minus the bias scaled by its median; each light ``ccd_process`` (bias, dark of its exposure,
   flat, ``min_value=0.01``) and written as float32.

Rounds alternate the three (``--rounds``, 3); the ratios are of the medians. Peak memory is that of each
command's whole process tree (workers included; :mod:`peers`).

Run: ``.venv/bin/python benchmarks/bench_night.py [--quick] [--size S] [--rounds R] [--skip-ccdproc]
[--keep DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from peers import (
    SIRIL,
    Timed,
    fresh,
    link_files,
    median,
    print_table,
    round_line,
    run_siril,
    run_timed,
    siril_version,
)

HERE = Path(__file__).resolve().parent
TARGET_SIRIL = 2.0
TARGET_CCDPROC = 20.0
TARGET_MEMORY = 2.0  # ccdcal's peak at most twice Siril's

CCDPROC_SCRIPT = r"""
import sys, warnings
from pathlib import Path
import numpy as np
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from peers import ccdproc_combine
from astropy import units as u
from astropy.nddata import CCDData
from ccdproc import ccd_process, ImageFileCollection

raw, out = Path(sys.argv[2]), Path(sys.argv[3])
out.mkdir()
rows = []
for folder in sorted(p for p in raw.iterdir() if p.is_dir()):  # the seed's BIAS/ DARK/ FLAT/ LIGHT/
    files = ImageFileCollection(folder, keywords=["imagetyp", "exptime", "filter"], glob_include="*.fits")
    rows += [(folder / r["file"], str(r["imagetyp"]).lower(), float(r["exptime"]), r["filter"])
             for r in files.summary]
bias = ccdproc_combine([p for p, k, t, f in rows if "bias" in k])
darks = {t: ccdproc_combine([p for p, k, e, f in rows if "dark" in k and e == t], subtract=bias)
         for t in {e for p, k, e, f in rows if "dark" in k}}
flats = {f: ccdproc_combine([p for p, k, e, g in rows if "flat" in k and g == f], True, subtract=bias)
         for f in {g for p, k, e, g in rows if "flat" in k}}
for p, k, t, f in rows:
    if "light" in k:
        light = CCDData.read(p, unit="adu")
        done = ccd_process(light, master_bias=bias, dark_frame=darks[t], master_flat=flats[f],
                           exposure_key="EXPTIME", exposure_unit=u.s, dark_scale=False, min_value=0.01)
        done.data = done.data.astype(np.float32)
        done.write(out / (p.stem + "_cal.fits"))
"""


def build_night(folder: Path, size: int, lights: int) -> dict[str, list[Path]]:
    """Simulate the night and drop the darks at the flats' exposures; return the files by Siril group."""
    from ccdcal.simulate import simulate_night

    night = simulate_night(folder, seed=7, shape=(size, size), n_bias=10, n_dark=7, n_flat=7, n_light=lights)
    groups: dict[str, list[Path]] = defaultdict(list)
    for relative, info in night.truth["frames"].items():
        path = night.root / relative
        kind, exposure, band = info["kind"], info["exptime"], info.get("filter")
        if kind == "dark" and exposure in (2.0, 5.0):
            path.unlink()
            continue
        name = {"bias": "bias", "dark": f"dark{exposure:g}", "flat": f"flat{band}", "light": f"light{band}"}
        groups[name[kind]].append(path)
    return dict(groups)


def siril_script(groups: dict[str, list[Path]]) -> str:
    """Siril's script for the night (groups linked under the work folder by :func:`prepare_siril`)."""
    lines = ["requires 1.0.0", "setext fits"]

    def stack(group: str, extra: str) -> None:
        lines.extend([f"cd {group}", f"convert {group} -out=../process", "cd ../process"])
        lines.append(extra)
        lines.append("cd ..")

    stack("bias", "stack bias rej s 3 3 -nonorm -out=../master_bias")
    for group in sorted(g for g in groups if g.startswith("dark")):
        stack(group, f"stack {group} rej s 3 3 -nonorm -out=../master_{group}")
    for group in sorted(g for g in groups if g.startswith("flat")):
        stack(
            group,
            f"preprocess {group} -bias=../master_bias\nstack pp_{group} rej s 3 3 -norm=mul "
            f"-out=../master_{group}",
        )
    for group in sorted(g for g in groups if g.startswith("light")):
        band = group.removeprefix("light")
        exposure = 60 if band == "R" else 300
        stack(group, f"preprocess {group} -dark=../master_dark{exposure} -flat=../master_flat{band}")
    return "\n".join(lines) + "\n"


def run_ccdcal(base: Path, log: Path) -> Timed:
    work = fresh(base / "ccdcal")
    ccdcal = str(Path(sys.executable).with_name("ccdcal"))
    run_timed([ccdcal, "run", "--write-config", str(work / "config.ini")], work)
    return run_timed([ccdcal, "run", str(work / "config.ini")], work, log=log)


def run_siril_night(base: Path, groups: dict[str, list[Path]], log: Path) -> Timed:
    work = fresh(base / "siril")
    for group, files in groups.items():
        link_files(files, work / group)
    return run_siril(siril_script(groups), work, log=log)


def run_ccdproc(base: Path, raw: Path, log: Path) -> Timed:
    work = fresh(base / "ccdproc")
    script = [sys.executable, "-c", CCDPROC_SCRIPT, str(HERE), str(raw), str(work / "out")]
    return run_timed(script, work, log=log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="512 x 512 frames, 8 lights, one round")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--lights", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-ccdproc", action="store_true")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    if args.quick:
        args.size, args.lights, args.rounds = 512, 8, 1
    base = args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-night-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        raw = base / "raw"
        if raw.exists():
            shutil.rmtree(raw)
        groups = build_night(raw, args.size, args.lights)
        frames = sum(len(files) for files in groups.values())
        megabytes = sum(p.stat().st_size for files in groups.values() for p in files) / 1e6
        side = f"{args.size} x {args.size}"
        print(f"night: {frames} raw frames of {side} ({megabytes:.0f} MB); Siril: {siril_version()}")
        results: dict[str, list[Timed]] = defaultdict(list)
        for number in range(1, args.rounds + 1):
            results["ccdcal"].append(run_ccdcal(base, base / "ccdcal.log"))
            if SIRIL:
                results["siril"].append(run_siril_night(base, groups, base / "siril.log"))
            if not args.skip_ccdproc:
                results["ccdproc"].append(run_ccdproc(base, raw, base / "ccdproc.log"))
            print(round_line(number, results), flush=True)
        print()
        print_table(results)
        ours = median([r.seconds for r in results["ccdcal"]])
        memory = max(r.peak_mb for r in results["ccdcal"])
        print()
        if "siril" in results:
            theirs = median([r.seconds for r in results["siril"]])
            siril_memory = max(r.peak_mb for r in results["siril"])
            print(
                f"ccdcal vs Siril: {theirs / ours:.2f}x faster (target {TARGET_SIRIL:g}x); peak memory "
                f"{memory / siril_memory:.2f}x Siril's (at most {TARGET_MEMORY:g}x)"
            )
        else:
            print("Siril: not installed (apt-get install siril); no ratio")
        if "ccdproc" in results:
            theirs = median([r.seconds for r in results["ccdproc"]])
            print(f"ccdcal vs the ccdproc steps: {theirs / ours:.1f}x faster (target {TARGET_CCDPROC:g}x)")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
