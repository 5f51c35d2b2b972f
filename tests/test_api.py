"""The Python API: every name of ``ccdcal`` resolves, ``import ccdcal`` stays light, and the README's
"From Python" example runs as it is written, on a simulated night."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

import ccdcal
from ccdcal.simulate import simulate_night
from tests.conftest import ROOT


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_every_exported_name_resolves() -> None:
    for name in ccdcal.__all__:
        assert getattr(ccdcal, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        _ = ccdcal.nothing  # type: ignore[attr-defined]


def test_a_stage_package_never_shadows_a_function_of_the_api() -> None:
    """Importing a package's module sets the package as an attribute of ``ccdcal``: none of them may
    bear the name of an exported function (``ccdcal.ingest`` stays the function)."""
    import ccdcal.ingestion.core
    import ccdcal.lights.pipeline

    assert callable(ccdcal.ingest)
    assert ccdcal.ingest.__module__ == "ccdcal.ingestion.core"
    packages = {p.name for p in (ROOT / "ccdcal").iterdir() if (p / "__init__.py").is_file()}
    assert packages & set(ccdcal.__all__) == set()


def test_import_ccdcal_loads_no_heavy_library() -> None:
    code = (
        "import sys, ccdcal; print(sorted(m for m in ('numpy', 'sqlalchemy', 'astropy') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    simulate_night(tmp_path / "raw", seed=1, shape=(48, 64))
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md", "exec"), {})
    assert (tmp_path / "night.db").is_file()
    assert (tmp_path / "calibrated" / "Light_001_cal.fits").is_file()
    assert (tmp_path / "night.html").is_file()
    assert (tmp_path / "light.png").is_file()
    assert (tmp_path / "calib_dir" / "config.ini").is_file()
    assert "Process (run" in printed.getvalue()
