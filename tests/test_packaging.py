"""A wheel built from the project installs into a fresh environment and runs from another folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from tests.conftest import ROOT

SOURCES = ("ccdcal", "migrations", "pyproject.toml", "README.md", "alembic.ini")


@pytest.mark.slow
def test_wheel_carries_the_migrations_and_ingests_from_tmp(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, src / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("ccdcal-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "ccdcal/migrations/env.py",
        "ccdcal/migrations/versions/0001_initial.py",
        "ccdcal/migrations/script.py.mako",
        "ccdcal/cli/__init__.py",
        "ccdcal/cli/base.py",
    } <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        cwd=tmp_path,
    )
    # The dependencies come from the test environment (no network needed); ccdcal from the wheel only.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    raw = tmp_path / "night" / "BIAS"
    raw.mkdir(parents=True)
    for i in range(3):
        fits.PrimaryHDU(np.full((4, 4), i, dtype=np.uint16)).writeto(raw / f"b{i}.fits")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    done = subprocess.run(
        [str(venv / "bin" / "ccdcal"), "ingest", str(raw.parent)],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "3 new" in done.stdout
    where = subprocess.run(
        [str(python), "-c", "import ccdcal, ccdcal.migrations; print(ccdcal.__file__)"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(purelib)
    assert (workdir / "ccdcal.db").exists()
