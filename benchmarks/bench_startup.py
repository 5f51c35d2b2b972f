"""Start-up: how long ``ccdcal --version``, ``--help``, ``status`` and a ``process`` with nothing to do take,
as a user waits for them, against ``python -c "import sqlalchemy"`` in the same run.

Builds the demo catalog in a temporary folder, as ``make demo`` does (``ccdcal simulate --seed 1``, then
``ingest`` and ``process``, not timed), then runs, in rounds, each command from a new process — the
``ccdcal`` script beside this Python — and ``python -c "import sqlalchemy"``, one after the other, so that
a shared machine's drift weighs on all of them alike. Prints each one's median of the rounds (with the
range), its ratio to the import of SQLAlchemy (the least any command that opens the catalog can take) and
the target, then an import-time breakdown of each command: one more run with ``-X importtime``, its
modules' own times summed by top-level package. The commands run with their byte-code cached, as an
installed ccdcal's (``PYTHONDONTWRITEBYTECODE`` is left out of their environment).

Targets, as ratios to ``import sqlalchemy`` (about 0.15 s on the development machine): ``--version``
1x, ``--help`` 2x, ``status`` 2x, a ``process`` with nothing to do 3x.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--runs N] [--top N] [--keep DIR | --reuse DIR]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

#: Each command's target, as a multiple of the time of ``python -c "import sqlalchemy"``.
TARGETS = {"--version": 1.0, "--help": 2.0, "status": 2.0, "process (nothing to do)": 3.0}

BASELINE = "python -c 'import sqlalchemy'"

#: The commands' environment: byte-code cached as in an installed ccdcal (a development shell's
#: PYTHONDONTWRITEBYTECODE would have every run compile ccdcal's modules again).
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def ccdcal_command(*python_options: str) -> list[str]:
    """The ``ccdcal`` script of this environment, run by this Python with ``python_options``
    (``python -m ccdcal`` when there is no script)."""
    script = Path(sys.executable).with_name("ccdcal")
    return [sys.executable, *python_options, *([str(script)] if script.exists() else ["-m", "ccdcal"])]


def prepare(folder: Path) -> None:
    """The demo catalog of ``make demo`` in ``folder``: simulated night, ingested and processed."""
    ccdcal = ccdcal_command()
    begin = time.perf_counter()
    for arguments in (
        ["simulate", "raw", "--seed", "1"],
        ["--db", "ccdcal.db", "ingest", "raw"],
        ["--db", "ccdcal.db", "process", "--masters-dir", "masters", "--output-dir", "calibrated"],
    ):
        subprocess.run([*ccdcal, *arguments], cwd=folder, env=ENV, check=True, stdout=subprocess.DEVNULL)
    print(f"demo catalog made in {time.perf_counter() - begin:.1f} s: {folder}")


def commands(*python_options: str) -> dict[str, list[str]]:
    """What is timed, by label (run in the demo folder), each run by this Python with ``python_options``."""
    ccdcal = ccdcal_command(*python_options)
    folders = ["--masters-dir", "masters", "--output-dir", "calibrated"]
    return {
        BASELINE: [sys.executable, *python_options, "-c", "import sqlalchemy"],
        "--version": [*ccdcal, "--version"],
        "--help": [*ccdcal, "--help"],
        "status": [*ccdcal, "--db", "ccdcal.db", "status"],
        "process (nothing to do)": [*ccdcal, "--db", "ccdcal.db", "process", *folders],
    }


def run_once(command: list[str], folder: Path) -> tuple[float, float, str]:
    """Wall seconds and CPU seconds (user + system) of one run of ``command`` in ``folder``, and its
    standard error."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    return wall, cpu, done.stderr.decode(errors="replace")


def import_breakdown(stderr: str) -> tuple[float, Counter[str]]:
    """Of ``-X importtime`` output: the total import seconds, and each top-level package's own seconds."""
    by_package: Counter[str] = Counter()
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _cumulative, name = line.removeprefix("import time:").split("|", 2)
        by_package[name.strip().split(".")[0]] += int(own) / 1e6
    return sum(by_package.values()), by_package


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="rounds; medians are reported (default 10)")
    parser.add_argument("--top", type=int, default=8, help="packages shown per command (default 8)")
    parser.add_argument("--keep", type=Path, default=None, help="make the demo catalog here and keep it")
    parser.add_argument("--reuse", type=Path, default=None, help="a folder an earlier --keep left")
    args = parser.parse_args()
    folder = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="ccdcal-bench-startup-"))
    try:
        if args.reuse is None:
            folder.mkdir(parents=True, exist_ok=True)
            prepare(folder)
        timed = commands()
        for command in timed.values():  # warm-up: byte-code caches, page cache
            run_once(command, folder)
        walls: dict[str, list[float]] = {label: [] for label in timed}
        cpus: dict[str, list[float]] = {label: [] for label in timed}
        for _ in range(args.runs):
            for label, command in timed.items():
                wall, cpu, _ = run_once(command, folder)
                walls[label].append(wall)
                cpus[label].append(cpu)
        base, base_cpu = statistics.median(walls[BASELINE]), statistics.median(cpus[BASELINE])
        print(
            f"\nmedian of {args.runs} runs, each from a new process: wall [range], its ratio to the import "
            "of SQLAlchemy; CPU (user + system, less sensitive to a loaded machine) and its ratio"
        )
        for label, values in walls.items():
            median, cpu = statistics.median(values), statistics.median(cpus[label])
            ratio = median / base
            target = (
                f"  target {TARGETS[label]:g}x ({TARGETS[label] * base:.2f} s here): "
                + ("met" if ratio <= TARGETS[label] else "NOT met")
                if label in TARGETS
                else ""
            )
            print(
                f"  {label:<30}{median:6.3f} s [{min(values):.3f}-{max(values):.3f}] {ratio:4.2f}x   "
                f"CPU {cpu:5.3f} s {cpu / base_cpu:4.2f}x{target}"
            )
        print("\nimport time by top-level package, ms (own time of its modules; one run with -X importtime):")
        for label, command in commands("-X", "importtime").items():
            total, by_package = import_breakdown(run_once(command, folder)[2])
            shown = by_package.most_common(args.top)
            rest = total - sum(seconds for _, seconds in shown)
            parts = ", ".join(f"{name} {seconds * 1e3:.0f}" for name, seconds in shown)
            print(f"  {label:<30}{total * 1e3:5.0f} ms: {parts}, other {rest * 1e3:.0f}")
    finally:
        if args.keep is None and args.reuse is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
