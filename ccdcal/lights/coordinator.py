"""The coordinator of ``ccdcal process``: per-frame work in worker processes, catalog rows written here.

Workers (:func:`ccdcal.lights.worker.calibrate_frame`) write each calibrated light to a temporary file and
return its sha256. This process flushes each file to disk in a background thread — waiting on the disk,
not on a core, while the next frames are computed — and then, alone, writes the catalog: in one
transaction per batch of synced frames it adds each light's ``calibrations`` row and its
``calibration_masters`` rows, supersedes the light's previous calibration (its row and sha256 are kept),
and renames the temporary file to its final name (one atomic rename; the file it replaces is kept alive
by a hard link and removed in the background, as freeing its blocks waits on the disk); if the
transaction fails, the temporary files are removed. A frame that failed is recorded ``failed`` with the
reason; the others go on. A light whose worker read other bytes than the catalog's sha256 (rewritten
with its size and mtime kept) fails, its output removed, and its frame is marked changed for ingest.
reason; the others go on. When the catalog's file is found deleted or replaced at a commit
(:class:`~ccdcal.errors.CatalogGoneError`), the work stops: the lights not recorded are ``failed`` with that
reason, their files removed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.history import record as record_changes
from ccdcal.catalog.models import CHANGED_MTIME, Calibration, CalibrationMaster, Frame, utcnow
from ccdcal.catalog.queries import in_chunks
from ccdcal.errors import CatalogGoneError
from ccdcal.files.fitsio import output_error, remove_stale_temporaries, sync_folder, temporary_path
from ccdcal.files.journal import Entry, Journal
from ccdcal.lights import workers
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.plan import LightReport
from ccdcal.lights.steps import APPLIED
from ccdcal.lights.task import RAW_CHANGED, FrameResult, FrameTask, work_order
from ccdcal.runtime.cluster import dask_cluster
from ccdcal.runtime.cores import usable_cores
from ccdcal.runtime.interrupts import ignore_interrupts, shielded
from ccdcal.runtime.pools import ForkedThreads, can_fork, cancel_pending, submit

Progress = Callable[[str, int, int], None]

#: Finished frames per job that may wait for their catalog transaction (registered together).
_BATCH = 4


def calibrate_lights(
    catalog: Catalog,
    reports: list[LightReport],
    options: ProcessOptions,
    run_id: int,
    progress: Progress | None = None,
) -> None:
    """Calibrate the planned lights and record them; each report's outcome becomes ``calibrated`` or
    ``failed``.

    Parameters
    ----------
    catalog : Catalog
        The open catalog (written by this process only).
    reports : list of LightReport
        Lights planned ``calibrate`` (each with its task).
    options : ProcessOptions
        ``output_dir``, ``jobs`` (default: every core this process may use) and ``scheduler``.
    run_id : int
        The process run.
    progress : callable, optional
        Called as ``progress("calibrate", done, total)``.
    """
    tasks = [r.task for r in reports if r.task is not None]
    if not tasks:
        return
    folder = Path(options.output_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    by_frame = {r.frame_id: r for r in reports}
    done = 0
    if progress:
        progress("calibrate", 0, len(tasks))
    syncing: deque[Future[FrameResult]] = deque()  # results whose file is being flushed, in order
    with (
        _workers(min(options.jobs or usable_cores(), len(tasks)), options.scheduler) as (pool, jobs),
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="ccdcal-sync") as syncer,
    ):
        try:
            for batch in _results(tasks, pool):
                syncing.extend(syncer.submit(_synced, result) for result in batch)
                if len(syncing) > _BATCH * jobs:  # a few frames a transaction
                    done += _register_synced(catalog, syncing, by_frame, run_id, _BATCH * jobs, syncer)
                    if progress:
                        progress("calibrate", done, len(tasks))
            done += _register_synced(catalog, syncing, by_frame, run_id, 0, syncer)
            if progress:
                progress("calibrate", done, len(tasks))
        except CatalogGoneError as gone:  # nothing more can be recorded: the work stops
            fail_unrecorded(reports, str(gone))
        finally:
            for future in syncing:  # interrupted: these files are not registered
                temporary = None if future.cancelled() else future.result().temporary
                if temporary:
                    Path(temporary).unlink(missing_ok=True)
    sync_folder(folder)


def fail_unrecorded(reports: list[LightReport], why: str) -> None:
    """The lights planned to be calibrated and not recorded become ``failed``, with ``why``."""
    for report in reports:
        if report.outcome == "calibrate":
            report.outcome, report.reason, report.task = "failed", f"not recorded: {why}", None


def _register_synced(
    catalog: Catalog,
    syncing: deque[Future[FrameResult]],
    by_frame: dict[int, LightReport],
    run_id: int,
    keep: int,
    background: ThreadPoolExecutor,
) -> int:
    """Register, in one transaction, the results at the head of ``syncing`` whose files are on disk —
    waiting for more while over ``keep`` are pending — and remove the outputs they replaced in
    ``background``. Returns how many were registered."""
    ready = []
    while syncing and (syncing[0].done() or len(syncing) > keep):
        ready.append(syncing.popleft().result())
    if ready:
        retired = register(catalog, [(by_frame[result.frame_id], result) for result in ready], run_id)
        for old in retired:  # replaced outputs: freeing their blocks waits on the disk, not on a core
            background.submit(old.unlink, missing_ok=True)
    return len(ready)


def _synced(result: FrameResult) -> FrameResult:
    """The result once its file is on disk (or failed with the reason when it cannot be flushed)."""
    if result.temporary is None:
        return result
    try:
        descriptor = os.open(result.temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as exc:
        Path(result.temporary).unlink(missing_ok=True)
        return replace(result, temporary=None, sha256=None, error=f"cannot write the output: {exc}")
    return result


@contextmanager
def _workers(jobs: int, scheduler: str | None) -> Iterator[tuple[Executor | None, int]]:
    """Where frames are calibrated, and how many at once: a Dask cluster (``--scheduler``), the threads of
    a worker process (:mod:`ccdcal.lights.workers`: the one forked early, else one forked now for
    ``--jobs`` over 1), worker processes where none can be forked, or this process (``None``)."""
    if scheduler:
        with dask_cluster(scheduler) as cluster:
            yield cluster.executor, cluster.workers
        return
    pool: Executor | None = workers.take()
    if pool is None and jobs > 1:
        if can_fork():
            pool = workers.start(jobs)
        else:
            pool = ProcessPoolExecutor(max_workers=jobs, initializer=ignore_interrupts)
    if pool is None:
        _warm_up_here()
        yield None, 1
        return
    try:
        yield pool, pool.threads if isinstance(pool, ForkedThreads) else jobs
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _warm_up_here() -> None:
    """Load the kernels in this process, which calibrates the frames itself."""
    # Imported here for start-up time: a process with nothing to calibrate loads no numba or astropy.
    from ccdcal.kernels.light import warm_up

    warm_up()


def _results(tasks: list[FrameTask], pool: Executor | None) -> Iterator[list[FrameResult]]:
    """Results as they come: in this process without a pool, else in batches of the finished."""
    if pool is None:
        # Imported here for start-up time: a process with nothing to calibrate loads no numba or astropy.
        from ccdcal.lights.worker import calibrate_frame

        for task in tasks:
            yield [calibrate_frame(task)]
        return
    pending: set[Future[FrameResult]] = set()
    unclaimed: list[FrameResult] = []
    try:
        # Each master read once, in parallel, just before the first frame that needs it; Dask workers read
        # their own. By name (ccdcal.lights.workers): this process loads neither numba nor astropy for them.
        local = isinstance(pool, ForkedThreads | ProcessPoolExecutor)
        for item in work_order(tasks) if local else tasks:
            if isinstance(item, FrameTask):
                pending.add(submit(pool, workers.calibrate, item))
            else:
                submit(pool, workers.load_master, *item)
        while pending:
            finished, pending = _wait(pending)
            if not finished:
                continue
            unclaimed = [future.result() for future in finished]
            yield unclaimed
            unclaimed = []
    finally:
        cancel_pending(pool, pending)
        # Those already running finish (their files are not registered). A future the pool cancelled
        # is done, though concurrent.futures.wait never reports it so.
        running = {future for future in pending if not future.done()}
        while running and _may_finish(pool):
            running = {future for future in _wait(running)[1] if not future.done()}
        for future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                unclaimed.append(future.result())
        for result in unclaimed:
            if result.temporary:
                Path(result.temporary).unlink(missing_ok=True)


def _may_finish(pool: Executor) -> bool:
    """Whether the frames still running in ``pool`` may finish: not when every worker process is gone
    (killed with the process group by SIGTERM, out of memory). Python 3.11's pool may then never settle
    their futures (its manager thread can stop on one already cancelled, CPython gh-107219); their
    temporary files are left to the next run, which removes a dead process's temporaries."""
    return not isinstance(pool, ProcessPoolExecutor) or bool(multiprocessing.active_children())


