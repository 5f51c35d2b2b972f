"""The catalog as it was: ``state_changes``, and the validity range of a master.

``state_changes``: one row per change of one column of one catalog row that says what may be used — a
master becoming current or superseded, a frame or master marked bad or good, a frame gone missing or back,
a calibration superseded, a master's validity range set by hand — with the time (``at``, naive UTC), the
values before and after as text (``old``, ``new``) and the run that made it. ``ccdcal ... --as-of`` reads
the catalog as it stood at a time from these rows (``ccdcal.catalog.history``).

``masters.valid_from``, ``masters.valid_to``: the dates of the lights a master may serve (naive UTC,
inclusive, NULL open), set by ``ccdcal certify`` and ``ccdcal decertify``.

An existing catalog is given what is known of its past: every master becoming current at its
``created_at``; a superseded master superseded at the ``created_at`` of the next master of its group (its
own when there is none); a superseded calibration at the ``created_at`` of the light's next calibration
that succeeded; every ``mark-bad`` and ``mark-good`` run replayed at its start; a frame missing since the
start of the ingest run that last wrote it. What no row records (a mark set by hand in SQL) stays as it is
now at every earlier time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-14 09:00:00.000000
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The keys of a master's group (its versions share them), as ccdcal.masters groups them.
_GROUP = (
    "kind",
    "includes_bias",
    "instrument",
    "xbinning",
    "ybinning",
    "gain",
    "offset",
    "readout_mode",
    "naxis1",
    "naxis2",
    "temp_key",
    "exptime",
    "filter",
)


def upgrade() -> None:
    changes = op.create_table(
        "state_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("table", sa.String(length=32), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("column", sa.String(length=32), nullable=False),
        sa.Column("old", sa.Text(), nullable=True),
        sa.Column("new", sa.Text(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_state_changes_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_state_changes")),
    )
    op.create_index("ix_state_changes_row", "state_changes", ["table", "row_id", "column", "at"])
    op.create_index(op.f("ix_state_changes_at"), "state_changes", ["at"])
    op.create_index(op.f("ix_state_changes_run_id"), "state_changes", ["run_id"])
    op.add_column("masters", sa.Column("valid_from", sa.DateTime(), nullable=True))
    op.add_column("masters", sa.Column("valid_to", sa.DateTime(), nullable=True))
    rows = _known_past(op.get_bind())
    if rows:
        op.bulk_insert(changes, rows)


def _known_past(conn: sa.Connection) -> list[dict[str, Any]]:
    """The state changes an existing catalog's rows and runs tell, oldest first."""
    rows: list[dict[str, Any]] = []
    rows += _masters(conn)
    rows += _calibrations(conn)
    rows += _marks(conn)
    rows += _missing(conn)
    rows.sort(key=lambda row: (row["at"], row["table"], row["row_id"]))
    return rows


def _change(
    at: Any, table: str, row_id: int, column: str, old: Any, new: Any, run_id: Any = None
) -> dict[str, Any]:
    return {
        "at": at,
        "table": table,
        "row_id": row_id,
        "column": column,
        "old": old,
        "new": new,
        "run_id": run_id,
    }


def _masters(conn: sa.Connection) -> list[dict[str, Any]]:
    columns = ", ".join(f'"{key}"' for key in _GROUP)
    masters = conn.execute(
        sa.text(
            f"SELECT id, created_at, status, superseded_reason, run_id, {columns} FROM masters ORDER BY id"
        ).columns(created_at=sa.DateTime)
    ).all()
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for master in masters:
        groups.setdefault(tuple(master[5:]), []).append(master)
    rows: list[dict[str, Any]] = []
    for members in groups.values():
        for index, master in enumerate(members):
            rows.append(
                _change(master.created_at, "masters", master.id, "status", None, "current", master.run_id)
            )
            if master.status != "superseded":
                continue
            later = members[index + 1 :]
            at = later[0].created_at if later else master.created_at
            rows.append(_change(at, "masters", master.id, "status", "current", "superseded"))
            if master.superseded_reason is not None:
                rows.append(
                    _change(at, "masters", master.id, "superseded_reason", None, master.superseded_reason)
                )
    return rows


def _calibrations(conn: sa.Connection) -> list[dict[str, Any]]:
    calibrations = conn.execute(
        sa.text(
            "SELECT id, frame_id, status, created_at, superseded_reason FROM calibrations "
            "ORDER BY frame_id, id"
        ).columns(created_at=sa.DateTime)
    ).all()
    rows: list[dict[str, Any]] = []
    for index, calibration in enumerate(calibrations):
        if calibration.status != "superseded":
            continue
        later = (
            c
            for c in calibrations[index + 1 :]
            if c.frame_id == calibration.frame_id and c.status in ("current", "superseded")
        )
        successor = next(later, None)
        at = successor.created_at if successor is not None else calibration.created_at
        rows.append(_change(at, "calibrations", calibration.id, "status", "current", "superseded"))
        if calibration.superseded_reason is not None:
            rows.append(
                _change(
                    at,
                    "calibrations",
                    calibration.id,
                    "superseded_reason",
                    None,
                    calibration.superseded_reason,
                )
            )
    return rows


def _marks(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every ``mark-bad`` and ``mark-good`` run replayed in order, from its recorded target and reason."""
    runs = conn.execute(
        sa.text(
            "SELECT id, command, arguments, started_at FROM runs "
            "WHERE command IN ('mark-bad', 'mark-good') AND status = 'ok' ORDER BY id"
        ).columns(started_at=sa.DateTime)
    ).all()
    marks: dict[tuple[str, int], tuple[bool, str | None]] = {}
    rows: list[dict[str, Any]] = []
    for run in runs:
        arguments = run.arguments if isinstance(run.arguments, dict) else json.loads(run.arguments or "{}")
        kind, _, number = str(arguments.get("target", "")).partition(":")
        table = {"frame": "frames", "master": "masters"}.get(kind)
        if table is None or not number.isdigit():
            continue
        bad = run.command == "mark-bad"
        reason = arguments.get("reason") if bad else None
        was_bad, was_reason = marks.get((table, int(number)), (False, None))
        if was_bad != bad:
            rows.append(
                _change(run.started_at, table, int(number), "is_bad", _flag(was_bad), _flag(bad), run.id)
            )
        if was_reason != reason:
            rows.append(_change(run.started_at, table, int(number), "bad_reason", was_reason, reason, run.id))
        marks[(table, int(number))] = (bad, reason)
    return rows


def _missing(conn: sa.Connection) -> list[dict[str, Any]]:
    """Frames missing since the run that last wrote them (the ingest that found them gone)."""
    found = conn.execute(
        sa.text(
            "SELECT frames.id, runs.id AS run_id, runs.started_at FROM frames "
            "JOIN runs ON runs.id = frames.run_id WHERE frames.status = 'missing'"
        ).columns(started_at=sa.DateTime)
    ).all()
    return [_change(row.started_at, "frames", row.id, "status", "ok", "missing", row.run_id) for row in found]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def downgrade() -> None:
    op.drop_column("masters", "valid_to")  # not in a batch: SQLite drops it in place, its views kept
    op.drop_column("masters", "valid_from")
    op.drop_index(op.f("ix_state_changes_run_id"), table_name="state_changes")
    op.drop_index(op.f("ix_state_changes_at"), table_name="state_changes")
    op.drop_index("ix_state_changes_row", table_name="state_changes")
    op.drop_table("state_changes")
