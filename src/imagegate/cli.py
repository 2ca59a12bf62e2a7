"""The ``imagegate`` command: run the server and administer keys and models locally."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imagegate.accounts.keys import KeyStore
from imagegate.config import ConfigError, Settings, load_settings

app = typer.Typer(
    help="imagegate: an OpenAI-compatible Images API gateway.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
# Piped output gets a wide console so ids and model names are never truncated.
console = Console(width=None if sys.stdout.isatty() else 200)
ConfigOption = Annotated[str | None, typer.Option("--config", help="YAML config file.")]


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"imagegate: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Start the gateway."""
    import uvicorn

    from imagegate.app import check_settings, create_app, prepare_database
    from imagegate.logs import configure_logging

    settings = _settings(config)
    configure_logging(log_level.upper())
    try:
        check_settings(settings)
        db, _ = prepare_database(settings)
        db.dispose()
        application = create_app(settings)
    except (ConfigError, ValueError) as exc:
        typer.echo(f"imagegate: cannot start: {exc}", err=True)
        raise typer.Exit(2) from None
    print(f"imagegate: serving on http://{host}:{port}/v1 (docs at /docs)", flush=True)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A label for the key.")],
    credits: Annotated[float | None, typer.Option(help="Credit limit in USD.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated allowed models.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make an admin key.")] = False,
    config: ConfigOption = None,
) -> None:
    """Create a key; the key itself is printed alone on the last line."""
    keys = _keystore(config)
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    key, plaintext = keys.create(name, models=allowed, admin=admin, credits_usd=credits, rpm=rpm)
    typer.echo(
        f"created key {key.id} ({'admin' if key.is_admin else 'user'}) named {key.name!r}", err=True
    )
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List keys (never their secrets)."""
    table = Table("id", "name", "admin", "models", "credits", "rpm", "created", "revoked")
    for key in _keystore(config).list():
        table.add_row(
            key.id,
            key.name,
            "yes" if key.is_admin else "",
            ",".join(key.models) if key.models else "all",
            f"{key.credits_micro / 1e6:.2f}" if key.credits_micro is not None else "-",
            str(key.rpm) if key.rpm else "-",
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (ig_<id>_...).")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key; it stops working at once."""
    key_id = key_id.split("_")[1] if key_id.startswith("ig_") else key_id
    if not _keystore(config).revoke(key_id):
        typer.echo(f"imagegate: no key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command()
def models(config: ConfigOption = None) -> None:
    """List the models this gateway's catalog serves."""
    from imagegate.catalog.catalog import Catalog, merge_providers
    from imagegate.providers.base import ProviderConfig

    settings = _settings(config)
    configs: dict[str, ProviderConfig] = {p.id: p for p in merge_providers(settings.providers)}
    table = Table("model", "aliases", "operations", "providers", "available")
    for spec in Catalog.load(settings.models, set(configs)):
        available = any(_has_credentials(configs[e.provider]) for e in spec.endpoints)
        table.add_row(
            spec.id,
            ", ".join(spec.aliases),
            ", ".join(sorted(spec.operations)),
            ", ".join(e.provider for e in spec.endpoints),
            "yes" if available else "no",
        )
    console.print(table)


def _has_credentials(config: object) -> bool:
    env = getattr(config, "api_key_env", None)
    return bool(getattr(config, "api_key", None) or not env or os.environ.get(env))


def _keystore(config: str | None) -> KeyStore:
    from imagegate.db.session import Database, database_url_for

    settings = _settings(config)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(database_url_for(settings.data_dir, settings.database_url))
    db.migrate()
    return KeyStore(db)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
