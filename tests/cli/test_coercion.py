"""Values read without pydantic (ccdcal/cli/coercion.py) are those Typer's own converter gives, and what
they leave (a wrong value) still gets Typer's message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ccdcal.cli import app
from ccdcal.cli.coercion import _TYPERS, _reader

typer_coercion = pytest.importorskip("typer._coercion")


def _both(annotation: Any, value: Any) -> tuple[Any, Any]:
    """``value`` read directly, and by Typer's converter (or the exception it raises)."""
    command = typer.main.get_command(app)
    # Any parameter's info serves: the defaults of an option, as every option of ccdcal has them.
    info = next(p for p in command.params if p.name == "db").type_descriptor.parameter_info
    descriptor = typer_coercion.resolve_type_descriptor(annotation, info)
    read = _reader(annotation, info)
    assert read is not None
    direct = read(value)
    try:
        theirs = typer_coercion.build_runtime_param(descriptor)._coerce_value(value, param=None, ctx=None)
    except Exception as exc:
        theirs = exc
    return direct, theirs


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (int, "4"),
        (int, "-007"),
        (int, 12),
        (int, "1_000"),
        (int, "x"),
        (int, " 4"),
        (float, "0.5"),
        (float, "1e-6"),
        (float, "-2"),
        (float, "3.0"),
        (float, 2.0),
        (float, "inf"),
        (float, "1.5e400"),
        (str, "local:2"),
        (str, "caf\udce9"),
        (bool, True),
        (Path, "raw/night 1"),
        (Path, ""),
        (Path, "caf\udce9/raw"),
        (list[Path], ["a", "b/c"]),
        (list[str], ("x", "y")),
    ],
)
def test_direct_reading_equals_typers(annotation: Any, value: Any) -> None:
    direct, theirs = _both(annotation, value)
    if direct is _TYPERS:
        return  # left to Typer's converter, which then decides
    assert (type(direct), direct) == (type(theirs), theirs)


def test_a_wrong_value_gets_typers_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "c.db"), "ingest", "--jobs", "x", str(tmp_path)])
    assert result.exit_code == 2
    assert "Invalid value for '--jobs'" in result.output
