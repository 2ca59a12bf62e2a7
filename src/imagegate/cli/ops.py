"""Operator commands (``imagegate migrate``, ``imagegate secret``) and how the admin
commands find the server's database.

Admin commands (``keys ...``, ``usage``) work on the database the *server* uses, so they
must find it: ``--data-dir``, else ``IMAGEGATE_DATA_DIR``, else ``server.data_dir`` in the
config file, else ``./.imagegate``; ``IMAGEGATE_DATABASE_URL`` overrides the data dir's
SQLite. They never create a database: a missing one almost always means the command is
looking in the wrong place, and keys created there would be invisible to the server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from imagegate.config import ConfigError, Settings, load_settings
from imagegate.db.session import Database

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The server's data dir (default: IMAGEGATE_DATA_DIR, server.data_dir in --config, "
        "./.imagegate).",
    ),
]
ConfigOption = Annotated[str | None, typer.Option("--config", help="YAML config file.")]


def settings_for(config: str | None, data_dir: Path | None = None) -> Settings:
    """Settings as the server would load them, with ``--data-dir`` on top."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"imagegate: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    if data_dir is not None:
        settings.data_dir = data_dir.resolve()
    return settings


def _data_dir_source(settings: Settings, data_dir: Path | None) -> str:
    if data_dir is not None:
        return "--data-dir"
    env = os.environ.get("IMAGEGATE_DATA_DIR")
    if settings.data_dir != Path(env or "./.imagegate").resolve():
        return f"server.data_dir in {settings.config_file}"
    if env:
        return "IMAGEGATE_DATA_DIR"
    return f"the default ./.imagegate, relative to the working directory {Path.cwd()}"


def _refuse(where: str, source: str) -> typer.Exit:
    typer.echo(
        f"imagegate: no imagegate database at {where} (looked there because of {source}).\n"
        "  Point this command at the server's data: --data-dir DIR, IMAGEGATE_DATA_DIR=DIR, "
        "--config FILE (server.data_dir), or IMAGEGATE_DATABASE_URL for PostgreSQL.\n"
        "  To start a new database there on purpose, run `imagegate migrate` first "
        "(with the same options).",
        err=True,
    )
    return typer.Exit(2)


def admin_database(config: str | None, data_dir: Path | None = None) -> Database:
    """The server's existing, current database; exits with a message otherwise."""
    from imagegate.app import open_database

    settings = settings_for(config, data_dir)
    if settings.database_url:
        where, source = _safe_url(settings.database_url), "IMAGEGATE_DATABASE_URL"
        sqlite_file = _sqlite_file(settings.database_url)
        if sqlite_file is not None and not sqlite_file.is_file():
            raise _refuse(where, source)
    else:
        path = settings.data_dir / "imagegate.db"
        where, source = str(path), _data_dir_source(settings, data_dir)
        if not path.is_file():
            raise _refuse(where, source)
    try:
        db = open_database(settings)
        current = db.current_revision()
    except ValueError as exc:  # e.g. the PostgreSQL driver is missing
        typer.echo(f"imagegate: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # the database cannot be reached
        typer.echo(f"imagegate: cannot open the database at {where}: {exc}", err=True)
        raise typer.Exit(1) from None
    if current is None:
        db.dispose()
        raise _refuse(where, source)
    if current != db.head_revision():
        db.dispose()
        typer.echo(
            f"imagegate: the database at {where} is at schema revision {current}; this "
            "imagegate needs a newer one: run `imagegate migrate` (with the same options).",
            err=True,
        )
        raise typer.Exit(2)
    return db


def _sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for other databases and in-memory)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "IMAGEGATE_DATABASE_URL"


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
        typer.echo(f"imagegate: {exc}", err=True)
        raise typer.Exit(2) from None
    where = _safe_url(settings.database_url) if settings.database_url else db.url.database
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
