"""What went wrong, with the reasons: frames rejected, lights not calibrated or failed, groups skipped.

For ``--run`` and ``--since`` the problems are those the runs in scope recorded in their summaries
(``ingest``: files rejected, not read and unclassified; ``masters``: groups skipped; ``process``: lights not
calibrated or failed; see :func:`from_runs`). For the catalog now they are read from
the catalog as it is — frames rejected, missing, unclassified or marked bad, masters marked bad — and from
what ``ccdcal process`` would do now (a dry run with the options of the last process run, as
``ccdcal status`` computes its pending work): master groups that cannot be built, lights that cannot be
calibrated or whose last attempt failed, with the reasons; lights waiting to be calibrated are listed
apart, as pending.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, Master
from ccdcal.lights.pipeline import plan_now
from ccdcal.lights.records import number_of
from ccdcal.masters.groups import describe_keys
from ccdcal.report.data import Problem, RunEntry, json_object

#: Categories in report order.
CATEGORIES = (
    "rejected",
    "not read",
    "missing",
    "unclassified",
    "marked bad",
    "master group skipped",
    "not calibrated",
    "failed",
)

_OUTCOMES = {"cannot": "not calibrated", "failed": "failed"}
_UNCLASSIFIED = "no type in the header or the folder name (ingest --imagetyp sets one)"


def from_runs(runs: list[RunEntry]) -> list[Problem]:
    """The problems the runs in scope recorded.

    Files rejected or unclassified by ingest runs accumulate (each ingest reports only its folders; the
    latest word on a file is kept). Master groups skipped and lights not calibrated or failed come from the
    latest run in scope that reports them, as such a run plans every group and every light: what an earlier
    run could not do and a later one did is not a problem any more.
    """
    files: dict[str, Problem] = {}
    latest: dict[str, list[Problem]] = {}
    for run in sorted((r for r in runs if r.in_scope), key=lambda r: r.id):
        summary = json_object(run.summary)
        for category, key in (("rejected", "rejected"), ("not read", "not_read")):
            for item in _dicts(summary.get(key)):
                files[str(item.get("path"))] = Problem(
                    category, str(item.get("path")), str(item.get("reason")), run.id
                )
        unclassified = summary.get("unclassified")
        for path in unclassified if isinstance(unclassified, list) else []:
            files[str(path)] = Problem("unclassified", str(path), _UNCLASSIFIED, run.id)
        if isinstance(summary.get("masters"), list):
            latest["masters"] = [
                Problem(
                    "master group skipped",
                    f"{item.get('kind')} group {_keys_text(item.get('keys'))}",
                    str(item.get("reason")),
                    run.id,
                )
                for item in _dicts(summary["masters"])
                if item.get("outcome") == "skipped"
            ]
        if isinstance(summary.get("problems"), list):
            latest["lights"] = [
                Problem(
                    _OUTCOMES.get(str(item.get("outcome")), str(item.get("outcome"))),
                    str(item.get("path")),
                    str(item.get("reason")),
                    run.id,
                )
                for item in _dicts(summary["problems"])
            ]
    return ordered([*files.values(), *(p for group in latest.values() for p in group)])


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


#: The group keys that are texts; the others are numbers.
_TEXT_KEYS = ("instrument", "readout_mode", "filter")


def _keys_text(keys: Any) -> str:
    """A group's keys as :func:`describe_keys` writes them, from any JSON (a value of another type than
    the key's counts as absent)."""
    if not isinstance(keys, dict):
        return ""
    clean: dict[str, Any] = {}
    for key, value in keys.items():
        if key in _TEXT_KEYS:
            clean[key] = value if isinstance(value, str) else None
        else:
            clean[str(key)] = number_of(keys, key)
    return describe_keys(clean)


def now(catalog: Catalog) -> tuple[list[Problem], list[Problem], int | None]:
    """The problems of the catalog as it is, and the lights pending calibration.

    Returns
    -------
    problems : list of Problem
        Frames rejected, missing, unclassified or marked bad; masters marked bad; master groups that
        cannot be built; lights that cannot be calibrated or whose last attempt failed.
    pending : list of Problem
        Lights ``ccdcal process`` would calibrate now, with the reason (category ``to calibrate``).
    plan_run : int or None
        The process run whose options the plan used (``None``: the defaults).
    """

    problems = _catalog_problems(catalog)
    plan_run, plan = plan_now(catalog)
    for master in plan.masters_of("skipped"):
        subject = f"{master.kind} group {_keys_text(master.keys)}"
        problems.append(Problem("master group skipped", subject, master.reason or "", plan_run))
    pending = []
    for light in plan.lights:
        if light.outcome in _OUTCOMES:
            problems.append(Problem(_OUTCOMES[light.outcome], light.path, light.reason or "", plan_run))
        elif light.outcome == "calibrate":
            pending.append(Problem("to calibrate", light.path, light.reason or "", plan_run))
    return ordered(problems), pending, plan_run


def _catalog_problems(catalog: Catalog) -> list[Problem]:
    with catalog.reading() as session:
        frames = session.execute(
            select(
                Frame.path,
                Frame.status,
                Frame.error,
                Frame.imagetyp,
                Frame.is_bad,
                Frame.bad_reason,
                Frame.run_id,
            )
            .where((Frame.status != "ok") | Frame.imagetyp.is_(None) | Frame.is_bad.is_(True))
            .order_by(Frame.path)
        )
        problems = []
        for path, status, error, imagetyp, is_bad, bad_reason, run_id in frames:
            if status == "rejected":
                problems.append(Problem("rejected", path, error or "rejected", run_id))
            elif status == "missing":
                problems.append(Problem("missing", path, "the file is gone; ingest its folder again", run_id))
            elif imagetyp is None:
                problems.append(Problem("unclassified", path, _UNCLASSIFIED, run_id))
            if is_bad:
                problems.append(Problem("marked bad", path, bad_reason or "marked bad"))
        masters = session.execute(
            select(Master.path, Master.bad_reason).where(Master.is_bad.is_(True)).order_by(Master.path)
        )
        problems += [Problem("marked bad", path, reason or "marked bad") for path, reason in masters]
    return problems


def ordered(problems: Any) -> list[Problem]:
    """Problems by category (:data:`CATEGORIES`), then subject."""
    rank = {category: i for i, category in enumerate(CATEGORIES)}
    return sorted(problems, key=lambda p: (rank.get(p.category, len(rank)), p.subject))
