"""Provenance views (calibration_provenance, master_lineage) and the reason a row was superseded.

``calibration_provenance``: one row per calibration (current, superseded or failed) and master used — the
output path and sha256, the light, the role, the master's path, sha256 and status, the match details
(ΔT, Δt, scale, pinned), the run and the ccdcal version. A calibration without any master (every step
skipped) has one row with the master columns NULL.

``master_lineage``: one row per master and raw frame behind it — the frames combined into the master
(``via = 'input'``) and those of its calibrator masters, followed to the end (``via = 'bias'``,
``'dark'``, ``'dark/bias'``), with the sha256 of each frame as used and as catalogued now.

Both are plain SQL that SQLite and PostgreSQL accept alike (``WITH RECURSIVE`` in a view; text casts on
both sides of the recursion, as PostgreSQL requires).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CALIBRATION_PROVENANCE = """
CREATE VIEW calibration_provenance AS
SELECT
    c.id AS calibration_id,
    c.status AS calibration_status,
    c.path AS output_path,
    c.sha256 AS output_sha256,
    c.frame_id AS light_id,
    f.path AS light_path,
    c.raw_sha256 AS light_sha256,
    cm.role AS role,
    m.id AS master_id,
    m.path AS master_path,
    m.sha256 AS master_sha256,
    m.version AS master_version,
    m.status AS master_status,
    m.is_bad AS master_is_bad,
    cm.delta_temp AS delta_temp,
    cm.delta_time AS delta_time,
    cm.scale AS scale,
    cm.pinned AS pinned,
    c.run_id AS run_id,
    r.command AS run_command,
    r.ccdcal_version AS ccdcal_version,
    c.created_at AS created_at,
    c.superseded_reason AS superseded_reason
FROM calibrations c
JOIN frames f ON f.id = c.frame_id
LEFT JOIN calibration_masters cm ON cm.calibration_id = c.id
LEFT JOIN masters m ON m.id = cm.master_id
LEFT JOIN runs r ON r.id = c.run_id
"""

MASTER_LINEAGE = """
CREATE VIEW master_lineage AS
WITH RECURSIVE chain (master_id, source_id, via, depth) AS (
    SELECT id, id, CAST('input' AS TEXT), 0 FROM masters
    UNION ALL
    SELECT chain.master_id, mc.calibrator_id,
           CAST(CASE WHEN chain.depth = 0 THEN mc.role ELSE chain.via || '/' || mc.role END AS TEXT),
           chain.depth + 1
      FROM chain JOIN master_calibrators mc ON mc.master_id = chain.source_id
     WHERE chain.depth < 8
)
SELECT
    m.id AS master_id,
    m.kind AS master_kind,
    m.path AS master_path,
    m.sha256 AS master_sha256,
    m.status AS master_status,
    m.is_bad AS master_is_bad,
    m.n_inputs AS master_n_inputs,
    chain.via AS via,
    chain.depth AS depth,
    s.id AS source_master_id,
    s.kind AS source_kind,
    s.path AS source_path,
    s.sha256 AS source_sha256,
    s.is_bad AS source_is_bad,
    fr.id AS frame_id,
    fr.path AS frame_path,
    fr.imagetyp AS frame_imagetyp,
    mi.sha256 AS frame_sha256,
    fr.sha256 AS frame_sha256_now,
    fr.status AS frame_status,
    fr.is_bad AS frame_is_bad
FROM chain
JOIN masters m ON m.id = chain.master_id
JOIN masters s ON s.id = chain.source_id
JOIN master_inputs mi ON mi.master_id = chain.source_id
JOIN frames fr ON fr.id = mi.frame_id
"""


def upgrade() -> None:
    op.add_column("masters", sa.Column("superseded_reason", sa.Text(), nullable=True))
    op.add_column("calibrations", sa.Column("superseded_reason", sa.Text(), nullable=True))
    op.execute(CALIBRATION_PROVENANCE)
    op.execute(MASTER_LINEAGE)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS master_lineage")
    op.execute("DROP VIEW IF EXISTS calibration_provenance")
    op.drop_column("calibrations", "superseded_reason")
    op.drop_column("masters", "superseded_reason")
