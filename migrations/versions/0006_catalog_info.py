"""Facts about the catalog itself: ``catalog_info``, holding the catalog's id.

One row per fact (``key``, ``value``). ``catalog_id`` is a UUID made here, once, when a catalog is created
or upgraded to this revision; it stays with the catalog when the file is moved or copied. ccdcal writes it
to ``.ccdcal-catalog`` in every masters and output folder the catalog writes into, so that another
catalog never writes into (nor cleans up) a folder it does not own (docs/design.md, Files).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "catalog_info",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_catalog_info")),
    )
    op.bulk_insert(table, [{"key": "catalog_id", "value": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_table("catalog_info")
