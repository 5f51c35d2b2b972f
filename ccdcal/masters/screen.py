"""Frame QA in a master's build: each group's frames measured once, judged by the rules, the bad ones set
aside before the combine.

:func:`screen_group` is called with the plan of all the group's usable frames:

1. the statistics of each frame's content (``frame_stats``, by sha256 and HDU) are read; the frames never
   measured are measured now, in the pass that reads them for the combine — a bias or dark group is
   combined whole with the statistics gathered on the way (:func:`ccdcal.masters.combine.combine_group`
   with ``measure``), a flat group's level pass measures them (:func:`ccdcal.masters.combine.measure_flats`)
   — and stored;
2. the rules judge every frame against its group (:func:`ccdcal.masters.frameqa.judge`); a frame a person
   kept (``ccdcal mark-good`` of a frame set aside: the newest ``frame_qa`` row of its content is ``kept``
   by ``person``) is kept whatever the rules say;
3. every change of decision is recorded in ``frame_qa`` (set aside by a rule, with the rule, the numbers
   and the reason; kept again by the rules when a threshold changed);
4. the caller plans the master of the kept frames; the combine that measured them is the master itself
   when no frame was set aside, so a group is read once.

``--no-frame-qa`` (``QaOptions.enabled`` false) skips all of it: every usable frame is combined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.frameqa import current_decisions, stats_of
from ccdcal.catalog.models import FrameQa, FrameStat, Master, utcnow
from ccdcal.kernels.qa import describe_master
from ccdcal.masters.frameqa import FrameFacts, Verdict, failures_text, judge, numbers_of
from ccdcal.masters.groups import BuiltMaster, GroupPlan, MasterOptions, SetAside, describe_keys
from ccdcal.runtime.cluster import ClusterOnDemand

if TYPE_CHECKING:  # for the types only: the statistics' module loads with the combine
    from ccdcal.kernels.framestats import FrameMeasure

__all__ = [
    "Screening",
    "calibrator_ids",
    "combine_master",
    "judged_frames",
    "lacks_differences",
    "screen_group",
    "too_few_left",
]

#: The ``frame_stats`` columns of a :class:`~ccdcal.kernels.framestats.FrameMeasure`.
_MEASURED = (
    "samples",
    "level",
    "noise",
    "diff_level",
    "diff_noise",
    "gradient",
    "saturated_fraction",
    "tail_fraction",
)


@dataclass
class Screening:
    """What the frame QA decided about a group: the frames to combine, those set aside, and what measuring
    them produced that the build may reuse."""

    kept: list[dict[str, Any]]
    set_aside: list[SetAside] = field(default_factory=list)
    #: The combine of the whole group that measured it (a bias or dark group measured now).
    measured: BuiltMaster | None = None
    #: A flat group's levels by frame id, with the calibrators they were measured after.
    flat_levels: dict[int, float] = field(default_factory=dict)
    flat_calibrators: tuple[int | None, int | None] = (None, None)


def _key(frame: dict[str, Any]) -> tuple[str, int]:
    return str(frame["sha256"]), int(frame["hdu"] or 0)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _facts(frame: dict[str, Any], stat: FrameStat | None, saturation: float | None) -> FrameFacts:
    name = Path(frame["path"]).name
    temp = _number(frame.get("ccd_temp"))
    level = math.inf if saturation is None else float(saturation)
    if stat is None:
        return FrameFacts(int(frame["id"]), name, ccd_temp=temp, saturation=level)
    return FrameFacts(
        int(frame["id"]),
        name,
        level=_number(stat.level),
        noise=_number(stat.noise),
        diff_noise=_number(stat.diff_noise),
        gradient=_number(stat.gradient),
        saturated_fraction=_number(stat.saturated_fraction),
        tail_fraction=_number(stat.tail_fraction),
        signal=_number(stat.signal),
        signal_noise=_number(stat.signal_noise),
        ccd_temp=temp,
        saturation=level,
    )


def judged_frames(
    session: Session, plan: GroupPlan, options: MasterOptions
) -> tuple[list[dict[str, Any]], list[SetAside], dict[int, Verdict], dict[int, FrameQa]]:
    """The rules' verdict on a group's frames from their stored statistics (none measured here): the
    frames kept, those set aside, every verdict and the newest decisions. A frame not measured yet is
    kept (it is judged once measured); so is a frame a person kept."""
    ids = [int(f["id"]) for f in plan.frames]
    stats = stats_of(session, ids)
    decisions = current_decisions(session, ids)
    levels = plan.saturation_levels or (None,) * len(plan.frames)
    facts = [_facts(f, stats.get(int(f["id"])), level) for f, level in zip(plan.frames, levels, strict=True)]
    verdicts = judge(plan.kind, facts, options.qa)
    kept: list[dict[str, Any]] = []
    aside: list[SetAside] = []
    for frame in plan.frames:
        verdict = verdicts[int(frame["id"])]
        latest = decisions.get(int(frame["id"]))
        overridden = latest is not None and latest.decided_by == "person" and latest.decision == "kept"
        if verdict.set_aside and not overridden and int(frame["id"]) in stats:
            aside.append(
                SetAside(
                    int(frame["id"]),
                    str(frame["path"]),
                    frame["sha256"],
                    verdict.failures[0].rule,
                    failures_text(verdict.failures),
                )
            )
        else:
            kept.append(frame)
    return kept, aside, verdicts, decisions


def too_few_left(plan: GroupPlan, kept: int, aside: Sequence[SetAside], options: MasterOptions) -> str | None:
    """Why a group cannot make a master once the frame QA set frames aside: fewer than ``--min-frames``
    are left (``None``: enough are)."""
    if kept >= options.min_frames:
        return None
    lines = "; ".join(a.line for a in aside)
    return (
        f"{kept} of the {len(plan.frames)} {plan.kind} frames of group {describe_keys(plan.keys)} are left "
        f"after the frame QA, fewer than --min-frames {options.min_frames}: {lines}; add good frames, or "
        "`ccdcal mark-good` a frame the rules set aside wrongly"
    )


def screen_group(
    catalog: Catalog,
    plan: GroupPlan,
    options: MasterOptions,
    cluster: ClusterOnDemand | None,
    run_id: int,
) -> Screening:
    """Measure the group's frames not measured yet, judge them all and record the decisions that changed
    (see the module docstring).

    Raises
    ------
    FitsFormatError, ValueError
        A frame or calibrator that cannot be read while measuring (the group is then skipped).
    """
    if not options.qa.enabled:
        return Screening(list(plan.frames))
    with catalog.reading() as session:
        stats = stats_of(session, [int(f["id"]) for f in plan.frames])
    screening = Screening([])
    missing = [f for f in plan.frames if int(f["id"]) not in stats and f["sha256"]]
    if missing:
        measures, signals = _measure(plan, options, cluster, screening)
        _store(catalog, plan, measures, signals, run_id)
    with catalog.session() as session:
        kept, aside, verdicts, decisions = judged_frames(session, plan, options)
        _record(session, plan, verdicts, decisions, {a.frame_id for a in aside}, run_id)
    screening.kept, screening.set_aside = kept, aside
    if aside:
        screening.measured = None  # it combined the frames set aside
    return screening


def combine_master(
    plan: GroupPlan,
    options: MasterOptions,
    cluster: ClusterOnDemand | None = None,
    *,
    levels: Sequence[float] | None = None,
    measure: bool = False,
) -> BuiltMaster:
    """Combine a group's frames (:func:`ccdcal.masters.combine.combine_group`: here or on Dask workers)
    into the master before its QA: pixels, uncertainty, statistics, level. ``ccdcal reproduce`` makes a
    recorded master again through it."""
    # Imported here for start-up time: the combine engine (numba, astropy) loads when a combine runs.
    from ccdcal.masters.combine import combine_group

    combined = combine_group(plan, options, cluster, levels=levels, measure=measure)
    stats, level = describe_master(combined.image)
    built = BuiltMaster(combined.image, stats, combined.rejected_fraction)
    built.flat_levels, built.uncertainty = combined.flat_levels, combined.uncertainty
    built.overscan_levels, built.saturated = combined.overscan_levels, combined.saturated
    built.level, built.measures = level, combined.measures
    return built


def _measure(
    plan: GroupPlan, options: MasterOptions, cluster: ClusterOnDemand | None, screening: Screening
) -> tuple[list[FrameMeasure], list[tuple[float | None, float | None]]]:
    """Every frame's statistics, from the pass that reads them: a flat group's level pass, or the
    combine of a bias or dark group (kept as the master if no frame is set aside)."""
    # Imported here for start-up time: the combine engine (numba, astropy) loads when a combine runs.
    from ccdcal.masters.combine import measure_flats

    if plan.kind == "flat":
        flats = measure_flats(plan, options, cluster)
        for frame, found in zip(plan.frames, flats, strict=True):
            if math.isfinite(found.level):
                screening.flat_levels[int(frame["id"])] = found.level
        screening.flat_calibrators = calibrator_ids(plan)
        return [f.stats for f in flats], [(_finite(f.signal), _finite(f.noise)) for f in flats]
    built = combine_master(plan, options, cluster, measure=True)
    screening.measured = built
    return built.measures, [(None, None)] * len(plan.frames)


def calibrator_ids(plan: GroupPlan) -> tuple[int | None, int | None]:
    """The ids of the plan's master bias and dark (``None``: not subtracted)."""
    return _id(plan.bias), _id(plan.dark)


