"""The ``ccdcal`` command line: parse options, call the library, print.

No work is done here. :mod:`ccdcal.cli.base` holds the app, its global options and the one place where
ccdcal's errors become user messages and exit statuses: 0 done, 1 some frames rejected/unmatched/failed,
2 usage or configuration error, 130 interrupted. The commands are in :mod:`~ccdcal.cli.catalog` (ingest,
status, db), :mod:`~ccdcal.cli.reduction` (masters, process, simulate, report, preview, run) and
:mod:`~ccdcal.cli.trace` (provenance, audit, impact, mark-bad, mark-good), imported here in the order
``ccdcal --help`` lists them.
"""

from __future__ import annotations

from ccdcal.cli import catalog, reduction, trace  # noqa: F401  (each registers its commands)
from ccdcal.cli.base import app, run

__all__ = ["app", "run"]
