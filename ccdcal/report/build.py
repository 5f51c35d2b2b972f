"""``ccdcal report``: gather the scope from the catalog, render previews and plots, write one HTML file.

Previews are rendered in a few threads (reading FITS, averaging and PNG encoding release the GIL for
most of their time); a file that cannot be read gets a note in the page instead of a picture, and is
listed in the summary. The page is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdcal import limits
from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import utcnow
from ccdcal.errors import CcdcalError, NotFoundError
from ccdcal.report import html, problems
from ccdcal.report.data import (
    Problem,
    ReportData,
    ReportScope,
    select_drift,
    select_lights,
    select_masters,
    select_runs,
)
from ccdcal.report.frameqa import select_frame_qa
from ccdcal.report.plots import DRIFT_TITLES, drift_plot
from ccdcal.report.previews import Preview, check_output, preview, quiet_fits, write_bytes_atomic

#: Longest side of a master's preview, and of each of a light's two previews [px].
MASTER_PREVIEW_SIZE = 384
LIGHT_PREVIEW_SIZE = 256

#: Threads rendering previews by default.
DEFAULT_THREADS = 4

Progress = Callable[[int, int], None]


@dataclass
class ReportSummary:
    """What :func:`build_report` wrote.

    Attributes
    ----------
    path : Path
        The HTML file.
    scope : str
        The scope in words (``run 4``, ``since ... UTC``, ``the catalog now``).
    size : int
        Its size in bytes.
    masters, lights, problems, pending, runs, images : int
        How many of each the page shows (``images``: ``<img>`` elements: previews and plots).
    unavailable : list of (str, str)
        Files with no preview, and why (missing, unreadable).
    seconds : float
        Time taken.
    """

    path: Path
    scope: str
    size: int = 0
    masters: int = 0
    lights: int = 0
    problems: int = 0
    pending: int = 0
    runs: int = 0
    images: int = 0
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "path": str(self.path),
            "scope": self.scope,
            "size": self.size,
            "masters": self.masters,
            "lights": self.lights,
            "problems": self.problems,
            "pending": self.pending,
            "runs": self.runs,
            "images": self.images,
            "unavailable": [{"path": p, "reason": r} for p, r in self.unavailable],
        }


def build_report(
    catalog: Catalog,
    output: str | os.PathLike[str] = "report.html",
    *,
    run_id: int | None = None,
    since: dt.datetime | None = None,
    threads: int = DEFAULT_THREADS,
    progress: Progress | None = None,
) -> ReportSummary:
    """Write the HTML quality report of a run, of what was done since a date, or of the catalog now.

    Parameters
    ----------
    catalog : Catalog
        The open catalog (only read).
    output : path-like
        The HTML file to write (replaced if it exists); its folder must exist.
    run_id : int, optional
        Report on this run only (``--run``).
    since : datetime, optional
        Report on what was built, calibrated and run since then (naive UTC; ``--since``).
    threads : int
        Threads rendering previews.
    progress : callable, optional
        Called as ``progress(done, total)`` as previews are rendered.

    Returns
    -------
    ReportSummary
        Where the page is and what it shows.

    Raises
    ------
    UsageError
        Both ``run_id`` and ``since``, a ``run_id`` below 1, or the output's folder does not exist.
    NotFoundError
        ``run_id`` names no run.
    """
    started = time.perf_counter()
    if run_id is not None:
        limits.RUN_ID.check(run_id)
    scope = ReportScope(run_id, since)
    target = Path(output).expanduser().resolve()
    check_output(target, "the report", "report.html")
    data = gather(catalog, scope)
    images, unavailable = render_images(data, threads, progress)
    page = html.render(data, images)
    write_bytes_atomic(target, page.encode("utf-8"))
    return ReportSummary(
        path=target,
        scope=scope.describe(),
        size=target.stat().st_size,
        masters=len(data.masters),
        lights=len(data.lights),
        problems=len(data.problems),
        pending=len(data.pending),
        runs=len(data.runs),
        images=images.count(),
        unavailable=unavailable,
        seconds=time.perf_counter() - started,
    )


def gather(catalog: Catalog, scope: ReportScope) -> ReportData:
    """Everything the report of ``scope`` shows (see :mod:`ccdcal.report.data`)."""
    if scope.run_id is not None:
        with catalog.reading() as session:
            select_runs(session, scope, set())  # an unknown run: NotFoundError before any work
    found: list[Problem] = []
    pending: list[Problem] = []
    plan_run: int | None = None
    if scope.run_id is None and scope.since is None:
        found, pending, plan_run = problems.now(catalog)
    with catalog.reading() as session:
        lights = select_lights(session, scope)
        used = {use.master_id for light in lights for use in light.masters}
        masters = select_masters(session, scope, used)
        referenced = {m.run_id for m in masters} | {light.run_id for light in lights} | {plan_run}
        runs = select_runs(session, scope, {r for r in referenced if r is not None})
        drift = select_drift(session, masters)
        frame_qa = select_frame_qa(session, masters, run_id=scope.run_id, since=scope.since)
    if scope.run_id is not None or scope.since is not None:
        found = problems.from_runs(runs)
    return ReportData(
        catalog=catalog.name,
        scope=scope,
        generated_at=utcnow(),
        runs=runs,
        masters=masters,
        lights=lights,
        drift=drift,
        problems=found,
        pending=pending,
        plan_run=plan_run,
        frame_qa=frame_qa,
    )


def _shown(path: str | None, hdu: int | None, size: int) -> Preview | str:
    """A preview, or why there is none."""
    if not path:
        return "no output file recorded"
    try:
        return preview(path, size, hdu, quiet=False)  # warnings: see render_images
    except NotFoundError:
        return f"{path} is missing"
    except CcdcalError as exc:
        return str(exc)
    except MemoryError:
        return f"{path}: not enough memory to read it"


def render_images(
    data: ReportData, threads: int = DEFAULT_THREADS, progress: Progress | None = None
) -> tuple[html.Images, list[tuple[str, str]]]:
    """The previews of the masters and lights, and the drift plots.

    Returns
    -------
    images : Images
        Previews (or the reason there is none) and plots.
    unavailable : list of (str, str)
        The files without a preview, with the reason.
    """
    jobs: list[tuple[dict[int, Any], int, str | None, int | None, int]] = []
    images = html.Images()
    for master in data.masters:
        jobs.append((images.masters, master.id, master.path, 0, MASTER_PREVIEW_SIZE))
    for light in data.lights:
        jobs.append((images.raw, light.calibration_id, light.raw_path, light.hdu, LIGHT_PREVIEW_SIZE))
        if light.replaced_by is None:
            jobs.append((images.calibrated, light.calibration_id, light.output, 0, LIGHT_PREVIEW_SIZE))
    unavailable: list[tuple[str, str]] = []
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ccdcal-preview")
    with quiet_fits():  # warning filters are process-wide: set once, around every thread
        try:
            futures = [pool.submit(_shown, path, hdu, size) for _, _, path, hdu, size in jobs]
            for done, ((into, key, path, _, _), future) in enumerate(zip(jobs, futures, strict=True), 1):
                shown = future.result()
                into[key] = shown
                if isinstance(shown, str):
                    unavailable.append((path or "", shown))
                if progress:
                    progress(done, len(jobs))
        finally:  # interrupted: the previews not started are dropped
            pool.shutdown(wait=True, cancel_futures=True)
    for kind in DRIFT_TITLES:
        series = [s for s in data.drift if s.kind == kind and s.points]
        if series:
            images.drift[kind] = drift_plot(kind, series)
    return images, unavailable
