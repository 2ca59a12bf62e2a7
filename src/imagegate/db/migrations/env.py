"""Alembic environment for imagegate.

At runtime :meth:`imagegate.db.session.Database.migrate` passes an open, locked
connection in ``config.attributes["connection"]``. Developers running the ``alembic``
command from the repository root get the URL from ``IMAGEGATE_DATABASE_URL`` or
``alembic.ini``.
"""

from __future__ import annotations

import logging
import os

from alembic import context
from sqlalchemy import Connection

from imagegate.db.models import Base
from imagegate.db.session import Database

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = os.environ.get("IMAGEGATE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set IMAGEGATE_DATABASE_URL or sqlalchemy.url in alembic.ini")
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; autogenerate should emit batch operations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``) instead of running it."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    given: Database | None = config.attributes.get("database")
    database = given or Database(_url())
    try:
        with database.exclusive() as conn:
            _run(conn)
    finally:
        if given is None:
            database.dispose()


if config.config_file_name is not None and not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, format="%(levelname)-5.5s [%(name)s] %(message)s")

if context.is_offline_mode():
    run_offline()
else:
    run_online()
