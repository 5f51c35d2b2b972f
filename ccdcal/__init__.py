"""ccdcal: a database-backed calibration pipeline for astronomical CCD and CMOS images.

Everything the command line does is a library call::

    from ccdcal import Catalog, ingest
    with Catalog("night.db") as catalog:
        summary = ingest(catalog, ["raw/"])

Heavy modules are imported on first use, so worker processes that import ``ccdcal.ingest.reader`` stay
light.
"""

from __future__ import annotations

from typing import Any

from ccdcal._version import __version__

__all__ = [
    "Catalog",
    "__version__",
    "build_masters",
    "catalog_status",
    "ingest",
    "load_config",
    "process",
    "run_config",
    "simulate_night",
]

_LAZY = {
    "Catalog": ("ccdcal.catalog.db", "Catalog"),
    "ingest": ("ccdcal.ingest.core", "ingest"),
    "catalog_status": ("ccdcal.status", "catalog_status"),
    "simulate_night": ("ccdcal.simulate", "simulate_night"),
    "build_masters": ("ccdcal.masters", "build_masters"),
    "process": ("ccdcal.pipeline", "process"),
    "load_config": ("ccdcal.seedconfig", "load_config"),
    "run_config": ("ccdcal.seedconfig", "run_config"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'ccdcal' has no attribute {name!r}")
