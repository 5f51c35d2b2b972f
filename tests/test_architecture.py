"""The layout of the package, held as docs/design.md (Architecture) describes it.

The import graph is built by grimp (imports under ``TYPE_CHECKING`` and inside functions count): no import
cycle, no import from a lower layer to a higher one (the layers of the ``import-linter`` contract in
``pyproject.toml``, which ``make lint`` also checks), few modules at the top of the package, none over 600
lines, and every import made inside a function says why (start-up time, or an optional extra).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ccdcal"

#: Modules allowed over 600 lines: the header-card parser (a hand-written FITS card grammar, tested
#: against astropy's) and the simulator of a raw night (one scene, its cameras and its files).
LARGE = {"ccdcal/ingestion/cards.py", "ccdcal/simulate.py"}
MAX_LINES = 600
#: Besides ``__init__``, ``__main__`` and ``_version``.
MAX_TOP_MODULES = 10


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("ccdcal", include_external_packages=False, exclude_type_checking_imports=False)


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. the import cycles."""
    edges = {m: graph.find_modules_directly_imported_by(m) - {m} for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_layers_import_only_downward(graph: grimp.ImportGraph) -> None:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    stack = []
    for layer in layers["layers"]:
        names = [name.strip() for name in str(layer).replace(":", "|").split("|")]
        stack.append(grimp.Layer(*names, independent="|" in str(layer)))
    illegal = graph.find_illegal_dependencies_for_layers(layers=stack)
    shown = sorted(f"{d.importer} -> {d.imported}: {[r.importer for r in d.routes]}" for d in illegal)
    assert shown == []


def test_every_package_and_top_module_is_in_a_layer(graph: grimp.ImportGraph) -> None:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    placed = {name.strip() for layer in layers["layers"] for name in str(layer).replace(":", "|").split("|")}
    children = set(graph.find_children("ccdcal")) - {"ccdcal.__main__", "ccdcal.migrations"}
    assert children - placed == set()


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("ccdcal.kernels", "ccdcal.catalog"),
        ("ccdcal.lights.task", "ccdcal.catalog"),
        ("ccdcal.lights.worker", "ccdcal.catalog"),
        ("ccdcal.lights.worker_steps", "ccdcal.catalog"),
        ("ccdcal.lights.pixels", "ccdcal.catalog"),
        ("ccdcal.lights.history", "ccdcal.catalog"),
    ],
)
def test_numerics_and_workers_never_reach_the_catalog(
    graph: grimp.ImportGraph, importer: str, imported: str
) -> None:
    chains = graph.find_shortest_chains(importer=importer, imported=imported, as_packages=True)
    assert chains == set()


def test_few_modules_at_the_top() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__", "_version"}
    assert len(modules) <= MAX_TOP_MODULES, sorted(modules)


def _modules() -> Iterator[Path]:
    yield from sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(ROOT)) not in LARGE
    }
    assert long == {}


def _imports_in_functions(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    yield inner


def test_imports_inside_functions_say_why() -> None:
    """Each import made inside a function has, on the comment line above its group of imports (or on
    its own line), the reason: start-up time, or an optional extra."""
    unexplained = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for node in _imports_in_functions(ast.parse("\n".join(lines))):
            row = node.lineno - 1
            while row > 0 and (
                lines[row - 1].lstrip().startswith(("from ", "import ")) or not lines[row - 1]
            ):
                row -= 1  # the first import of this block
            context = " ".join(lines[max(row - 3, 0) : node.end_lineno]).lower()
            if "start-up" not in context and "optional" not in context:
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert unexplained == []


def test_no_getattr_with_a_default_on_options() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) == 3
                and "option" in ast.unparse(node.args[0])
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_the_repository_cites_its_own_design_document() -> None:
    """Code, tests and documents cite docs/design.md, never a document outside the repository."""
    outside = "DESIGN" + ".md"
    citing = [
        str(p.relative_to(ROOT))
        for pattern in ("ccdcal/**/*", "tests/**/*", "docs/**/*", "migrations/**/*", "benchmarks/**/*", "*.*")
        for p in ROOT.glob(pattern)
        if p.is_file() and p.suffix in (".py", ".md", ".toml", ".ini", ".cfg") and outside in p.read_text()
    ]
    assert citing == []
    assert (ROOT / "docs" / "design.md").is_file()


def test_the_options_that_travel_between_modules_are_typed() -> None:
    """No ``Any`` in the options objects passed from the command line down to the stages, nor in the
    worker contract."""
    import dataclasses
    import typing

    from ccdcal.kernels.options import StepOptions
    from ccdcal.lights.options import ProcessOptions
    from ccdcal.lights.task import FrameTask, MasterUse, OptionalSteps
    from ccdcal.masters.groups import MasterOptions

    untyped = []
    for cls in (StepOptions, MasterOptions, ProcessOptions, FrameTask, OptionalSteps, MasterUse):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if "Any" in str(hints[field.name]):
                untyped.append(f"{cls.__name__}.{field.name}")
    assert untyped == []


def test_every_mypy_exemption_is_needed() -> None:
    """Each module exempt from ``disallow_any_explicit`` (pyproject.toml) does write ``Any`` or a bare
    ``np.ndarray``; a module that no longer needs its exemption leaves the list."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    exempt = [
        module
        for override in config["tool"]["mypy"]["overrides"]
        if override.get("disallow_any_explicit") is False
        for module in override["module"]
    ]
    stale = []
    for module in exempt:
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        if "Any" not in source and "np.ndarray" not in source:
            stale.append(module)
    assert stale == []
    assert len(exempt) == len(set(exempt))
