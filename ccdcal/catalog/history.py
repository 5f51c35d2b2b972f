"""The catalog's past: every change of state recorded (``state_changes``), and the catalog as it stood at a
time read back from them.

**Recording.** Whatever changes a column of :data:`TRACKED` — a master made current or superseded, a frame
or master marked bad or good, a frame gone missing or back, a calibration superseded, a master's validity
range set — writes one ``state_changes`` row per column changed, in the same transaction:
:func:`change` for an ORM row, :func:`record` for rows changed by a Core statement, :func:`created` for a
new master (its becoming current).

**Reading back** (``--as-of``). :func:`rows_as_of` is the select of one table's rows as they were at a time
``T``: the rows that existed then (created, ingested or started at or before ``T``), each tracked column
rolled back through the changes made after ``T`` (the value before the earliest of them; the value now
when there is none). :meth:`ccdcal.catalog.db.Catalog.reading` and :meth:`~ccdcal.catalog.db.Catalog.scratch`
of a catalog opened ``as_of`` a time copy those rows into temporary tables of the same names, so that every
select of the reading commands — the matching of :func:`~ccdcal.catalog.selection.select_master` included,
one select as ever — reads the catalog as it stood, unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Select,
    Table,
    and_,
    case,
    exists,
    false,
    insert,
    literal,
    null,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from ccdcal.catalog.models import (
    Base,
    Calibration,
    CalibrationMaster,
    Claim,
    Frame,
    Master,
    MasterCalibrator,
    MasterInput,
    Run,
    StateChange,
    utcnow,
)

#: The columns whose changes are recorded, by table.
TRACKED: dict[str, tuple[str, ...]] = {
    "masters": ("status", "superseded_reason", "is_bad", "bad_reason", "valid_from", "valid_to"),
    "frames": ("status", "is_bad", "bad_reason", "sha256", "imagetyp", "imagetyp_source"),
    "calibrations": ("status", "superseded_reason"),
}

#: How a date is written in ``old`` and ``new`` (the text SQLite stores, which PostgreSQL casts).
DATE_TEXT = "%Y-%m-%d %H:%M:%S.%f"

Tracked = Master | Frame | Calibration


def as_text(value: Any) -> str | None:
    """A column's value as ``state_changes`` stores it: ``true``/``false``, a date as :data:`DATE_TEXT`,
    other values as their text, NULL as NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.strftime(DATE_TEXT)
    return str(value)


def change(
    session: Session, row: Tracked, *, run_id: int | None, at: dt.datetime | None = None, **values: Any
) -> bool:
    """Set columns of an ORM row of a tracked table, recording each value that changes.

    Parameters
    ----------
    session : Session
        The session of the change (the records join its transaction).
    row : Master, Frame or Calibration
        The row, already in the catalog.
    run_id : int or None
        The run making the change.
    at : datetime, optional
        When (naive UTC; default now).
    **values
        Column → new value; only :data:`TRACKED` columns.

    Returns
    -------
    bool
        Whether anything changed.
    """
    table = cast(Table, type(row).__table__).name
    when = at if at is not None else utcnow()
    changed = False
    for name, value in values.items():
        assert name in TRACKED[table], name
        old = getattr(row, name)
        if old == value:
            continue
        session.add(_row(when, table, row.id, name, old, value, run_id))
        setattr(row, name, value)
        changed = True
    return changed


def record(
    session: Session,
    table: str,
    changes: Iterable[tuple[int, str, Any, Any]],
    *,
    run_id: int | None,
    at: dt.datetime | None = None,
) -> None:
    """Record changes a Core statement made (or is about to make): (row id, column, old, new) each."""
    when = at if at is not None else utcnow()
    rows = [
        {
            "at": when,
            "table_name": table,
            "row_id": row_id,
            "column_name": name,
            "old": as_text(old),
            "new": as_text(new),
            "run_id": run_id,
        }
        for row_id, name, old, new in changes
        if old != new
    ]
    if rows:
        session.execute(insert(StateChange), rows)


def created(session: Session, master: Master, *, run_id: int | None) -> None:
    """Record a new master becoming current (at its ``created_at``)."""
    session.add(_row(master.created_at, "masters", master.id, "status", None, master.status, run_id))


