"""``ccdcal process``: build the masters as needed, then calibrate every light, with provenance.

The order of work, top to bottom in :func:`process`:

1. check the options, resolve pinned masters (usage errors before anything is written) and claim the
   masters and output folders for this catalog (:func:`ccdcal.masters.folders.own_folders`: a folder
   another catalog owns is refused);
2. recover after runs that died (:func:`ccdcal.masters.recovery.recover`): take over their claims, remove the
   outputs and masters they published but never registered;
3. build missing or stale masters (:func:`ccdcal.masters.build.build_masters`, in this run);
4. plan every usable light (:func:`ccdcal.lights.plan.plan_lights`): match its masters in SQL
   (:func:`ccdcal.lights.matching.match_light`), then compare with its latest calibration — nothing to do
   when the raw file, the masters, the steps and the options are the same and the output is there —
   and, in the same transaction, claim the lights to calibrate (:func:`calibrate_planned`): a light
   another live run has claimed is ``busy``, its work, so that concurrent runs calibrate each light once;
5. calibrate the claimed lights, ``--jobs`` processes doing the per-frame work
   (:func:`ccdcal.lights.worker.calibrate_frame`) while this process alone writes the catalog: each
   result's rows (``calibrations``, ``calibration_masters``, the previous calibration superseded) are
   written in the transaction that renames its file to the final name (:mod:`ccdcal.lights.coordinator`).

``--dry-run`` (:func:`dry_run`) runs steps 3 and 4 as a plan in a scratch session
(:meth:`~ccdcal.catalog.db.Catalog.scratch`): masters that would be built appear as provisional rows of a
temporary copy of the ``masters`` table, so the lights are matched as they would be, and nothing is written
— no file, no row, not even a run; it works on a read-only catalog.

A catalog found deleted or replaced at a commit stops the work: the lights not recorded are ``failed``
with the reason (exit status 1), and the run's end is not recorded (there is nothing to record it in).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog, lock_writers
from ccdcal.catalog.models import Master
from ccdcal.catalog.states import last_process_run
from ccdcal.errors import CatalogGoneError, CcdcalError, UsageError
from ccdcal.files.fitsio import remove_own_temporaries
from ccdcal.lights import claims
from ccdcal.lights.coordinator import calibrate_lights, fail_unrecorded
from ccdcal.lights.matching import MatchOptions
from ccdcal.lights.options import ProcessOptions, check_options, match_options
from ccdcal.lights.plan import LightReport, paused_gc, plan_lights
from ccdcal.lights.summary import ProcessSummary
from ccdcal.masters.build import build_masters
from ccdcal.masters.folders import own_folders
from ccdcal.masters.plan import plan_masters
from ccdcal.masters.recovery import recover
from ccdcal.runtime.cluster import ClusterOnDemand

Progress = Callable[[str, int, int], None]


def process(
    catalog: Catalog, options: ProcessOptions = ProcessOptions(), progress: Progress | None = None
) -> ProcessSummary:
    """Build the masters as needed, then calibrate every light that needs it (see the module docstring).

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    options : ProcessOptions
        Folders, matching rules, steps, pins, jobs.
    progress : callable, optional
        Called as ``progress(label, done, total)``.

    Returns
    -------
    ProcessSummary
        Master reports and one report per usable light.

    Raises
    ------
    UsageError
        When options contradict each other or a pinned file is not a master of the catalog.
    FolderOwnerError
        When the masters or output folder belongs to another catalog (checked first).
    OutputError
        When the masters or output folder cannot be written (checked first), or an output cannot be
        written (a full disk) while masters are built.
    """
    check_options(options)
    with catalog.session() as session:
        match = match_options(session, options)  # pinned masters resolved before anything is written
    own_folders(  # and checked writable, before anything is written in them
        catalog,
        (options.masters_dir, "masters folder", "--masters-dir"),
        (options.output_dir, "output folder", "--output-dir"),
    )
    # One Dask cluster (--scheduler), started when first needed, for the masters and the lights.
    with catalog.run("process", options.arguments()) as run, ClusterOnDemand(options.scheduler):
        summary = ProcessSummary(run_id=run.id)
        try:
            recover(catalog, run.id, options.masters_dir, options.output_dir)
            built = build_masters(catalog, options.master_options(), progress, run_id=run.id)
            summary.masters = built.reports
            summary.lights = calibrate_planned(catalog, options, run.id, progress, match)
        except BaseException:  # Ctrl-C, a full disk: nothing of this run is left half written
            for folder in (options.masters_dir, options.output_dir):
                remove_own_temporaries(folder.expanduser().resolve())
            raise
        run.summary = summary.run_summary()
        run.partial = summary.exit_code != 0
    return summary


def dry_run(catalog: Catalog, options: ProcessOptions = ProcessOptions()) -> ProcessSummary:
    """What :func:`process` would do now, computed in a transaction that is rolled back.

    Returns
    -------
    ProcessSummary
        Masters with outcome ``build``/``current``/``skipped`` and lights with outcome ``calibrate``
        (with the masters they would get), ``current``, ``cannot`` or ``failed`` (failed before, and
        nothing changed since).
    """
    check_options(options)
    summary = ProcessSummary(dry_run=True)
    with catalog.scratch(Master) as session, paused_gc():
        match = match_options(session, options)
        taken = claims.busy(session, None)
        summary.masters = plan_masters(session, options.master_options())
        summary.lights = plan_lights(session, options, match_options(session, options, match))
        claims.mark_busy(summary.lights, taken)
    return summary


def calibrate_planned(
    catalog: Catalog,
    options: ProcessOptions,
    run_id: int,
    progress: Progress | None = None,
    match: MatchOptions | None = None,
) -> list[LightReport]:
    """Plan every light, claim those to calibrate, and calibrate them (steps 4 and 5 of the module docstring).

    The plan and the claims are one transaction, serialised with the other runs'
    (:mod:`ccdcal.lights.claims`); the lights another live run has claimed come back ``busy``. The claims are
    renewed while the lights are calibrated and released when this ends, however it ends.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    options : ProcessOptions
        Folders, steps, jobs.
    run_id : int
        The run the calibrations are recorded under.
    progress : callable, optional
        Called as ``progress(label, done, total)``.
    match : MatchOptions, optional
        Matching choices resolved earlier (pinned masters are re-read by id).

    Returns
    -------
    list of LightReport
        One per usable light.
    """
    lights: list[LightReport] = []
    with claims.holding(catalog, run_id):
        try:
            with catalog.session() as session:
                lock_writers(session)
                taken = claims.busy(session, run_id)  # read before the plan: see ccdcal.lights.claims
                lights = plan_lights(session, options, match_options(session, options, match))
                claims.claim(session, run_id, lights, taken)
        except CatalogGoneError as gone:  # found deleted when the plan was to be committed
            if not lights:
                raise
            fail_unrecorded(lights, str(gone))
            return lights
        calibrate_lights(catalog, [x for x in lights if x.outcome == "calibrate"], options, run_id, progress)
    return lights


def _rolled_back(catalog: Catalog) -> AbstractContextManager[Session]:
    """The dry run's session: its provisional masters rows never reach the catalog
    (:meth:`~ccdcal.catalog.db.Catalog.scratch`)."""
    return catalog.scratch(Master)


def plan_now(catalog: Catalog) -> tuple[int | None, ProcessSummary]:
    """The dry run of ``ccdcal process`` with the options of the last ``process`` (or ``run``) run, and
    that run's id; default options (and ``None``) when there was none, when its recorded options cannot be
    used (a row ccdcal did not write, a value it now refuses), or without its pins (and ``None``) when its
    pinned masters are gone."""
    run = last_process_run(catalog)
    try:
        options = ProcessOptions.from_arguments(run.arguments) if run is not None else ProcessOptions()
        options = replace(options, redo=False)
        check_options(options)
    except CcdcalError:
        run, options = None, ProcessOptions()
    try:
        return (run.id if run is not None else None), dry_run(catalog, options)
    except UsageError:  # a pinned master of that run is no longer in the catalog
        return None, dry_run(catalog, replace(options, bias=None, dark=None, flat=None))


def pending_work(catalog: Catalog) -> dict[str, Any]:
    """What ``ccdcal process`` would do now: computed on the fly, as a dry run, with the options of the
    last process run (defaults when there was none, or when its pinned masters are gone).

    Returns
    -------
    dict
        ``options_of_run`` (run id or ``None``), ``masters_to_build`` (file names), ``lights``: the lights
        not calibrated as they would be (``path``, ``outcome`` — ``calibrate``, ``cannot`` or ``failed`` —
        and ``reason``), and ``current`` (how many lights need nothing).
    """
    run_id, summary = plan_now(catalog)
    return {
        "options_of_run": run_id,
        "masters_to_build": [Path(m.path).name for m in summary.masters_of("build") if m.path],
        "lights": [
            {"path": light.path, "outcome": light.outcome, "reason": light.reason}
            for light in summary.lights
            if light.outcome != "current"
        ],
        "current": len(summary.of("current")),
    }
