"""How the admin commands find the server's database (the one place that opens it).

Admin commands (``keys ...``, ``usage``) work on the database the *server* uses, so they
must find it: ``--data-dir``, else ``IMAGEGATE_DATA_DIR``, else ``server.data_dir`` in the
config file, else ``./.imagegate``; ``IMAGEGATE_DATABASE_URL`` overrides the data dir's
SQLite. They never create a database: a missing one almost always means the command is
looking in the wrong place, and keys created there would be invisible to the server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from imagegate.cli.exits import USAGE, fail
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
        fail(f"configuration error: {exc}", USAGE)
    if data_dir is not None:
        settings.data_dir = data_dir.resolve()
    return settings


def database_unavailable(exc: BaseException, doing: str) -> NoReturn:
    """Exit 1 with one line, no traceback: the database cannot be reached (or refused us)."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    fail(f"{doing}: the database is unavailable: {first}")


def _data_dir_source(settings: Settings, data_dir: Path | None) -> str:
    if data_dir is not None:
        return "--data-dir"
    env = os.environ.get("IMAGEGATE_DATA_DIR")
    if settings.data_dir != Path(env or "./.imagegate").resolve():
        return f"server.data_dir in {settings.config_file}"
    if env:
        return "IMAGEGATE_DATA_DIR"
    return f"the default ./.imagegate, relative to the working directory {Path.cwd()}"


def _refuse(where: str, source: str) -> NoReturn:
    fail(
        f"no imagegate database at {where} (looked there because of {source}).\n"
        "  Point this command at the server's data: --data-dir DIR, IMAGEGATE_DATA_DIR=DIR, "
        "--config FILE (server.data_dir), or IMAGEGATE_DATABASE_URL for PostgreSQL.\n"
        "  To start a new database there on purpose, run `imagegate migrate` first "
        "(with the same options).",
        USAGE,
    )


def admin_database(config: str | None, data_dir: Path | None = None) -> Database:
    """The server's existing, current database; exits with a message otherwise."""
    from imagegate.app import open_database

    settings = settings_for(config, data_dir)
    if settings.database_url:
        where, source = safe_url(settings.database_url), "IMAGEGATE_DATABASE_URL"
        sqlite_file = _sqlite_file(settings.database_url)
        if sqlite_file is not None and not sqlite_file.is_file():
            _refuse(where, source)
    else:
        path = settings.data_dir / "imagegate.db"
        where, source = str(path), _data_dir_source(settings, data_dir)
        if not path.is_file():
            _refuse(where, source)
    try:
        db = open_database(settings)
        current = db.current_revision()
    except ValueError as exc:  # e.g. the PostgreSQL driver is missing
        fail(str(exc), USAGE)
    except Exception as exc:  # the database cannot be reached
        fail(f"cannot open the database at {where}: {exc}")
    if current is None:
        db.dispose()
        _refuse(where, source)
    if current != db.head_revision():
        db.dispose()
        fail(
            f"the database at {where} is at schema revision {current}; this "
            "imagegate needs a newer one: run `imagegate migrate` (with the same options).",
            USAGE,
        )
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


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "IMAGEGATE_DATABASE_URL"
