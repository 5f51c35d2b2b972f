"""Combine speed and memory: ``ccdcal.kernels.combine.combine_files`` against ``ccdproc.combine``.

Builds, in a temporary folder, stacks of uint16 FITS frames (default 20 x 2048 x 2048 and
50 x 1024 x 1024: bias-like noise, a level drift between frames, hot columns, cosmic rays, cold samples),
then times, each in a fresh Python process so that its peak memory can be measured on its own:

1. ``ccdproc.combine(files, method='median', sigma_clip=True, sigma_clip_func=np.ma.median,
   sigma_clip_dev_func=mad_std, unit='adu')`` (one clipping pass, as ccdproc does);
2. reading the files (``astropy.io.fits.getdata`` of each);
3. ``combine_files(files)`` (a 5-iteration sigma-clipped median), after a warm-up call on three tiny
   files so that numba's start-up (loading the cached machine code, or compiling it) is excluded; the
   compile time from an empty numba cache is measured in a separate process and reported apart.

Peak memory is the "Maximum resident set size" that ``/usr/bin/time -v`` reports: ``ru_maxrss`` of each
child process, read with ``os.wait4``. It is compared with the raw stack (n x ny x nx x 2 bytes), both as it
is and above the peak of a process that only imports numpy, astropy and ccdcal and runs the warm-up
call (numba's compiled kernel loaded, its threads started): the fixed cost of any process that combines.
ccdcal's first rows are also checked against the definition (astropy's sigma_clip + np.ma.median).

Run: ``.venv/bin/python benchmarks/bench_combine.py [--quick] [--repeat R] [--skip-ccdproc] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

FULL_SIZES = [(20, 2048, 2048), (50, 1024, 1024)]
QUICK_SIZES = [(10, 512, 512), (20, 256, 256)]
CHECK_ROWS = 16
TARGET_SPEEDUP = 30.0
TARGET_READ_RATIO = 3.0
TARGET_MEMORY_RATIO = 2.0


# --------------------------------------------------------------------------------------------------
# Data


def write_stack(folder: Path, n: int, ny: int, nx: int, seed: int) -> list[Path]:
    """n uint16 frames (BITPIX 16, BZERO 32768) with the usual defects of raw calibration frames."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hot_columns = rng.choice(nx, size=max(1, nx // 200), replace=False)
    fixed = rng.normal(0.0, 3.0, (ny, nx)).astype(np.float32)  # fixed pattern
    paths = []
    for i in range(n):
        frame = rng.normal(1000.0 + 2.0 * i, 12.0, (ny, nx)).astype(np.float32) + fixed
        frame[:, hot_columns] += 400.0
        cosmic = rng.random((ny, nx)) < 5e-4
        frame[cosmic] += rng.uniform(200.0, 60000.0, int(cosmic.sum())).astype(np.float32)
        cold = rng.random((ny, nx)) < 2e-4
        frame[cold] = 0.0
        data = np.clip(np.round(frame), 0, 65535).astype(np.uint16)
        path = folder / f"bias_{i:03d}.fits"
        header = fits.Header()
        header["IMAGETYP"] = "BIAS"
        header["EXPTIME"] = 0.0
        fits.PrimaryHDU(data, header).writeto(path, overwrite=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------
# Children: one contender each, result as JSON on stdout


def child(mode: str, files: list[Path], warmup: list[Path], repeat: int, out: Path | None) -> None:
    result: dict[str, Any] = {}
    if mode == "baseline":
        # The fixed cost of a process that combines: interpreter, numpy, astropy, numba with its
        # compiled kernel loaded (LLVM) and its threads started.
        from ccdcal.kernels.combine import combine_files

        combine_files(warmup)
    elif mode == "compile":
        from ccdcal.kernels.combine import combine_files

        t0 = time.perf_counter()
        combine_files(warmup)
        result["compile_s"] = time.perf_counter() - t0
    elif mode == "read":
        from astropy.io import fits

        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            frames = [fits.getdata(p) for p in files]
            times.append(time.perf_counter() - t0)
            del frames
        result["times"] = times
    elif mode == "ccdproc":
        import ccdproc
        from astropy.stats import mad_std

        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                combined = ccdproc.combine(
                    [str(p) for p in files],
                    method="median",
                    sigma_clip=True,
                    sigma_clip_func=np.ma.median,
                    sigma_clip_dev_func=mad_std,
                    unit="adu",
                )
            times.append(time.perf_counter() - t0)
            del combined
        result["times"] = times
    elif mode == "ccdcal":
        from ccdcal.kernels.combine import combine_files

        t0 = time.perf_counter()
        combine_files(warmup)
        result["warmup_s"] = time.perf_counter() - t0
        times = []
        for i in range(repeat):
            if i:
                del combined  # one result alive at a time
            t0 = time.perf_counter()
            combined = combine_files(files)
            times.append(time.perf_counter() - t0)
        result["times"] = times
        result["rejected_fraction"] = combined.rejected_fraction
        result["block_rows"] = combined.block_rows
        result["n_blocks"] = combined.n_blocks
        if out is not None:
            np.save(out.with_suffix(".image.npy"), combined.image[:CHECK_ROWS])
            np.save(out.with_suffix(".rejected.npy"), combined.rejected[:CHECK_ROWS])
    else:
        raise SystemExit(f"unknown child mode {mode}")
    print(json.dumps(result))


def run_child(
    mode: str,
    files: list[Path],
    warmup: list[Path],
    repeat: int,
    out: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], int]:
    """Run one child; returns its JSON result and its peak resident set size in bytes."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(str(p) for p in files))
    args = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--files-from",
        listing.name,
        "--warmup-from",
        str(warmup[0].parent),
        "--repeat",
        str(repeat),
    ]
    if out is not None:
        args += ["--out", str(out)]
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, env={**os.environ, **(env or {})}, text=True)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.unlink(listing.name)
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed with status {proc.returncode}")
    return json.loads(stdout.strip().splitlines()[-1]), usage.ru_maxrss * 1024  # KiB on Linux


# --------------------------------------------------------------------------------------------------
# Parent


def check_rows(files: list[Path], out: Path) -> tuple[float, bool]:
    """ccdcal's first rows against the definition: (max relative difference, rejected counts equal)."""
    from astropy.io import fits
    from astropy.stats import sigma_clip

    rows = []
    for path in files:
        with fits.open(path, memmap=False) as hdul:
            rows.append(hdul[0].section[:CHECK_ROWS, :])
    stack = np.stack(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = sigma_clip(stack, sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0)
        expected = np.ma.filled(np.ma.median(clipped, axis=0).astype(np.float64), np.nan)
    image = np.load(out.with_suffix(".image.npy")).astype(np.float64)
    rejected = np.load(out.with_suffix(".rejected.npy"))
    rel = np.abs(image - expected) / np.maximum(np.abs(expected), 1e-30)
    return float(np.nanmax(rel)), bool((rejected == clipped.mask.sum(axis=0)).all())


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small stacks (a quick check)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of ccdcal and of reading")
    parser.add_argument("--ccdproc-repeat", type=int, default=1, help="timed runs of ccdproc")
    parser.add_argument("--skip-ccdproc", action="store_true", help="do not run ccdproc")
    parser.add_argument("--keep", type=Path, help="build the files in this folder and keep them")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--files-from", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup-from", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        files = [Path(p) for p in args.files_from.read_text().splitlines() if p]
        warmup = sorted(args.warmup_from.glob("*.fits"))
        child(args.child, files, warmup, args.repeat, args.out)
        return

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_combine_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}, files in {root}"
        )
        warmup = write_stack(root / "warmup", 3, 16, 16, seed=99)
        with tempfile.TemporaryDirectory(prefix="numba_cache_") as cache:
            compiled, _ = run_child("compile", warmup, warmup, 1, env={"NUMBA_CACHE_DIR": cache})
        baseline_result, baseline_rss = run_child("baseline", warmup, warmup, 1)
        del baseline_result
        print(f"numba compile time (empty cache): {compiled['compile_s']:.2f} s")
        print(f"baseline peak RSS (imports + warm-up combine of 3 tiny files, no stack): {mib(baseline_rss)}")

        for seed, (n, ny, nx) in enumerate(sizes):
            t0 = time.perf_counter()
            files = write_stack(root / f"stack_{n}x{ny}x{nx}", n, ny, nx, seed=seed)
            raw = n * ny * nx * 2
            print()
            print(
                f"== {n} x {ny} x {nx} uint16: raw stack {mib(raw)} "
                f"(files written in {time.perf_counter() - t0:.1f} s)"
            )
            out = root / f"ccdcal_{n}x{ny}x{nx}"
            ours, ours_rss = run_child("ccdcal", files, warmup, args.repeat, out=out)
            read, read_rss = run_child("read", files, warmup, args.repeat)
            if args.skip_ccdproc:
                theirs, theirs_rss = None, 0
            else:
                theirs, theirs_rss = run_child("ccdproc", files, warmup, args.ccdproc_repeat)

            t_ours = min(ours["times"])
            t_read = min(read["times"])
            print(f"{'':22s}{'best':>9s}{'median':>9s}{'peak RSS':>14s}{'above base*':>15s}")

            def row(name: str, times: list[float], rss: int) -> None:
                print(
                    f"{name:22s}{min(times):8.3f}s{statistics.median(times):8.3f}s"
                    f"{mib(rss):>14s}{mib(rss - baseline_rss):>15s}"
                )

            if theirs is not None:
                row("ccdproc.combine", theirs["times"], theirs_rss)
            row("read (getdata)", read["times"], read_rss)
            row("ccdcal combine_files", ours["times"], ours_rss)
            print("* base: the baseline above (ccdcal's fixed cost; reading and ccdproc load no numba)")
            print(
                f"ccdcal warm-up call (cached numba code): {ours['warmup_s']:.3f} s; "
                f"blocks: {ours['n_blocks']} of {ours['block_rows']} rows; "
                f"rejected fraction {ours['rejected_fraction']:.4%}"
            )
            if theirs is not None:
                speedup = min(theirs["times"]) / t_ours
                verdict = "ok" if speedup >= TARGET_SPEEDUP else "MISSED"
                print(
                    f"speed vs ccdproc:     {speedup:7.1f} x faster   (target >= {TARGET_SPEEDUP:.0f}x: "
                    f"{verdict})"
                )
                print(f"ccdproc peak RSS:     {theirs_rss / raw:7.2f} x raw stack")
            read_ratio = t_ours / t_read
            verdict = "ok" if read_ratio <= TARGET_READ_RATIO else "MISSED"
            print(
                f"time vs reading:      {read_ratio:7.2f} x read time   (target <= "
                f"{TARGET_READ_RATIO:.0f}x: {verdict})"
            )
            verdict = "ok" if ours_rss < TARGET_MEMORY_RATIO * raw else "MISSED"
            print(
                f"ccdcal peak RSS:      {ours_rss / raw:7.2f} x raw stack, "
                f"{(ours_rss - baseline_rss) / raw:.2f} x above the baseline "
                f"(target < {TARGET_MEMORY_RATIO:.0f}x: {verdict})"
            )
            max_rel, counts_equal = check_rows(files, out)
            print(
                f"definition check ({CHECK_ROWS} rows): max relative difference {max_rel:.2e}, "
                f"rejected counts {'equal' if counts_equal else 'DIFFER'}"
            )
            if args.keep is None:
                shutil.rmtree(files[0].parent)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