def _wait(pending: set[Future[FrameResult]]) -> tuple[set[Future[FrameResult]], set[Future[FrameResult]]]:
    """The futures finished within a moment, and the others.

    A Ctrl-C is held back while :func:`concurrent.futures.wait` runs and raised as it returns (a tenth of a
    second at the most): raised inside it, where it takes each future's lock in turn, it could leave a lock
    held and the pool's shutdown waiting for ever.
    """
    with shielded():
        done, rest = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
    return done, rest


def register(catalog: Catalog, finished: list[tuple[LightReport, FrameResult]], run_id: int) -> list[Path]:
    """Record finished frames in one transaction, renaming each output to its final name.

    Before anything is renamed, the batch's publication is journaled (:mod:`ccdcal.files.journal`): each
    output's final name, its sha256, and the temporary name the file it replaces is kept under. The
    journal is removed once the rows are committed, or the files put back: a run killed in between leaves
    the proof of what it published for the recovery of the next run.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    finished : list of (LightReport, FrameResult)
        The planned light and what its worker did.
    run_id : int
        The process run.

    Returns
    -------
    list of Path
        Hard links (temporary names) to the files the new outputs replaced: the caller removes them. The
        replacement itself stays one atomic rename.
    """
    retired: list[Path] = []
    published: list[tuple[Path, list[Path]]] = []  # renamed outputs, with the file each replaced
    recorded: list[tuple[LightReport, FrameResult, int]] = []
    keep = {  # where each output about to be replaced is kept until the commit
        report.frame_id: temporary_path(Path(report.task.output).parent)
        for report, result in finished
        if report.task is not None and result.error is None
    }
    journals: list[Journal] = []
    try:
        journals += _journals(catalog, finished, run_id, keep)
        with catalog.session() as session:
            # Core statements, a few per batch (not ORM objects flushed one by one): the coordinator's
            # catalog writes stay a small part of a frame's time.
            connection = session.connection()
            rows = [_calibration_row(report, result, run_id) for report, result in finished]
            ids = list(connection.scalars(_INSERT_CALIBRATION, rows))
            done = list(zip(finished, ids, strict=True))
            links = [link for (report, _), new in done for link in _provenance(report, new)]
            if links:
                connection.execute(insert(cast(Table, CalibrationMaster.__table__)), links)
            superseded = [
                {"light": report.frame_id, "new": new, "why": report.reason}
                for (report, result), new in done
                if result.error is None
            ]
            if superseded:
                _record_superseded(session, superseded, run_id)
                connection.execute(_SUPERSEDE, superseded)
            changed = [
                {"light": report.frame_id, "was": report.task.sha256, "now": utcnow()}
                for report, result in finished
                if result.error == RAW_CHANGED and report.task is not None
            ]
            if changed:  # read again by the next ingest, refused by the next plan until then
                connection.execute(_MARK_CHANGED, changed)
            for (report, result), new in done:
                task = report.task
                assert task is not None
                if result.error is None:
                    assert result.temporary is not None
                    with shielded():  # a Ctrl-C never falls between the rename and its record
                        replaced = _retire(Path(task.output), keep[report.frame_id])
                        retired += replaced
                        os.replace(result.temporary, task.output)
                        published.append((Path(task.output), replaced))
                recorded.append((report, result, new))
    except BaseException:
        committed = bool(recorded) and catalog.committed(Calibration, recorded[0][2])
        for output, replaced in reversed(published if not committed else []):  # no rows: as they were
            if replaced:
                os.replace(replaced[0], output)
            else:
                output.unlink(missing_ok=True)
        for path in [*(Path(r.temporary) for _, r in finished if r.temporary), *retired]:
            path.unlink(missing_ok=True)
        for journal in journals:  # reached once the files are as the catalog says
            journal.discard()
        if committed:  # a Ctrl-C raised after the commit: these are recorded
            _recorded(recorded)
        raise
    for journal in journals:
        journal.discard()
    _recorded(recorded)
    return retired


