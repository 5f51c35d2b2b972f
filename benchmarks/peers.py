"""What the benchmarks share: running a command in a new process with its wall time and peak memory (the
whole process tree), Siril's command-line tool, and the seed's ccdproc steps.

Peak memory is the largest sum, over the command's process group (workers included), of each process's
proportional set size (PSS: a page shared by forked workers counts once in all), sampled every 20 ms from
``/proc/PID/smaps_rollup``; where that file is missing, the resident set size.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_EVERY = 0.02

#: The commands' environment: byte-code cached as in an installed ccdcal (``pip install .`` compiles it; a
#: development shell's ``PYTHONDONTWRITEBYTECODE`` would make every command compile the modules changed
#: since their last cached byte-code).
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Timed:
    """One command's run: wall seconds from start to exit, and the peak memory of its process tree."""

    seconds: float
    peak_mb: float


def _memory_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as stream:
            for line in stream:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _group(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except OSError:
                continue
    return members


def run_timed(
    args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, log: Path | None = None
) -> Timed:
    """Run ``args`` in a new session (its own process group) and return its wall time and peak memory;
    raise ``RuntimeError`` with the end of its output when it fails."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    peak = 0
    try:
        begun = time.perf_counter()
        process = subprocess.Popen(
            list(args), cwd=cwd, env=env or ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, sum(_memory_kb(pid) for pid in _group(process.pid)))
                stop.wait(SAMPLE_EVERY)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        status = process.wait()
        seconds = time.perf_counter() - begun
        stop.set()
        sampler.join()
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    if status != 0:
        tail = log.read_text(errors="replace")[-2000:] if log else ""
        raise RuntimeError(f"{' '.join(args)} failed with status {status}:\n{tail}")
    return Timed(seconds, peak / 1024)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fresh(folder: Path) -> Path:
    """``folder``, emptied (made when missing)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def round_line(number: int, results: dict[str, list[Timed]]) -> str:
    """One round's line: each tool's last time."""
    shown = ", ".join(f"{tool} {runs[-1].seconds:.2f} s" for tool, runs in results.items())
    return f"round {number}: {shown}"


def print_table(results: dict[str, list[Timed]]) -> None:
    """Each tool's median, its runs and its peak memory."""
    print(f"{'':10} {'median s':>9} {'runs s':>24} {'peak MB':>9}")
    for tool, runs in results.items():
        each = " ".join(f"{r.seconds:.2f}" for r in runs)
        peak = max(r.peak_mb for r in runs)
        print(f"{tool:10} {median([r.seconds for r in runs]):9.2f} {each:>24} {peak:9.0f}")


# -- Siril ---------------------------------------------------------------------------------------------------

SIRIL = shutil.which("siril-cli")


def siril_version() -> str:
    if SIRIL is None:
        return "not installed"
    done = subprocess.run([SIRIL, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def run_siril(script: str, workdir: Path, log: Path | None = None) -> Timed:
    """Run a Siril script (its text) in ``workdir`` with ``siril-cli -s``."""
    if SIRIL is None:
        raise RuntimeError("siril-cli is not installed (Debian package siril)")
    path = workdir / "bench.ssf"
    path.write_text(script)
    return run_timed([SIRIL, "-d", str(workdir), "-s", str(path)], workdir, log=log)


def link_files(files: Sequence[Path], folder: Path) -> None:
    """Hard links to ``files`` in a new ``folder`` (one folder per group, as Siril's scripts expect)."""
    folder.mkdir(parents=True)
    for path in files:
        os.link(path, folder / path.name)


# -- ccdproc, the seed's steps ----------------------------------------------------------------------


def ccdproc_combine(paths: Sequence[Path], scale_by_median: bool = False, subtract: Any = None) -> Any:
    """``ccdproc.combine`` of the frames as the seed combines them: median with sigma clipping (3σ, the
    median and ``mad_std``), bias (and dark) subtracted first when given, flats scaled by their median."""
    import numpy as np
    from astropy.nddata import CCDData
    from astropy.stats import mad_std
    from ccdproc import combine, subtract_bias

    frames = [CCDData.read(p, unit="adu") for p in paths]
    if subtract is not None:
        frames = [subtract_bias(f, subtract) for f in frames]
    scale = [1.0 / np.median(f.data) for f in frames] if scale_by_median else None
    return combine(
        frames,
        method="median",
        scale=scale,
        sigma_clip=True,
        sigma_clip_low_thresh=3,
        sigma_clip_high_thresh=3,
        sigma_clip_func=np.ma.median,
        sigma_clip_dev_func=mad_std,
        mem_limit=8e9,
        dtype=np.float32,
    )
