"""The ``ccdcal`` command line: parse options, call the library, print.

No work is done here. :mod:`ccdcal.cli.base` holds the app, its global options and the one place where
ccdcal's errors become user messages and exit statuses: 0 done, 1 some frames rejected/unmatched/failed,
2 usage or configuration error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). The commands, one
module per group, imported here in the order ``ccdcal --help`` lists them: :mod:`~ccdcal.cli.catalog`
(ingest, status, db), :mod:`~ccdcal.cli.calibration` (masters, process), :mod:`~ccdcal.cli.demo`
(simulate), :mod:`~ccdcal.cli.report` (report, preview), :mod:`~ccdcal.cli.config` (run) and
:mod:`~ccdcal.cli.trace` (provenance, audit, impact, mark-bad, mark-good).
"""

from __future__ import annotations

from ccdcal.cli.base import app, run

# isort: off
# The commands register in import order, the order `ccdcal --help` lists them.
from ccdcal.cli import catalog, calibration, demo, report, config, trace

# isort: on

__all__ = ["app", "calibration", "catalog", "config", "demo", "report", "run", "trace"]