def _journals(
    catalog: Catalog, finished: list[tuple[LightReport, FrameResult]], run_id: int, keep: dict[int, Path]
) -> list[Journal]:
    """The journal of the outputs about to be renamed, one per output folder, on disk."""
    entries: dict[Path, list[Entry]] = {}
    for report, result in finished:
        if report.frame_id in keep and report.task is not None and result.sha256 is not None:
            output = Path(report.task.output)
            entry = Entry(output.name, result.sha256, keep[report.frame_id].name)
            entries.setdefault(output.parent, []).append(entry)
    journals = []
    for folder, listed in entries.items():
        journal = Journal(folder, catalog.catalog_id, run_id)
        try:
            journal.record(listed)
        except OSError as exc:  # a full disk: nothing renamed yet
            raise output_error(folder / "journal", exc) from exc
        journals.append(journal)
    return journals


def _recorded(recorded: list[tuple[LightReport, FrameResult, int]]) -> None:
    """Each registered light's outcome: ``calibrated``, or ``failed`` with the worker's reason."""
    for report, result, new in recorded:
        ok = result.error is None
        report.outcome = "calibrated" if ok else "failed"
        report.reason = report.reason if ok else result.error
        report.warnings = result.warnings
        report.calibration_id, report.seconds = new, result.seconds


