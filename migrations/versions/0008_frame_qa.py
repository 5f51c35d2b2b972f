"""Frame QA: ``frame_stats``, ``frame_qa`` and ``master_set_aside``.

``frame_stats``: the statistics of one version (sha256, HDU) of one calibration frame, measured while it is
read for a master's combine. ``frame_qa``: the decisions of the frame-QA rules and of people (``mark-good``)
about a frame's version, never updated (the newest row is the decision). ``master_set_aside``: the frames
of a master's group that were set aside, with the rule and the reason.

An existing catalog gets the three tables empty: its frames are measured at the next ``ccdcal masters`` (or
``process``), once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "frame_stats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("hdu", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("level", sa.Float(), nullable=True),
        sa.Column("noise", sa.Float(), nullable=True),
        sa.Column("diff_level", sa.Float(), nullable=True),
        sa.Column("diff_noise", sa.Float(), nullable=True),
        sa.Column("gradient", sa.Float(), nullable=True),
        sa.Column("saturated_fraction", sa.Float(), nullable=True),
        sa.Column("tail_fraction", sa.Float(), nullable=True),
        sa.Column("signal", sa.Float(), nullable=True),
        sa.Column("signal_noise", sa.Float(), nullable=True),
        sa.Column("measured_at", sa.DateTime(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_frame_stats_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_frame_stats_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frame_stats")),
    )
    op.create_index("ix_frame_stats_file", "frame_stats", ["sha256", "hdu"], unique=True)
    op.create_index(op.f("ix_frame_stats_frame_id"), "frame_stats", ["frame_id"])
    op.create_index(op.f("ix_frame_stats_run_id"), "frame_stats", ["run_id"])

    op.create_table(
        "frame_qa",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=8), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_frame_qa_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_frame_qa_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frame_qa")),
    )
    op.create_index("ix_frame_qa_frame", "frame_qa", ["frame_id", "sha256", "id"])
    op.create_index(op.f("ix_frame_qa_sha256"), "frame_qa", ["sha256"])
    op.create_index(op.f("ix_frame_qa_rule"), "frame_qa", ["rule"])
    op.create_index(op.f("ix_frame_qa_decision"), "frame_qa", ["decision"])
    op.create_index(op.f("ix_frame_qa_decided_at"), "frame_qa", ["decided_at"])
    op.create_index(op.f("ix_frame_qa_run_id"), "frame_qa", ["run_id"])

    op.create_table(
        "master_set_aside",
        sa.Column("master_id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["master_id"],
            ["masters.id"],
            name=op.f("fk_master_set_aside_master_id_masters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_master_set_aside_frame_id_frames")
        ),
        sa.PrimaryKeyConstraint("master_id", "frame_id", name=op.f("pk_master_set_aside")),
    )
    op.create_index(op.f("ix_master_set_aside_frame_id"), "master_set_aside", ["frame_id"])
    op.create_index(op.f("ix_master_set_aside_rule"), "master_set_aside", ["rule"])


def downgrade() -> None:
    op.drop_table("master_set_aside")
    op.drop_table("frame_qa")
    op.drop_table("frame_stats")
