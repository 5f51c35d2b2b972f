"""Alembic environment for the ccdcal catalog (SQLite and PostgreSQL).

ccdcal itself runs the migrations with an open connection in ``config.attributes['connection']``
(see ``ccdcal.catalog.db``). Run from the command line, the database comes from ``-x db=...``, else the
``CCDCAL_DB`` environment variable, else ``./ccdcal.db``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from ccdcal.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the connection ccdcal passed in, or on a database named on the command line."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from ccdcal.catalog.db import make_engine

    db = context.get_x_argument(as_dictionary=True).get("db") or os.environ.get("CCDCAL_DB")
    engine = make_engine(db or "ccdcal.db")
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("ccdcal migrations run online only: pass -x db=URL")
run_migrations_online()