def _id(master: Master | None) -> int | None:
    return None if master is None else master.id


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _store(
    catalog: Catalog,
    plan: GroupPlan,
    measures: Sequence[FrameMeasure],
    signals: Sequence[tuple[float | None, float | None]],
    run_id: int,
) -> None:
    """Store the statistics of the frames' contents not stored yet; a row another run stored meanwhile
    is kept (``ON CONFLICT DO NOTHING``: the same content measures the same)."""
    rows: dict[tuple[str, int], dict[str, object]] = {}
    for frame, measure, (signal, noise) in zip(plan.frames, measures, signals, strict=True):
        if not frame["sha256"]:
            continue
        values: dict[str, object] = {name: _finite(getattr(measure, name)) for name in _MEASURED}
        values["samples"] = measure.samples
        sha256, hdu = _key(frame)
        rows.setdefault(
            (sha256, hdu),
            {
                **values,
                "sha256": sha256,
                "hdu": hdu,
                "frame_id": int(frame["id"]),
                "kind": plan.kind,
                "signal": signal,
                "signal_noise": noise,
                "measured_at": utcnow(),
                "run_id": run_id,
            },
        )
    if not rows:
        return
    with catalog.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            # Imported here for start-up time: a dialect's module is loaded by its catalog's engine.
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            session.execute(postgresql_insert(FrameStat).on_conflict_do_nothing(), list(rows.values()))
        else:
            # Imported here for start-up time (as above).
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            session.execute(sqlite_insert(FrameStat).on_conflict_do_nothing(), list(rows.values()))


