"""Claims: which ``ccdcal process`` run is calibrating which light.

One row per light being calibrated, written in the transaction that plans it and deleted when the run
ends: ``frame_id`` is the primary key (one run per light) and ``output`` is unique (one writer per output
file), so two runs started together never calibrate the same light nor write the same file. A claim is
honoured while its run is alive; ``expires_at`` is renewed while the run works, so that the claims of a run
on another machine that died stop counting after a while (see :mod:`ccdcal.lights.claims`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_claims_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_claims_run_id_runs")),
        sa.PrimaryKeyConstraint("frame_id", name=op.f("pk_claims")),
        sa.UniqueConstraint("output", name=op.f("uq_claims_output")),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claims_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_claims_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claims_expires_at"))
        batch_op.drop_index(batch_op.f("ix_claims_run_id"))
    op.drop_table("claims")
