"""What each command loads: ``--version`` and ``--help`` no database library, ``status`` and a ``process``
with nothing to do neither numba nor astropy nor Alembic, nor pydantic, which Typer would load to convert
values (docs/design.md, Architecture). Checked on the modules a new process holds when the command ends,
not on timings (those are benchmarks/bench_startup.py's).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ccdcal._version import __version__
from tests.processed_night import Night, processed_night

#: Run as ``python -c PROBE ARGS...``: the ``ccdcal`` command with ARGS, then, at exit, the top-level
#: packages it imported, on standard error.
PROBE = """
import atexit, sys

def loaded():
    packages = sorted({name.partition(".")[0] for name in sys.modules})
    sys.__stderr__.write("LOADED " + " ".join(packages) + "\\n")

atexit.register(loaded)
sys.argv = ["ccdcal", *sys.argv[1:]]
from ccdcal.__main__ import main

main()
"""

#: The calibration stack and what only some commands need.
CALIBRATION = {"numba", "llvmlite", "scipy", "astropy", "ccdproc", "matplotlib", "PIL", "astroscrappy"}
CLUSTER = {"dask", "distributed"}
MIGRATIONS = {"alembic", "mako"}
DATABASE = {"sqlalchemy", "psycopg"}
#: What recent Typer versions convert values with; ccdcal reads its values without it (cli/coercion.py).
PYDANTIC = {"pydantic", "pydantic_core"}


def command(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``ccdcal ARGS`` in a new process, and the top-level packages it had imported when it ended."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    return done, set(line.split()[1:])


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    return processed_night(tmp_path_factory.mktemp("startup"))


def test_version_loads_nothing_but_itself(tmp_path: Path) -> None:
    done, loaded = command("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"ccdcal {__version__}\n")
    parser = {"typer", "click", "rich", "pydantic"}
    assert loaded & (CALIBRATION | CLUSTER | MIGRATIONS | DATABASE | parser | {"numpy"}) == set()


def test_help_loads_no_database_library(tmp_path: Path) -> None:
    done, loaded = command("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "status" in done.stdout
    assert loaded & (CALIBRATION | CLUSTER | MIGRATIONS | DATABASE | PYDANTIC | {"numpy"}) == set()


def test_status_plans_without_the_calibration_stack(night: Night) -> None:
    done, loaded = command("--db", str(night.db), "status", cwd=night.root)
    assert done.returncode == 0, done.stderr
    assert "Pending: nothing (2 lights calibrated)" in done.stdout
    assert loaded & (CALIBRATION | CLUSTER | MIGRATIONS | PYDANTIC) == set()


def test_status_v_reads_the_frame_qa_without_the_calibration_stack(night: Night) -> None:
    done, loaded = command("--db", str(night.db), "status", "-v", cwd=night.root)
    assert done.returncode == 0, done.stderr
    assert "Frame QA:\n  bias: " in done.stdout
    assert loaded & (CALIBRATION | CLUSTER | MIGRATIONS | PYDANTIC) == set()


def test_process_with_nothing_to_do_loads_no_kernels(night: Night) -> None:
    folders = ["--masters-dir", str(night.masters), "--output-dir", str(night.calibrated)]
    done, loaded = command("--db", str(night.db), "process", *folders, cwd=night.root)
    assert done.returncode == 0, done.stderr
    assert "nothing to do: 2 lights already calibrated" in done.stdout
    assert loaded & (CALIBRATION | CLUSTER | MIGRATIONS | PYDANTIC) == set()
