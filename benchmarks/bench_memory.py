"""Memory bound of the combine: a stack larger than the memory it is given, combined within it.

Writes (in a temporary folder) a stack of uint16 frames — default 100 x 4096 x 4096, 3.2 GB as stored and
6.7 GB as float32, the size ``ccdproc.combine`` would hold at once several times over — then, in a fresh
Python process, combines it with ``combine_files(..., mem_limit=LIMIT)`` (default 1 GiB) and reads that
process's peak resident set size (``ru_maxrss`` via ``os.wait4``). The fixed cost of any process that
combines (interpreter, numpy, astropy, numba with its kernel loaded) is measured apart, in a process that
only combines three tiny files, and the figure compared with the limit is the peak above it.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--frames N] [--size S] [--mem-limit 1G] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, sys, time
from pathlib import Path
from ccdcal.kernels.combine import combine_files
folder, limit, tiny = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "tiny"
warm = sorted((folder / "warmup").glob("*.fits"))
combine_files(warm)
result = {}
if not tiny:
    files = sorted((folder / "stack").glob("*.fits"))
    start = time.perf_counter()
    combined = combine_files(files, mem_limit=limit)
    result = {"seconds": time.perf_counter() - start, "block_rows": combined.block_rows,
              "n_blocks": combined.n_blocks, "median": float(combined.image[::64, ::64].mean())}
print(json.dumps(result))
"""


def write_frames(folder: Path, n: int, size: int, seed: int = 1) -> None:
    """n uint16 frames of size x size (BZERO 32768), bias-like noise with a drift and outliers."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        frame = rng.normal(1000.0 + i, 12.0, (size, size)).astype(np.float32)
        outliers = rng.random((size, size)) < 5e-4
        frame[outliers] = 60000.0
        fits.PrimaryHDU(np.round(frame).astype(np.uint16)).writeto(folder / f"bias_{i:03d}.fits")


def child(folder: Path, limit: int, tiny: bool) -> tuple[dict[str, float], int]:
    """Run a combine in a fresh process: its JSON result and its peak RSS in bytes."""
    args = [sys.executable, "-c", CHILD, str(folder), str(limit), "tiny" if tiny else "stack"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the combine failed (status {os.waitstatus_to_exitcode(status)})")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss * 1024


def size_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--mem-limit", default="1G")
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    limit = size_bytes(args.mem_limit)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-bench-memory-"))
    try:
        if not (folder / "stack").is_dir():
            start = time.perf_counter()
            write_frames(folder / "stack", args.frames, args.size)
            print(
                f"wrote {args.frames} frames of {args.size} x {args.size} "
                f"in {time.perf_counter() - start:.0f} s"
            )
        if not (folder / "warmup").is_dir():
            write_frames(folder / "warmup", 3, 32)
        stored = args.frames * args.size * args.size * 2
        _, base = child(folder, limit, tiny=True)
        result, peak = child(folder, limit, tiny=False)
        above = peak - base
        print(
            f"stack {args.frames} x {args.size} x {args.size}: {stored / 2**30:.2f} GiB stored, "
            f"{2 * stored / 2**30:.2f} GiB as float32"
        )
        print(
            f"--mem-limit {args.mem_limit} ({limit / 2**20:.0f} MiB): combined in {result['seconds']:.1f} s, "
            f"{result['n_blocks']} blocks of {result['block_rows']} rows"
        )
        print(
            f"peak RSS {peak / 2**20:.0f} MiB; "
            f"a process that only combines tiny files: {base / 2**20:.0f} MiB"
        )
        print(
            f"peak above that: {above / 2**20:.0f} MiB = {above / limit:.2f} of the limit "
            f"({'within' if above <= limit else 'OVER'} it)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
