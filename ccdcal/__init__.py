"""ccdcal: a database-backed calibration pipeline for astronomical CCD and CMOS images.

Everything the command line does is a library call, importable from here::

    import ccdcal

    with ccdcal.Catalog("night.db") as catalog:
        ccdcal.ingest(catalog, ["raw/"])
        summary = ccdcal.process(catalog, ccdcal.ProcessOptions(jobs=2))

The names below are imported on first use (PEP 562), so ``import ccdcal`` stays light and worker
processes that import one module of the package load only what they need. The package is laid out by
stage (docs/design.md, Architecture).
"""

from __future__ import annotations

import importlib

from ccdcal._version import __version__

#: :data:`typing.TYPE_CHECKING`, without importing :mod:`typing` (a few milliseconds of every command's
#: start-up in which a Ctrl-C would print Python's own traceback: ``ccdcal.__main__`` catches it after).
TYPE_CHECKING = False
if TYPE_CHECKING:  # for type checkers and editors; at run time each name is imported on first use
    from ccdcal.catalog.db import Catalog
    from ccdcal.config.run import load_config, run_config, write_default_config
    from ccdcal.ingestion.core import ingest
    from ccdcal.kernels.combine import ClipParams
    from ccdcal.kernels.options import StepOptions
    from ccdcal.lights.options import ProcessOptions
    from ccdcal.lights.pipeline import dry_run, process
    from ccdcal.masters.build import build_masters, list_masters
    from ccdcal.masters.groups import MasterOptions
    from ccdcal.report.build import build_report
    from ccdcal.report.data import parse_since
    from ccdcal.report.previews import preview_file
    from ccdcal.reproduction.core import reproduce
    from ccdcal.simulate import simulate_night
    from ccdcal.status import catalog_status
    from ccdcal.trace.audit import audit
    from ccdcal.trace.headertrace import trace_header
    from ccdcal.trace.impact import impact, mark_bad, mark_good
    from ccdcal.trace.provenance import provenance

#: Name → the module that defines it.
_LAZY = {
    "Catalog": "ccdcal.catalog.db",
    "ingest": "ccdcal.ingestion.core",
    "catalog_status": "ccdcal.status",
    "simulate_night": "ccdcal.simulate",
    "ClipParams": "ccdcal.kernels.combine",
    "StepOptions": "ccdcal.kernels.options",
    "MasterOptions": "ccdcal.masters.groups",
    "build_masters": "ccdcal.masters.build",
    "list_masters": "ccdcal.masters.build",
    "ProcessOptions": "ccdcal.lights.options",
    "process": "ccdcal.lights.pipeline",
    "dry_run": "ccdcal.lights.pipeline",
    "provenance": "ccdcal.trace.provenance",
    "trace_header": "ccdcal.trace.headertrace",
    "audit": "ccdcal.trace.audit",
    "impact": "ccdcal.trace.impact",
    "mark_bad": "ccdcal.trace.impact",
    "mark_good": "ccdcal.trace.impact",
    "build_report": "ccdcal.report.build",
    "parse_since": "ccdcal.report.data",
    "preview_file": "ccdcal.report.previews",
    "reproduce": "ccdcal.reproduction.core",
    "load_config": "ccdcal.config.run",
    "run_config": "ccdcal.config.run",
    "write_default_config": "ccdcal.config.run",
}

__all__ = [
    "Catalog",
    "ClipParams",
    "MasterOptions",
    "ProcessOptions",
    "StepOptions",
    "__version__",
    "audit",
    "build_masters",
    "build_report",
    "catalog_status",
    "dry_run",
    "impact",
    "ingest",
    "list_masters",
    "load_config",
    "mark_bad",
    "mark_good",
    "parse_since",
    "preview_file",
    "process",
    "provenance",
    "reproduce",
    "run_config",
    "simulate_night",
    "trace_header",
    "write_default_config",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ccdcal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
