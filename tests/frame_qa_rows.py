"""A catalog with frame QA rows written directly with the models, for the tests of what shows them (a helper
module, not tests): ``status -v``, ``masters --list -v``, the report and the catalog's selects.

The frames (ids fixed; the files do not exist):

- biases ``b1`` … ``b7`` (ids 1–7): ``b5`` set aside by ``outlier_level``; ``b6`` set aside too but since
  marked bad (not listed); ``b7`` set aside in an older content of its file (its decision is not the
  frame's any more; its current content is not measured);
- darks ``d1`` … ``d3`` (ids 8–10): ``d3`` set aside by ``outlier_noise``, then kept by a person;
- flats ``f1`` … ``f3`` (ids 11–13): ``f3`` set aside by ``wrong_type``, then kept again by the rules (a
  threshold changed); ``f3`` is not measured;
- a light ``l1`` (id 14).

The masters: a bias (id 1) of ``b1`` … ``b4`` that set ``b5`` aside, a dark (id 2) of ``d1`` … ``d3``, a
flat (id 3) of ``f1`` … ``f3``.
"""

from __future__ import annotations

import datetime as dt

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, FrameQa, FrameStat, Master, MasterInput, MasterSetAside, Run

T0 = dt.datetime(2026, 12, 1, 20, 0, 0)

B5_REASON = "level 812 ADU, group 500 ± 2 (156σ, limit 10σ)"
D3_REASON = "noise 9.1 ADU about the group's median frame, group 4.2 ± 0.1 (49σ, limit 10σ)"
D3_KEPT = "a satellite trail, checked by eye"
F3_REASON = "level after the bias 3.2 ADU, within its noise 4 ADU of zero: a bias or a dark, not a flat"

NAMES = {
    **{i: f"b{i}" for i in range(1, 8)},
    **{7 + i: f"d{i}" for i in range(1, 4)},
    **{10 + i: f"f{i}" for i in range(1, 4)},
    14: "l1",
}
KINDS = {**dict.fromkeys(range(1, 8), "bias"), **dict.fromkeys(range(8, 11), "dark")}
KINDS |= {**dict.fromkeys(range(11, 14), "flat"), 14: "light"}


def sha(frame_id: int, old: bool = False) -> str:
    """The sha256 of a frame's file now (or of its older content)."""
    return f"{frame_id + (100 if old else 0):064x}"


def path(frame_id: int) -> str:
    return f"/raw/{NAMES[frame_id]}.fits"


def _stats(frame_id: int) -> FrameStat:
    kind = KINDS[frame_id]
    level = {"bias": 500.0 + frame_id / 2, "dark": 510.0 + frame_id / 4, "flat": 20000.0 + frame_id}[kind]
    if frame_id == 5:
        level = 812.0
    return FrameStat(
        sha256=sha(frame_id),
        hdu=0,
        frame_id=frame_id,
        kind=kind,
        samples=4096,
        level=level,
        noise=3.0 if kind != "flat" else 140.0,
        diff_level=0.0,
        diff_noise=9.1 if frame_id == 10 else 4.2,
        gradient=0.125,
        saturated_fraction=0.0 if kind != "flat" else 0.0001,
        tail_fraction=0.0001,
        signal=None if kind != "flat" else level - 500.0,
        measured_at=T0 + dt.timedelta(hours=1),
        run_id=2,
    )


def _decision(qa_id: int, frame_id: int, rule: str, decision: str, by: str, reason: str | None) -> FrameQa:
    return FrameQa(
        id=qa_id,
        frame_id=frame_id,
        sha256=sha(frame_id, old=frame_id == 7),
        rule=rule,
        decision=decision,
        decided_by=by,
        numbers={rule: {"value": 1.0}} if by == "rule" else {},
        reason=reason,
        decided_at=T0 + dt.timedelta(hours=1, minutes=qa_id),
        run_id=3 if by == "person" else 2,
    )


def _master(master_id: int, kind: str, name: str, inputs: list[int]) -> Master:
    return Master(
        id=master_id,
        kind=kind,
        path=f"/m/{name}",
        sha256=f"{master_id:x}" * 64,
        identity=f"identity {master_id}",
        version=1,
        n_inputs=len(inputs),
        method="sigma_clipped_median",
        parameters={},
        stat_median=500.0,
        stat_mean=500.1,
        stat_std=1.5,
        rejected_fraction=0.001,
        status="current",
        created_at=T0 + dt.timedelta(hours=1, minutes=30),
        run_id=2,
    )


MASTER_INPUTS = {1: [1, 2, 3, 4], 2: [8, 9, 10], 3: [11, 12, 13]}
MASTER_NAMES = {1: "master_bias.fits", 2: "master_dark_60s.fits", 3: "master_flat_R.fits"}


def add_frame_qa_rows(catalog: Catalog) -> None:
    """Write the runs, frames, statistics, decisions and masters of the module docstring."""
    with catalog.session() as session:
        for run_id, command in ((1, "ingest"), (2, "masters"), (3, "mark-good")):
            session.add(
                Run(
                    id=run_id,
                    command=command,
                    arguments={},
                    started_at=T0 + dt.timedelta(hours=run_id - 1),
                    status="ok",
                    ccdcal_version="1.0",
                )
            )
        session.flush()
        for frame_id in NAMES:
            session.add(
                Frame(
                    id=frame_id,
                    path=path(frame_id),
                    sha256=sha(frame_id),
                    size=1,
                    mtime=1.0,
                    status="ok",
                    hdu=0,
                    imagetyp=KINDS[frame_id],
                    is_bad=frame_id == 6,
                    bad_reason="hot column" if frame_id == 6 else None,
                    ingested_at=T0,
                    run_id=1,
                )
            )
        session.flush()
        session.add_all(_stats(i) for i in (1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12))
        old = _stats(7)
        old.sha256 = sha(7, old=True)
        session.add(old)
        session.add_all(
            [
                _decision(1, 5, "outlier_level", "set_aside", "rule", B5_REASON),
                _decision(2, 6, "outlier_noise", "set_aside", "rule", "noise 12 ADU"),
                _decision(3, 7, "wrong_type", "set_aside", "rule", "stars"),
                _decision(4, 10, "outlier_noise", "set_aside", "rule", D3_REASON),
                _decision(5, 13, "wrong_type", "set_aside", "rule", F3_REASON),
                _decision(6, 13, "wrong_type", "kept", "rule", None),
                _decision(7, 10, "outlier_noise", "kept", "person", D3_KEPT),
            ]
        )
        for master_id, inputs in MASTER_INPUTS.items():
            session.add(_master(master_id, KINDS[inputs[0]], MASTER_NAMES[master_id], inputs))
        session.flush()
        session.add_all(
            MasterInput(master_id=master_id, frame_id=i, sha256=sha(i))
            for master_id, inputs in MASTER_INPUTS.items()
            for i in inputs
        )
        session.add(
            MasterSetAside(master_id=1, frame_id=5, sha256=sha(5), rule="outlier_level", reason=B5_REASON)
        )