def _row(at: dt.datetime, table: str, row_id: int, name: str, old: Any, new: Any, run_id: int | None) -> Any:
    return StateChange(
        at=at,
        table_name=table,
        row_id=row_id,
        column_name=name,
        old=as_text(old),
        new=as_text(new),
        run_id=run_id,
    )


# -- the catalog as it stood ----------------------------------------------------------------------------

#: When each table's row came to exist (a row after ``T`` did not exist at ``T``).
_BORN: dict[str, Any] = {
    "masters": Master.created_at,
    "frames": Frame.ingested_at,
    "calibrations": Calibration.created_at,
    "runs": Run.started_at,
}

#: The tables copied for a reading as of a time: those whose rows or states change, and those whose rows
#: follow them (a master's inputs and calibrators, a calibration's masters), and the claims (none then).
AS_OF_MODELS: tuple[type[Base], ...] = (
    Frame,
    Master,
    MasterInput,
    MasterCalibrator,
    Calibration,
    CalibrationMaster,
    Run,
    Claim,
)


def _value_then(model: type[Base], name: str, when: dt.datetime) -> ColumnElement[Any]:
    """A tracked column as it was at ``when``: the ``old`` of the earliest change after it, else now."""
    table = cast(Table, model.__table__)
    current = table.c[name]
    after = and_(
        StateChange.table_name == table.name,
        StateChange.row_id == table.c.id,
        StateChange.column_name == name,
        StateChange.at > when,
    )
    earliest = (
        select(StateChange.old)
        .where(after)
        .order_by(StateChange.at, StateChange.id)
        .limit(1)
        .scalar_subquery()
    )
    was: ColumnElement[Any]
    if isinstance(current.type, Boolean):
        was = case((earliest == "true", true()), else_=false())
    elif isinstance(current.type, DateTime):
        was = date_of_text(earliest)
    else:
        was = earliest
    return case((exists().where(after), was), else_=current).label(name)


class date_of_text(FunctionElement[dt.datetime]):
    """A date written as :data:`DATE_TEXT`, as a date column: ``CAST`` on PostgreSQL; as it is on SQLite,
    which stores dates as that text (its ``CAST AS DATETIME`` would make a number of it)."""

    type = DateTime()
    inherit_cache = True


@compiles(date_of_text, "sqlite")
def _date_sqlite(element: date_of_text, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(date_of_text)
def _date_default(element: date_of_text, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS TIMESTAMP WITHOUT TIME ZONE)"


def rows_as_of(model: type[Base], when: dt.datetime) -> Select[Any]:
    """The select of ``model``'s rows as they were at ``when`` (naive UTC), in the table's column order."""
    table = cast(Table, model.__table__)
    name = table.name
    if model is Claim:  # claims live only while their run does: none is read back
        return select(*table.c).where(false())
    if name in TRACKED:
        columns = [_value_then(model, c.name, when) if c.name in TRACKED[name] else c for c in table.c]
        return select(*columns).where(_BORN[name] <= when)
    if model is Run:
        later = Run.finished_at > when
        columns = [
            case((later, literal("running")), else_=Run.status).label("status")
            if c.name == "status"
            else case((later, null()), else_=c).label(c.name)
            if c.name in ("finished_at", "summary")
            else c
            for c in table.c
        ]
        return select(*columns).where(Run.started_at <= when)
    key, born = {
        "master_inputs": (MasterInput.master_id, select(Master.id).where(Master.created_at <= when)),
        "master_calibrators": (
            MasterCalibrator.master_id,
            select(Master.id).where(Master.created_at <= when),
        ),
        "calibration_masters": (
            CalibrationMaster.calibration_id,
            select(Calibration.id).where(Calibration.created_at <= when),
        ),
    }[name]
    return select(*table.c).where(key.in_(born))


def as_of_rows(when: dt.datetime) -> Mapping[type[Base], Select[Any]]:
    """:func:`rows_as_of` of every table of :data:`AS_OF_MODELS`."""
    return {model: rows_as_of(model, when) for model in AS_OF_MODELS}
