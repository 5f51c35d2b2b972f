"""Looking at results: an HTML quality report (``ccdcal report``) and zscale previews (``ccdcal preview``).

- :func:`build_report` writes one self-contained HTML page for a run, for what was done since a date, or
  for the catalog now: each master as a zscale preview with its statistics, inputs and rejected fraction;
  the frame QA (the frames set aside with their rule and reason, the statistics of each master's frames);
  the bias level and dark current of every master group over time; each calibrated light before and
  after, with the masters used (ΔT, Δt, scale); the problems with their reasons; the runs with their
  parameters and software versions.
- :func:`preview_file` writes a zscale PNG of any FITS frame.

Modules: :mod:`~ccdcal.report.data`, :mod:`~ccdcal.report.frameqa` and :mod:`~ccdcal.report.problems`
(what is shown, from the catalog), :mod:`~ccdcal.report.previews` (pixels to PNG),
:mod:`~ccdcal.report.plots` (matplotlib, without pyplot), :mod:`~ccdcal.report.html` (the page),
:mod:`~ccdcal.report.build` (all together).
"""

from __future__ import annotations

from ccdcal.report.build import ReportSummary, build_report, gather
from ccdcal.report.data import ReportScope, parse_since
from ccdcal.report.previews import PreviewResult, preview_file

__all__ = [
    "PreviewResult",
    "ReportScope",
    "ReportSummary",
    "build_report",
    "gather",
    "parse_since",
    "preview_file",
]
