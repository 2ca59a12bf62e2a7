"""Operator commands: ``imagegate migrate`` and ``imagegate secret``."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from imagegate.cli.database import (
    ConfigOption,
    DataDirOption,
    database_unavailable,
    safe_url,
    settings_for,
)
from imagegate.cli.exits import USAGE, fail


def migrate(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Create or upgrade the database schema, then exit.

    Idempotent, and safe to run from several hosts at once (PostgreSQL: an advisory lock;
    SQLite: the write lock). Use it before `serve --no-migrate`, or with a database user
    that may change the schema while the server's may not.
    """
    from imagegate.app import open_database

    settings = settings_for(config, data_dir)
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        db = open_database(settings)
        before = db.current_revision()
        db.migrate()
        after = db.current_revision()
    except ValueError as exc:
        fail(str(exc), USAGE)
    except SQLAlchemyError as exc:
        database_unavailable(exc, "cannot migrate")
    where = safe_url(settings.database_url) if settings.database_url else db.url.database
    db.dispose()
    if before == after:
        typer.echo(f"{where}: schema already at revision {after}")
    else:
        typer.echo(f"{where}: schema migrated from {before or 'empty'} to revision {after}")


def secret(
    admin_key: Annotated[
        bool, typer.Option("--admin-key", help="An admin key (ig_<id>_<secret>) instead.")
    ] = False,
) -> None:
    """Print a new random URL-signing secret, or with --admin-key an admin key.

    The signing secret is 64 hex digits (for IMAGEGATE_SIGNING_SECRET); the admin key has
    the ig_<id>_<secret> form (for IMAGEGATE_ADMIN_KEY).
    """
    import secrets as random

    from imagegate.accounts.keys import ID_LENGTH, KEY_PREFIX

    if admin_key:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        key_id = "".join(random.choice(alphabet) for _ in range(ID_LENGTH))
        typer.echo(f"{KEY_PREFIX}_{key_id}_{random.token_urlsafe(32)}")
    else:
        typer.echo(random.token_hex(32))


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
    app.command("secret")(secret)
