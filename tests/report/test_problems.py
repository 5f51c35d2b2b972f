"""Problems from run summaries: ingest rejections accumulate, the latest planning run's word counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ccdcal.report.data import RunEntry
from ccdcal.report.problems import from_runs


def run(number: int, command: str, summary: dict[str, Any] | None, *, in_scope: bool = True) -> RunEntry:
    return RunEntry(
        id=number,
        command=command,
        status="partial",
        started_at=dt.datetime(2026, 3, 14, number),
        finished_at=None,
        arguments={},
        versions={},
        host=None,
        user=None,
        summary=summary,
        in_scope=in_scope,
    )


def rows(runs: list[RunEntry]) -> list[tuple[str, str, str, int | None]]:
    return [(p.category, p.subject, p.reason, p.run_id) for p in from_runs(runs)]


def test_ingest_rejections_accumulate_and_planning_runs_replace_each_other() -> None:
    skipped = {
        "kind": "dark",
        "keys": {"xbinning": 2, "ybinning": 2, "gain": 120.0, "temp_key": -10.0, "exptime": 300.0},
        "outcome": "skipped",
        "reason": "2 dark frames in group b2x2 g120 C-10 300s: fewer than --min-frames 3",
    }
    runs = [
        run(
            1,
            "ingest",
            {"rejected": [{"path": "/r/a.fits", "reason": "truncated"}], "unclassified": ["/r/x"]},
        ),
        run(2, "ingest", {"rejected": [{"path": "/s/b.fits", "reason": "empty file"}]}),
        run(3, "masters", {"masters": [skipped, {**skipped, "outcome": "built", "reason": None}]}),
        run(
            4,
            "process",
            {
                "masters": {"built": 1},
                "problems": [{"path": "/l/1.fits", "outcome": "cannot", "reason": "no flat in filter Ha"}],
            },
        ),
        run(5, "process", {"problems": [{"path": "/l/2.fits", "outcome": "failed", "reason": "disk full"}]}),
        run(6, "ingest", {"rejected": [{"path": "/r/a.fits", "reason": "not FITS"}]}, in_scope=False),
        run(7, "db upgrade", None),
    ]
    assert rows(runs) == [
        ("rejected", "/r/a.fits", "truncated", 1),
        ("rejected", "/s/b.fits", "empty file", 2),
        ("unclassified", "/r/x", "no type in the header or the folder name (ingest --imagetyp sets one)", 1),
        ("master group skipped", "dark group b2x2 g120 C-10 300s", skipped["reason"], 3),
        ("failed", "/l/2.fits", "disk full", 5),
    ]
    assert rows(runs[:4])[-1] == ("not calibrated", "/l/1.fits", "no flat in filter Ha", 4)
    assert rows([run(1, "process", {"problems": "garbled"}), run(2, "ingest", {"rejected": [3]})]) == []
