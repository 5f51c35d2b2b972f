"""``masters --list -v`` as a library (``ccdcal.masters.listing``): the masters with their inputs'
statistics and the frames set aside, JSON-ready, and the text of each; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math

from sqlalchemy import update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.models import Frame, FrameStat
from ccdcal.masters.build import list_masters
from ccdcal.masters.listing import (
    STATISTICS,
    list_masters_qa,
    master_heading,
    set_aside_lines,
    statistics_table,
)
from tests.frame_qa_rows import B5_REASON, T0, add_frame_qa_rows


def test_the_rows_of_list_masters_with_inputs_and_frames_set_aside(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    with catalog.session() as session:  # b2 rewritten since; a statistic that could not be measured
        session.execute(update(Frame).where(Frame.id == 2).values(sha256="e" * 64))
        session.execute(update(FrameStat).where(FrameStat.frame_id == 3).values(gradient=None))
    rows = list_masters_qa(catalog)
    assert [
        {k: v for k, v in row.items() if k not in ("inputs", "set_aside")} for row in rows
    ] == list_masters(catalog)
    bias = rows[0]
    assert [(i["frame_id"], i["changed"], i["gradient"]) for i in bias["inputs"]] == [
        (1, False, 0.125),
        (2, True, 0.125),
        (3, False, None),
        (4, False, 0.125),
    ]
    assert set(STATISTICS) | {"measured"} <= set(bias["set_aside"][0])
    json.dumps(rows, default=str, allow_nan=False)
    assert master_heading(bias) == "master:1 bias master_bias.fits (current): 4 inputs, 1 set aside"
    assert set_aside_lines(bias) == [f"frame:5 b5.fits set aside: {B5_REASON} (outlier_level rule)"]
    table = statistics_table(bias)
    assert table[0] == ["frame", "file", "level", "noise", "diff noise", "gradient", "saturated", ""]
    assert table[2] == ["2", "b2.fits", "501", "3", "4.2", "0.125", "0.000%", "changed since"]
    assert table[3][5] == "NA"
    assert table[-1][-1] == "set aside (outlier_level)"
    flat = rows[2]
    assert statistics_table(flat)[0][-2:] == ["signal", ""]


def test_as_of_a_time_before_any_master(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    catalog.as_of = T0
    assert list_masters_qa(catalog) == []


def test_a_statistic_that_is_not_finite_is_none() -> None:
    from ccdcal.masters.listing import _statistics

    stats = FrameStat(level=math.nan, noise=math.inf, signal=2.0)
    found = _statistics(stats)
    assert (found["measured"], found["level"], found["noise"], found["signal"]) == (True, None, None, 2.0)
    assert _statistics(None) == {"measured": False} | dict.fromkeys(STATISTICS)
