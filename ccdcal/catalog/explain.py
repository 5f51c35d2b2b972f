"""Query plans of the catalog's grouping and matching selects, to check that each uses an index.

``EXPLAIN QUERY PLAN`` on SQLite, ``EXPLAIN`` on PostgreSQL. :func:`table_scans` names the catalog
tables a plan reads in full (a ``SCAN`` on SQLite, a ``Seq Scan`` on PostgreSQL): with every lookup
column indexed it is empty, whatever the catalog's size. On PostgreSQL the plans are taken with
``enable_seqscan`` off, so that a small table (which the planner would rather scan) shows whether an index
*can* serve the query.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, cast

from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from ccdcal.catalog.models import Base
from ccdcal.catalog.queries import MatchRules, frame_groups_query, grouped_frames_query, usable
from ccdcal.catalog.ranking import candidates_query, target_columns
from ccdcal.catalog.selection import best_masters_query, select_master_query
from ccdcal.catalog.states import frame_counts_query, gone_inputs_query, light_states, unclassified_query

#: The catalog's tables (views and common table expressions are not checked).
TABLES = frozenset(Base.metadata.tables)


def planned_statements() -> dict[str, Select[Any]]:
    """The grouping select of each kind and the matching selects of each step, by name; those of a plan
    of every light (their target columns, the candidate masters), and those of ``ccdcal status`` (the
    groups of lights, each light's state)."""

    statements: dict[str, Select[Any]] = {
        f"group {kind}": grouped_frames_query(kind) for kind in ("bias", "dark", "flat")
    }
    statements["targets of every light"] = select(*target_columns(False)).where(usable("light"))
    statements["candidate darks"] = candidates_query("dark", False, exclude_with_bias=True)
    statements["count the groups of lights"] = frame_groups_query("light")
    for grouped in (False, True):
        states = light_states(grouped)
        name = "count the lights by state" + (" (latest calibrations grouped)" if grouped else "")
        statements[name] = select(states.c.state, func.count()).group_by(states.c.state)
    statements["count the frames by status and kind"] = cast(Select[Any], frame_counts_query())
    statements["unclassified frames"] = unclassified_query()
    statements["masters with an input gone"] = gone_inputs_query()
    target = {"instrument": "cam", "xbinning": 1, "ybinning": 1, "naxis1": 10, "naxis2": 10, "gain": 1.0}
    target |= {"offset": 10.0, "readout_mode": "fast", "ccd_temp": -10.0, "exptime": 60.0, "filter": "R"}
    target["date_obs"] = dt.datetime(2025, 1, 1)
    for rules in (MatchRules(), MatchRules(dark_scale=True)):
        scaled = " (dark scaling)" if rules.dark_scale else ""
        for kind in ("bias", "dark", "flat"):
            if kind != "dark" and rules.dark_scale:
                continue
            statements[f"match {kind} of every light{scaled}"] = best_masters_query(
                kind, usable("light"), rules
            )
            statements[f"match {kind} of one target{scaled}"] = select_master_query(kind, target, rules)
    return statements


class Explain(Executable, ClauseElement):
    """``EXPLAIN`` of a select, executed with its parameters bound as usual."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(Explain, "sqlite")
def _explain_sqlite(element: Explain, compiler: Any, **kw: Any) -> str:
    return f"EXPLAIN QUERY PLAN {compiler.process(element.statement, **kw)}"


@compiles(Explain)
def _explain_default(element: Explain, compiler: Any, **kw: Any) -> str:
    return f"EXPLAIN {compiler.process(element.statement, **kw)}"


def query_plan(session: Session, statement: Select[Any]) -> list[str]:
    """The plan of ``statement`` as text lines."""
    if session.get_bind().dialect.name != "sqlite":
        session.execute(text("SET LOCAL enable_seqscan = off"))
    return [str(row[-1]) for row in session.execute(Explain(statement))]


#: A table read in full (SQLite's ``SCAN t USING COVERING INDEX i`` reads the index alone: not a table scan).
_SCAN = re.compile(r"^\s*(?:->\s*)?(?:SCAN|Seq Scan on) (\w+)\b(?! USING COVERING INDEX)")


def table_scans(plan: list[str]) -> list[str]:
    """The catalog tables a plan reads in full, in plan order."""
    found = (_SCAN.match(line) for line in plan)
    return [match.group(1) for match in found if match and match.group(1) in TABLES]


def check_plans(session: Session) -> dict[str, list[str]]:
    """Per planned statement, the tables it scans in full (all lists empty: every lookup uses an
    index)."""
    return {name: table_scans(query_plan(session, query)) for name, query in planned_statements().items()}