_CALIBRATIONS = cast(Table, Calibration.__table__)
#: One ``calibrations`` row per finished frame, their ids in the order of the rows.
_INSERT_CALIBRATION = insert(_CALIBRATIONS).returning(_CALIBRATIONS.c.id, sort_by_parameter_order=True)
#: The light's other current calibration becomes superseded, with the reason of the new one.
_SUPERSEDE = (
    update(_CALIBRATIONS)
    .where(
        _CALIBRATIONS.c.frame_id == bindparam("light"),
        _CALIBRATIONS.c.status == "current",
        _CALIBRATIONS.c.id != bindparam("new"),
    )
    .values(status="superseded", superseded_reason=bindparam("why"))
)


def _record_superseded(session: Session, superseded: list[dict[str, Any]], run_id: int) -> None:
    """Record the calibrations :data:`_SUPERSEDE` is about to supersede (``state_changes``)."""
    why = {row["light"]: row["why"] for row in superseded}
    new = [row["new"] for row in superseded]
    changes: list[tuple[int, str, Any, Any]] = []
    for lights in in_chunks(why):
        query = select(Calibration.id, Calibration.frame_id, Calibration.superseded_reason).where(
            Calibration.frame_id.in_(lights), Calibration.status == "current", Calibration.id.not_in(new)
        )
        for calibration_id, frame_id, reason in session.execute(query):
            changes += [
                (calibration_id, "status", "current", "superseded"),
                (calibration_id, "superseded_reason", reason, why[frame_id]),
            ]
    record_changes(session, "calibrations", changes, run_id=run_id)


#: A light whose worker read other bytes than the catalog's (:data:`RAW_CHANGED`): its ``mtime`` becomes
#: :data:`CHANGED_MTIME`, which no file has, so that the next ``ccdcal ingest`` reads it again (a file
#: whose size and mtime match its row is otherwise skipped) and the next plan refuses it until then; and
#: ``changed_at`` is set. Not when an ingest has recorded the new content meanwhile (its sha256 changed).
_MARK_CHANGED = (
    update(cast(Table, Frame.__table__))
    .where(Frame.id == bindparam("light"), Frame.sha256 == bindparam("was"))
    .values(mtime=CHANGED_MTIME, changed_at=bindparam("now"))
)


def _calibration_row(report: LightReport, result: FrameResult, run_id: int) -> dict[str, Any]:
    """The ``calibrations`` row of one finished frame (``current``, or ``failed`` with the reason)."""
    task = report.task
    assert task is not None
    ok = result.error is None
    return {
        "frame_id": report.frame_id,
        "raw_sha256": result.raw_sha256 or task.sha256,  # the bytes the worker read, when it read them
        "path": task.output,
        "sha256": result.sha256,
        "status": "current" if ok else "failed",
        "error": result.error,
        "dark_scale_factor": task.dark_scale if task.dark is not None else None,
        "flat_norm": 1.0 if task.flat is not None else None,
        "steps": _steps(report, task, result),
        "run_id": run_id,
        "created_at": utcnow(),
    }


def _retire(output: Path, keep: Path) -> list[Path]:
    """A hard link ``keep`` to an output about to be replaced, so that the rename does not free its blocks
    and the file can be put back."""
    try:
        os.link(output, keep)
    except OSError:  # no previous file, or no hard links here: the rename frees it
        return []
    return [keep]


def _steps(report: LightReport, task: FrameTask, result: FrameResult) -> dict[str, Any]:
    """The ``calibrations.steps`` JSON: each step with its status, reason and master."""
    assert report.match is not None
    steps = {role: step.as_json() for role, step in report.match.steps.items()}
    if task.flat is not None:
        steps["flat"] |= {"flat_min": task.flat_min, "masked": result.masked, "norm_value": 1.0}
        steps["flat"]["flat_low"] = task.flat_low
        mask = result.details.get("mask")
        if isinstance(mask, dict):  # pixels below flat_low: MASK bit 16
            steps["flat"]["low"] = mask["bits"]["16"]
    for key, record in result.details.items():  # optional steps and warnings (ccdcal.lights.worker_steps)
        steps[key] = steps[key] | record if isinstance(steps.get(key), dict) else record
    return steps


def _provenance(report: LightReport, calibration_id: int) -> list[dict[str, Any]]:
    """One ``calibration_masters`` row per applied step, with the numbers behind the choice."""
    assert report.match is not None
    return [
        {
            "calibration_id": calibration_id,
            "role": role,
            "master_id": step.master.id,
            "delta_temp": step.delta_temp,
            "delta_time": step.delta_time,
            "scale": step.scale,
            "pinned": step.pinned,
        }
        for role, step in report.match.steps.items()
        if step.status == APPLIED and step.master is not None
    ]
