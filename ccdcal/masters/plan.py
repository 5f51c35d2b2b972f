"""What ``ccdcal masters`` would build, without combining or writing any file (``process --dry-run``).

:func:`plan_masters` plans the kinds in calibration order (bias, dark, flat). For each kind:

1. its groups (:func:`~ccdcal.catalog.queries.grouped_frames`), their calibrators and identities
   (:func:`ccdcal.masters.calibrators.plan_group`, against the masters of the kinds planned before);
2. the current master of each identity, in one select: ``current`` (or ``skipped`` when it is marked
   bad) when its file is there;
3. a superseded master of the identity whose file is intact (:func:`ccdcal.masters.restore.restorable`):
   ``restore``, that row made current again and the group's current masters marked superseded;
4. for the others (``build``), in a few statements for the whole kind: a provisional ``masters`` row each
   (its future file name and version, a placeholder sha256), and the group's current masters marked
   superseded — so that the kinds planned next, and the lights matched in the same session, see the
   catalog as it would be. The caller's session writes them into a temporary copy of the table
   (:meth:`~ccdcal.catalog.db.Catalog.scratch`), never into the catalog.

The groups of one kind do not depend on each other — a group's calibrators are of other kinds, its
identity and file name its own (a name two groups share gets ``_v2`` as it would in a build) — so the
rows of a kind are read and written at once instead of group by group. The reason a build records on a
superseded master (:func:`~ccdcal.catalog.lineage.rebuild_reason`) is not computed: the plan is never kept.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ccdcal.catalog.headers import header_values
from ccdcal.catalog.models import Master
from ccdcal.catalog.queries import GROUP_KEYS, grouped_frames, in_chunks, no_jit
from ccdcal.masters.calibrators import group_cards, plan_group
from ccdcal.masters.files import folder_masters, free_master_path, master_row, same_group, serving_master
from ccdcal.masters.groups import (
    MASTER_ORDER,
    GroupPlan,
    MasterOptions,
    MasterReport,
    cannot_group,
    check_options,
    lacks_uncertainty,
    up_to_date,
)
from ccdcal.masters.restore import restorable
from ccdcal.masters.screen import judged_frames, too_few_left


def plan_masters(session: Session, options: MasterOptions | None = None) -> list[MasterReport]:
    """What :func:`~ccdcal.masters.build.build_masters` would do, group by group (see the module docstring).

    Parameters
    ----------
    session : Session
        A scratch session (:meth:`~ccdcal.catalog.db.Catalog.scratch` of ``Master``): the provisional
        rows must not be kept.
    options : MasterOptions, optional
        As for the build (default: the defaults).

    Returns
    -------
    list of MasterReport
        One per group, by kind: ``build`` (with the provisional row's path, id and version), ``current``
        or ``skipped`` with the reason.
    """
    options = options if options is not None else MasterOptions()
    check_options(options)
    no_jit(session)
    folder = options.masters_dir.expanduser().resolve()
    reports: list[MasterReport] = []
    for kind in (k for k in MASTER_ORDER if k in options.kinds):
        reports += _plan_kind(session, kind, options, folder)
    return reports


def _plan_kind(session: Session, kind: str, options: MasterOptions, folder: Path) -> list[MasterReport]:
    """The reports of one kind's groups; provisional rows added for those to build."""
    reports: list[MasterReport] = []
    planned: list[tuple[MasterReport, GroupPlan]] = []
    rows = grouped_frames(session, kind)
    cards = _section_cards(session, kind, options)
    for _, group in groupby(rows, key=lambda r: r["group_number"]):
        frames = list(group)
        keys = {name: frames[0][name] for name in GROUP_KEYS[kind]}
        report = MasterReport(kind, keys, "skipped", len(frames))
        reports.append(report)
        report.reason = cannot_group(kind, keys, frames, options)
        serving = serving_master(session, kind, keys, frames) if report.reason else None
        if serving is not None:  # built before (another --min-frames): the group is served
            report.outcome, report.path, report.master_id = "current", serving.path, serving.id
            report.version, report.reason = serving.version, None
        if report.reason is None and serving is None:
            plan, report.reason = plan_group(session, kind, keys, frames, options, cards)
            if report.reason is None and options.qa.enabled:
                plan, report.reason = _screened(session, plan, options, cards)
            if report.reason is None:
                planned.append((report, plan))
    existing = _by_identity(session, [i for _, plan in planned for i in plan.identities], "current")
    versions, current = _group_masters(session, kind)
    superseded: set[int] = set()  # by the groups before, to be built or restored
    to_build, restored = [], []
    old: dict[str, list[Master]] | None = None
    for report, plan in planned:
        found = [m for i in plan.identities for m in existing.get(i, []) if m.id not in superseded]
        master = max(found, key=lambda m: m.id, default=None)
        if master is not None and Path(master.path).is_file() and not lacks_uncertainty(master, options):
            up_to_date(report, master)
            continue
        if old is None:  # the superseded masters of the plans' identities, in one select when needed
            old = _by_identity(session, [i for _, p in planned for i in p.identities], "superseded")
        candidates = [m for i in plan.identities for m in old.get(i, [])]
        restoring = restorable(session, plan, options, candidates) if candidates else None
        if restoring is not None and restoring.is_bad:
            up_to_date(report, restoring)
            continue
        superseded.update(current.get(_group_key(plan), []))
        if restoring is None:
            to_build.append((report, plan))
            continue
        up_to_date(report, restoring)
        report.outcome = "restore"
        restored.append(restoring.id)
    _add_provisional(session, to_build, folder, versions, sorted(superseded))
    if restored:
        session.execute(
            update(Master).where(Master.id.in_(restored)).values(status="current"),
            execution_options={"synchronize_session": "evaluate"},
        )
    return reports


def _screened(
    session: Session, plan: GroupPlan, options: MasterOptions, cards: dict[int, dict[str, Any]]
) -> tuple[GroupPlan, str | None]:
    """The plan of the frames the frame QA keeps, judged on their stored statistics (a frame not measured
    yet is counted in: it is measured when the group is built), or why the group is left too small."""
    kept, aside, _, _ = judged_frames(session, plan, options)
    if not aside:
        return plan, None
    reason = too_few_left(plan, len(kept), aside, options)
    if reason:
        return plan, reason
    screened, reason = plan_group(session, plan.kind, plan.keys, kept, options, cards)
    screened.set_aside = aside
    return screened, reason


def _section_cards(session: Session, kind: str, options: MasterOptions) -> dict[int, dict[str, Any]]:
    """The cards a group's plan reads (saturation; overscan and trim unless ``--overscan off``:
    :func:`~ccdcal.masters.calibrators.group_cards`) of every usable frame of ``kind``, in one select."""
    return header_values(session, group_cards(options), kind=kind)


def _by_identity(session: Session, identities: list[str], status: str) -> dict[str, list[Master]]:
    """The masters of each identity with ``status``, oldest first."""
    found: dict[str, list[Master]] = {}
    for chunk in in_chunks(identities):
        query = select(Master).where(Master.identity.in_(chunk), Master.status == status)
        for master in session.scalars(query.order_by(Master.id)):
            found.setdefault(master.identity, []).append(master)
    return found


def _add_provisional(
    session: Session,
    planned: list[tuple[MasterReport, GroupPlan]],
    folder: Path,
    versions: dict[tuple[Any, ...], int],
    superseded: list[int],
) -> None:
    """A provisional row for each plan — the next version of its group (``versions``: the highest so far)
    under the name it would be written under — and the groups' current masters (``superseded``) marked
    superseded."""
    if superseded:
        session.execute(
            update(Master).where(Master.id.in_(superseded)).values(status="superseded"),
            execution_options={"synchronize_session": "evaluate"},
        )
    if not planned:
        return
    rows = []
    known = folder_masters(session, folder, planned[0][1].kind)
    first_id = (session.scalar(select(func.max(Master.id))) or 0) + 1  # after every row, as a new one's
    for number, (_, plan) in enumerate(planned, 1):
        version = (versions.get(_group_key(plan)) or 0) + 1
        group = same_group(plan, current_only=False)
        path = free_master_path(
            session, folder, plan.kind, plan.keys, plan.includes_bias, version, group, known
        )
        known[-number] = path.name  # the next plans see this name (of another group)
        row = master_row(plan, version, path=str(path), sha256="0" * 64, parameters={"provisional": True})
        row.id = first_id + number - 1
        rows.append(row)
    session.add_all(rows)
    session.flush()
    for (report, _), row in zip(planned, rows, strict=True):
        report.outcome = "build"
        report.path, report.master_id, report.version = row.path, row.id, row.version


def _group_key(plan: GroupPlan) -> tuple[Any, ...]:
    """A plan's group as :func:`_group_masters` keys it: its keys, and whether it keeps the bias."""
    return (*(plan.keys[name] for name in GROUP_KEYS[plan.kind]), plan.includes_bias)


def _group_masters(
    session: Session, kind: str
) -> tuple[dict[tuple[Any, ...], int], dict[tuple[Any, ...], list[int]]]:
    """Per group of ``kind`` (keys, includes_bias): the highest version of any status, and the ids of the
    current masters (a dark that keeps the bias and one that does not are different groups)."""
    columns = [*(getattr(Master, name) for name in GROUP_KEYS[kind]), Master.includes_bias]
    versions = {
        tuple(row[:-1]): row[-1]
        for row in session.execute(
            select(*columns, func.max(Master.version)).where(Master.kind == kind).group_by(*columns)
        )
    }
    current: dict[tuple[Any, ...], list[int]] = {}
    query = select(*columns, Master.id).where(Master.kind == kind, Master.status == "current")
    for row in session.execute(query):
        current.setdefault(tuple(row[:-1]), []).append(row[-1])
    return versions, current
