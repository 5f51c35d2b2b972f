"""Initial catalog schema: frames, header cards, masters, calibrations, their provenance, runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 16:34:00.808742
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("ccdcal_version", sa.String(length=32), nullable=False),
        sa.Column("astropy_version", sa.String(length=32), nullable=True),
        sa.Column("ccdproc_version", sa.String(length=32), nullable=True),
        sa.Column("numpy_version", sa.String(length=32), nullable=True),
        sa.Column("python_version", sa.String(length=32), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_command"), ["command"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_started_at"), ["started_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_status"), ["status"], unique=False)

    op.create_table(
        "frames",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("hdu", sa.Integer(), nullable=True),
        sa.Column("imagetyp", sa.String(length=16), nullable=True),
        sa.Column("imagetyp_header", sa.String(length=80), nullable=True),
        sa.Column("imagetyp_source", sa.String(length=8), nullable=True),
        sa.Column("exptime", sa.Float(), nullable=True),
        sa.Column("ccd_temp", sa.Float(), nullable=True),
        sa.Column("set_temp", sa.Float(), nullable=True),
        sa.Column("temp_key", sa.Float(), nullable=True),
        sa.Column("xbinning", sa.Integer(), nullable=True),
        sa.Column("ybinning", sa.Integer(), nullable=True),
        sa.Column("gain", sa.Float(), nullable=True),
        sa.Column("offset", sa.Float(), nullable=True),
        sa.Column("filter", sa.String(length=80), nullable=True),
        sa.Column("instrument", sa.String(length=80), nullable=True),
        sa.Column("readout_mode", sa.String(length=80), nullable=True),
        sa.Column("naxis1", sa.Integer(), nullable=True),
        sa.Column("naxis2", sa.Integer(), nullable=True),
        sa.Column("bitpix", sa.Integer(), nullable=True),
        sa.Column("date_obs", sa.DateTime(), nullable=True),
        sa.Column("is_bad", sa.Boolean(), nullable=False),
        sa.Column("bad_reason", sa.Text(), nullable=True),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_frames_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frames")),
        sa.UniqueConstraint("path", name=op.f("uq_frames_path")),
    )
    with op.batch_alter_table("frames", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_frames_date_obs"), ["date_obs"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_exptime"), ["exptime"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_filter"), ["filter"], unique=False)
        batch_op.create_index(
            "ix_frames_group",
            [
                "imagetyp",
                "instrument",
                "xbinning",
                "ybinning",
                "gain",
                "offset",
                "readout_mode",
                "naxis1",
                "naxis2",
                "temp_key",
            ],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_frames_imagetyp"), ["imagetyp"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_instrument"), ["instrument"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_is_bad"), ["is_bad"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_frames_temp_key"), ["temp_key"], unique=False)

    op.create_table(
        "masters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("identity", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("xbinning", sa.Integer(), nullable=True),
        sa.Column("ybinning", sa.Integer(), nullable=True),
        sa.Column("gain", sa.Float(), nullable=True),
        sa.Column("offset", sa.Float(), nullable=True),
        sa.Column("exptime", sa.Float(), nullable=True),
        sa.Column("temp_key", sa.Float(), nullable=True),
        sa.Column("filter", sa.String(length=80), nullable=True),
        sa.Column("instrument", sa.String(length=80), nullable=True),
        sa.Column("readout_mode", sa.String(length=80), nullable=True),
        sa.Column("naxis1", sa.Integer(), nullable=True),
        sa.Column("naxis2", sa.Integer(), nullable=True),
        sa.Column("includes_bias", sa.Boolean(), nullable=False),
        sa.Column("ccd_temp_mean", sa.Float(), nullable=True),
        sa.Column("date_obs_mean", sa.DateTime(), nullable=True),
        sa.Column("n_inputs", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("stat_median", sa.Float(), nullable=True),
        sa.Column("stat_mean", sa.Float(), nullable=True),
        sa.Column("stat_std", sa.Float(), nullable=True),
        sa.Column("rejected_fraction", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("is_bad", sa.Boolean(), nullable=False),
        sa.Column("bad_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_masters_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_masters")),
        sa.UniqueConstraint("path", name=op.f("uq_masters_path")),
    )
    with op.batch_alter_table("masters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_masters_ccd_temp_mean"), ["ccd_temp_mean"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_date_obs_mean"), ["date_obs_mean"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_exptime"), ["exptime"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_filter"), ["filter"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_identity"), ["identity"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_is_bad"), ["is_bad"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_kind"), ["kind"], unique=False)
        batch_op.create_index(
            "ix_masters_match",
            [
                "kind",
                "instrument",
                "xbinning",
                "ybinning",
                "gain",
                "offset",
                "readout_mode",
                "naxis1",
                "naxis2",
                "status",
            ],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_masters_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_masters_temp_key"), ["temp_key"], unique=False)

    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("raw_sha256", sa.String(length=64), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("dark_scale_factor", sa.Float(), nullable=True),
        sa.Column("flat_norm", sa.Float(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["frame_id"], ["frames.id"], name=op.f("fk_calibrations_frame_id_frames")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_calibrations_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibrations")),
    )
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calibrations_frame_id"), ["frame_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_calibrations_path"), ["path"], unique=False)
        batch_op.create_index(batch_op.f("ix_calibrations_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_calibrations_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_calibrations_status"), ["status"], unique=False)

    op.create_table(
        "header_cards",
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("hdu", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("keyword", sa.String(length=72), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("value_num", sa.Float(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["frame_id"],
            ["frames.id"],
            name=op.f("fk_header_cards_frame_id_frames"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("frame_id", "hdu", "position", name=op.f("pk_header_cards")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("header_cards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_header_cards_keyword"), ["keyword"], unique=False)

    op.create_table(
        "master_calibrators",
        sa.Column("master_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("calibrator_id", sa.Integer(), nullable=False),
        sa.Column("scale", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["calibrator_id"],
            ["masters.id"],
            name=op.f("fk_master_calibrators_calibrator_id_masters"),
        ),
        sa.ForeignKeyConstraint(
            ["master_id"],
            ["masters.id"],
            name=op.f("fk_master_calibrators_master_id_masters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("master_id", "role", name=op.f("pk_master_calibrators")),
    )
    with op.batch_alter_table("master_calibrators", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_master_calibrators_calibrator_id"), ["calibrator_id"], unique=False
        )

    op.create_table(
        "master_inputs",
        sa.Column("master_id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["frame_id"], ["frames.id"], name=op.f("fk_master_inputs_frame_id_frames")),
        sa.ForeignKeyConstraint(
            ["master_id"],
            ["masters.id"],
            name=op.f("fk_master_inputs_master_id_masters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("master_id", "frame_id", name=op.f("pk_master_inputs")),
    )
    with op.batch_alter_table("master_inputs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_master_inputs_frame_id"), ["frame_id"], unique=False)

    op.create_table(
        "calibration_masters",
        sa.Column("calibration_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("master_id", sa.Integer(), nullable=False),
        sa.Column("delta_temp", sa.Float(), nullable=True),
        sa.Column("delta_time", sa.Float(), nullable=True),
        sa.Column("scale", sa.Float(), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["calibration_id"],
            ["calibrations.id"],
            name=op.f("fk_calibration_masters_calibration_id_calibrations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["master_id"], ["masters.id"], name=op.f("fk_calibration_masters_master_id_masters")
        ),
        sa.PrimaryKeyConstraint("calibration_id", "role", name=op.f("pk_calibration_masters")),
    )
    with op.batch_alter_table("calibration_masters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calibration_masters_master_id"), ["master_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("calibration_masters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calibration_masters_master_id"))

    op.drop_table("calibration_masters")
    with op.batch_alter_table("master_inputs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_master_inputs_frame_id"))

    op.drop_table("master_inputs")
    with op.batch_alter_table("master_calibrators", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_master_calibrators_calibrator_id"))

    op.drop_table("master_calibrators")
    with op.batch_alter_table("header_cards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_header_cards_keyword"))

    op.drop_table("header_cards")
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calibrations_status"))
        batch_op.drop_index(batch_op.f("ix_calibrations_sha256"))
        batch_op.drop_index(batch_op.f("ix_calibrations_run_id"))
        batch_op.drop_index(batch_op.f("ix_calibrations_path"))
        batch_op.drop_index(batch_op.f("ix_calibrations_frame_id"))

    op.drop_table("calibrations")
    with op.batch_alter_table("masters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_masters_temp_key"))
        batch_op.drop_index(batch_op.f("ix_masters_status"))
        batch_op.drop_index(batch_op.f("ix_masters_sha256"))
        batch_op.drop_index(batch_op.f("ix_masters_run_id"))
        batch_op.drop_index("ix_masters_match")
        batch_op.drop_index(batch_op.f("ix_masters_kind"))
        batch_op.drop_index(batch_op.f("ix_masters_is_bad"))
        batch_op.drop_index(batch_op.f("ix_masters_identity"))
        batch_op.drop_index(batch_op.f("ix_masters_filter"))
        batch_op.drop_index(batch_op.f("ix_masters_exptime"))
        batch_op.drop_index(batch_op.f("ix_masters_date_obs_mean"))
        batch_op.drop_index(batch_op.f("ix_masters_ccd_temp_mean"))

    op.drop_table("masters")
    with op.batch_alter_table("frames", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_frames_temp_key"))
        batch_op.drop_index(batch_op.f("ix_frames_status"))
        batch_op.drop_index(batch_op.f("ix_frames_sha256"))
        batch_op.drop_index(batch_op.f("ix_frames_run_id"))
        batch_op.drop_index(batch_op.f("ix_frames_is_bad"))
        batch_op.drop_index(batch_op.f("ix_frames_instrument"))
        batch_op.drop_index(batch_op.f("ix_frames_imagetyp"))
        batch_op.drop_index("ix_frames_group")
        batch_op.drop_index(batch_op.f("ix_frames_filter"))
        batch_op.drop_index(batch_op.f("ix_frames_exptime"))
        batch_op.drop_index(batch_op.f("ix_frames_date_obs"))

    op.drop_table("frames")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_status"))
        batch_op.drop_index(batch_op.f("ix_runs_started_at"))
        batch_op.drop_index(batch_op.f("ix_runs_command"))

    op.drop_table("runs")
