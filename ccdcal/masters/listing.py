"""``ccdcal masters --list -v``: each master with its inputs' statistics (``frame_stats``, of the versions
combined) and the frames of its group the frame QA set aside (``master_set_aside``), with the rule and the
reason.

:func:`list_masters_qa` gives the rows of :func:`ccdcal.masters.build.list_masters` with two more keys,
``inputs`` and ``set_aside``; :func:`master_heading`, :func:`statistics_table` and :func:`set_aside_lines`
are what the command prints of each.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.frameqa import input_stats, reason_text, set_aside_of
from ccdcal.catalog.models import FrameStat
from ccdcal.masters.build import list_masters
from ccdcal.runtime.words import counted

#: The statistics of a frame shown, as ``frame_stats`` names them.
STATISTICS = (
    "level",
    "noise",
    "diff_level",
    "diff_noise",
    "gradient",
    "saturated_fraction",
    "tail_fraction",
    "signal",
)

#: The columns of :func:`statistics_table`: heading, statistic and format (``signal`` for flats only).
_COLUMNS = (
    ("level", "level", ".6g"),
    ("noise", "noise", ".4g"),
    ("diff noise", "diff_noise", ".4g"),
    ("gradient", "gradient", ".4g"),
    ("saturated", "saturated_fraction", ".3%"),
    ("signal", "signal", ".6g"),
)


def list_masters_qa(catalog: Catalog, *, include_superseded: bool = False) -> list[dict[str, Any]]:
    """The catalog's masters (:func:`~ccdcal.masters.build.list_masters`) with their frame QA.

    Parameters
    ----------
    catalog : Catalog
        The open catalog.
    include_superseded : bool
        Also list the versions that a newer master replaced.

    Returns
    -------
    list of dict
        The rows of ``list_masters``, each with ``inputs``: the frames combined, by path (``frame_id``,
        ``path``, ``sha256`` as combined, ``changed``: the file holds other bytes now, ``measured``, and
        the statistics of :data:`STATISTICS`, ``None`` where not measured); and ``set_aside``: the frames
        of its group not combined (``frame_id``, ``path``, ``sha256``, ``rule``, ``reason``, ``measured``
        and the statistics).
    """
    rows = list_masters(catalog, include_superseded=include_superseded)
    ids = [row["id"] for row in rows]
    with catalog.reading() as session:
        inputs = input_stats(session, ids)
        aside = set_aside_of(session, ids)
    return [
        row
        | {
            "inputs": [
                {"frame_id": i.frame_id, "path": i.path, "sha256": i.sha256, "changed": i.changed}
                | _statistics(i.stats)
                for i in inputs.get(row["id"], [])
            ],
            "set_aside": [
                {
                    "frame_id": a.frame_id,
                    "path": a.path,
                    "sha256": a.sha256,
                    "rule": a.rule,
                    "reason": a.reason,
                }
                | _statistics(a.stats)
                for a in aside.get(row["id"], [])
            ],
        }
        for row in rows
    ]


def _statistics(stats: FrameStat | None) -> dict[str, Any]:
    """``measured`` and the statistics, JSON-ready (a number that is not finite is ``None``)."""
    values = {name: None if stats is None else getattr(stats, name) for name in STATISTICS}
    return {"measured": stats is not None} | {
        name: value if value is not None and math.isfinite(value) else None for name, value in values.items()
    }


def master_heading(row: dict[str, Any]) -> str:
    """``master:1 bias master_bias.fits (current): 4 inputs, 1 set aside``."""
    status = row["status"] + (", marked bad" if row["is_bad"] else "")
    aside = f", {len(row['set_aside'])} set aside" if row["set_aside"] else ""
    return (
        f"master:{row['id']} {row['kind']} {PurePath(row['path']).name} ({status}): "
        f"{counted(len(row['inputs']), 'input')}{aside}"
    )


def statistics_table(row: dict[str, Any]) -> list[list[str]]:
    """The statistics of a master's inputs and set-aside frames as a table (first row: the headings), or
    no rows when none of them was measured (a master built before frame QA)."""
    frames = [*row["inputs"], *row["set_aside"]]
    if not any(frame["measured"] for frame in frames):
        return []
    columns = [c for c in _COLUMNS if c[1] != "signal" or row["kind"] == "flat"]
    table = [["frame", "file", *(heading for heading, _, _ in columns), ""]]
    for frame in frames:
        if "rule" in frame:
            note = f"set aside ({frame['rule']})"
        else:
            note = "changed since" if frame["changed"] else ""
        cells = [_number(frame[name], spec) for _, name, spec in columns]
        table.append([str(frame["frame_id"]), PurePath(frame["path"]).name, *cells, note])
    return table


def set_aside_lines(row: dict[str, Any]) -> list[str]:
    """The frames a master's group set aside, one a line:
    ``frame:5 b5.fits set aside: REASON (RULE rule)``."""
    return [
        f"frame:{a['frame_id']} {PurePath(a['path']).name} set aside: {reason_text(a['rule'], a['reason'])}"
        for a in row["set_aside"]
    ]


def _number(value: float | None, spec: str) -> str:
    return "NA" if value is None else f"{value:{spec}}"
