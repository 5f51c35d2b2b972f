"""A master bias as users build it: ``ccdcal masters`` as a command against Siril's ``stack`` and
``ccdproc.combine``, each a new process from start to the written master, on the same files in the same run.

Two stacks (``ccdcal.simulate``'s bias frames: uint16 with BZERO 32768, read noise and hot pixels):

- 20 x 2048 x 2048 (160 MB): ccdcal, Siril and ccdproc;
- 50 x 4096 x 4096 (1.6 GB): ccdcal and Siril (``ccdproc.combine`` cannot hold it in 24 GB).

1. ccdcal: ``ccdcal ingest`` once (not timed), then ``ccdcal masters --kind bias`` on a copy of that
   catalog each round: start-up, catalog, reading, the clipped median (3σ, ``mad_std``, 5 passes), the
   frames' QA statistics and rules, the master's statistics and level, its file (hashed, synced) and rows;
   and the same with ``--no-frame-qa`` (the frame QA's share of the wall time: target at most 15 %);
2. Siril (``siril-cli``, Debian package ``siril``; skipped when absent): ``convert`` then ``stack rej s 3 3
   -nonorm`` (sigma clipping about the median);
3. ccdproc: :func:`peers.ccdproc_combine` (median, 3σ clipping with ``mad_std``) written as float32.

Rounds alternate the tools (``--rounds``, 3); the ratios are of the medians.

Run: ``.venv/bin/python benchmarks/bench_masters.py [--quick] [--only small|large] [--rounds R]
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
TARGET_SIRIL = {"small": 1.0, "large": 3.0}
TARGET_CCDPROC = 30.0
#: The frame QA's share of the masters command's wall time (the same command with --no-frame-qa).
TARGET_QA = 0.15

CCDPROC_SCRIPT = r"""
import sys, warnings
from pathlib import Path
import numpy as np
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from peers import ccdproc_combine
paths = sorted(Path(sys.argv[2]).glob("*.fits"))
ccdproc_combine(paths).write(Path(sys.argv[3]) / "master_bias.fits")
"""


def build_biases(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` simulated bias frames of ``size`` x ``size`` in ``folder``."""
    from ccdcal.simulate import simulate_night

    night = simulate_night(folder, seed=11, shape=(size, size), n_bias=n, n_dark=0, n_flat=0, n_light=0)
    return sorted(night.root / r for r, info in night.truth["frames"].items() if info["kind"] == "bias")


def ccdcal_command() -> str:
    return str(Path(sys.executable).with_name("ccdcal"))


def prepare_ccdcal(base: Path, raw: Path) -> Path:
    """Ingest the frames once into a catalog that each round copies."""
    work = fresh(base / "ccdcal-catalog")
    run_timed([ccdcal_command(), "--db", str(work / "ccdcal.db"), "ingest", str(raw)], work)
    return work / "ccdcal.db"


def run_ccdcal(base: Path, catalog: Path, log: Path, *extra: str) -> Timed:
    work = fresh(base / "ccdcal")
    shutil.copy(catalog, work / "ccdcal.db")
    args = [ccdcal_command(), "--db", "ccdcal.db", "masters", "--kind", "bias", "--masters-dir", "masters"]
    return run_timed([*args, *extra], work, log=log)


def run_siril_stack(base: Path, files: list[Path], log: Path) -> Timed:
    work = fresh(base / "siril")
    link_files(files, work / "bias")
    script = "\n".join(
        [
            "requires 1.0.0",
            "setext fits",
            "cd bias",
            "convert bias -out=../process",
            "cd ../process",
            "stack bias rej s 3 3 -nonorm -out=../master_bias",
            "",
        ]
    )
    return run_siril(script, work, log=log)


def run_ccdproc(base: Path, raw: Path, log: Path) -> Timed:
    work = fresh(base / "ccdproc")
    return run_timed([sys.executable, "-c", CCDPROC_SCRIPT, str(HERE), str(raw), str(work)], work, log=log)


def bench(base: Path, name: str, n: int, size: int, rounds: int, with_ccdproc: bool) -> None:
    raw = base / f"raw-{name}"
    if raw.exists():
        shutil.rmtree(raw)
    files = build_biases(raw, n, size)
    stack = files[0].parent
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    print(f"\n{name}: {n} biases of {size} x {size} ({megabytes:.0f} MB); Siril: {siril_version()}")
    catalog = prepare_ccdcal(base, raw)
    results: dict[str, list[Timed]] = defaultdict(list)
    for number in range(1, rounds + 1):
        results["ccdcal"].append(run_ccdcal(base, catalog, base / "ccdcal.log"))
        results["no QA"].append(run_ccdcal(base, catalog, base / "ccdcal.log", "--no-frame-qa"))
        if SIRIL:
            results["siril"].append(run_siril_stack(base, files, base / "siril.log"))
        if with_ccdproc:
            results["ccdproc"].append(run_ccdproc(base, stack, base / "ccdproc.log"))
        print(round_line(number, results), flush=True)
    print_table(results)
    ours = median([r.seconds for r in results["ccdcal"]])
    plain = median([r.seconds for r in results["no QA"]])
    print(
        f"frame QA (its frames measured in the combine's pass, judged, recorded): {ours - plain:+.2f} s, "
        f"{(ours - plain) / ours:.0%} of the masters command's wall time (target <= {TARGET_QA:.0%})"
    )
    if "siril" in results:
        theirs = median([r.seconds for r in results["siril"]])
        print(f"ccdcal vs Siril: {theirs / ours:.2f}x faster (target {TARGET_SIRIL[name]:g}x)")
    else:
        print("Siril: not installed (apt-get install siril); no ratio")
    if "ccdproc" in results:
        theirs = median([r.seconds for r in results["ccdproc"]])
        print(f"ccdcal vs ccdproc.combine: {theirs / ours:.1f}x faster (target {TARGET_CCDPROC:g}x)")
    shutil.rmtree(raw, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small stack at 512 x 512, one round")
    parser.add_argument("--only", choices=["small", "large"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-masters-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        if args.quick:
            bench(base, "small", 20, 512, 1, True)
            return 0
        if args.only in (None, "small"):
            bench(base, "small", 20, 2048, args.rounds, True)
        if args.only in (None, "large"):
            bench(base, "large", 50, 4096, args.rounds, False)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