def lacks_differences(catalog: Catalog, frames: Sequence[dict[str, Any]]) -> bool:
    """Whether a frame's ``frame_stats`` row lacks its difference statistics (a flat measured in its level
    pass, whose group was not combined since): its group's combine then measures them."""
    with catalog.reading() as session:
        stored = stats_of(session, [int(f["id"]) for f in frames])
    return any(row.diff_noise is None for row in stored.values())


def update_differences(
    catalog: Catalog, frames: Sequence[dict[str, Any]], measures: Sequence[FrameMeasure]
) -> None:
    """Fill the difference statistics of the frames' ``frame_stats`` rows that lack them (a flat group's
    level pass measured the frames alone; its combine measures their differences)."""
    with catalog.session() as session:
        stored = stats_of(session, [int(f["id"]) for f in frames])
        for frame, measure in zip(frames, measures, strict=True):
            row = stored.get(int(frame["id"]))
            if row is not None and row.diff_noise is None:
                row.diff_level = _finite(measure.diff_level)
                row.diff_noise = _finite(measure.diff_noise)
                row.tail_fraction = _finite(measure.tail_fraction)


def _record(
    session: Session,
    plan: GroupPlan,
    verdicts: dict[int, Verdict],
    decisions: dict[int, FrameQa],
    aside: set[int],
    run_id: int,
) -> None:
    """Add a ``frame_qa`` row for each frame whose decision by the rules changed."""
    for frame in plan.frames:
        frame_id = int(frame["id"])
        latest = decisions.get(frame_id)
        if latest is not None and latest.decided_by == "person":
            continue  # a person's decision stands until the content changes
        verdict = verdicts[frame_id]
        if frame_id in aside:
            first = verdict.failures[0]
            if latest is not None and latest.decision == "set_aside" and latest.rule == first.rule:
                continue
            session.add(
                FrameQa(
                    frame_id=frame_id,
                    sha256=frame["sha256"],
                    rule=first.rule,
                    decision="set_aside",
                    decided_by="rule",
                    numbers=numbers_of(verdict.failures),
                    reason=failures_text(verdict.failures),
                    run_id=run_id,
                )
            )
        elif latest is not None and latest.decision == "set_aside":
            session.add(
                FrameQa(
                    frame_id=frame_id,
                    sha256=frame["sha256"],
                    rule=latest.rule,
                    decision="kept",
                    decided_by="rule",
                    numbers={},
                    reason="the rules keep it now (a threshold changed)",
                    run_id=run_id,
                )
            )
