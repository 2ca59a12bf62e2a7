"""``imagegate keys``: create, list, revoke and top up API keys, on the server's database
(found as ``cli.database`` says; no running server needed)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.limits import top_up_amount
from imagegate.cli.database import ConfigOption, DataDirOption, admin_database
from imagegate.cli.exits import fail
from imagegate.core.errors import GatewayError

keys_app = typer.Typer(help="Create, list, revoke and top up API keys.", no_args_is_help=True)
# Piped output gets a wide console so ids and model names are never truncated.
console = Console(width=None if sys.stdout.isatty() else 200)


def key_id_of(value: str) -> str:
    return value.split("_")[1] if value.startswith("ig_") and value.count("_") >= 2 else value


@keys_app.command("top-up")
def top_up(
    key_id: Annotated[str, typer.Argument(help="Key id (or the whole ig_<id>_... key).")],
    amount: Annotated[float, typer.Argument(help="USD to add.")],
    note: Annotated[str | None, typer.Option(help="Why (kept in the ledger).")] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Add credits to a key; prints the new balance."""
    db = admin_database(config, data_dir)
    ledger = Ledger(db, hold_ttl_s=0)
    try:
        micro = top_up_amount(KeyStore(db).get(key_id_of(key_id)), key_id_of(key_id), amount)
        balance = ledger.top_up(key_id_of(key_id), micro, note)
    except GatewayError as exc:
        fail(exc.message)
    typer.echo(f"{key_id_of(key_id)}: balance ${balance / 1e6:.6f}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A label for the key.")],
    credits: Annotated[float | None, typer.Option(help="Credit limit in USD.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    ipm: Annotated[int | None, typer.Option(help="Images per minute.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight at once.")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated allowed models.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make an admin key.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a key; the key itself is printed alone on the last line."""
    keys = KeyStore(admin_database(config, data_dir))
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    key, plaintext = keys.create(
        name,
        models=allowed,
        admin=admin,
        credits_usd=credits,
        rpm=rpm,
        ipm=ipm,
        max_concurrent=concurrency,
    )
    typer.echo(
        f"created key {key.id} ({'admin' if key.is_admin else 'user'}) named {key.name!r}", err=True
    )
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """List keys (never their secrets)."""
    table = Table("id", "name", "admin", "models", "balance", "rpm", "ipm", "created", "revoked")
    for key in KeyStore(admin_database(config, data_dir)).list():
        table.add_row(
            key.id,
            key.name,
            "yes" if key.is_admin else "",
            ",".join(key.models) if key.models else "all",
            f"{key.credits_micro / 1e6:.6f}" if key.credits_micro is not None else "-",
            str(key.rpm) if key.rpm else "-",
            str(key.ipm) if key.ipm else "-",
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (ig_<id>_...).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a key; it stops working at once."""
    key_id = key_id_of(key_id)
    if not KeyStore(admin_database(config, data_dir)).revoke(key_id):
        fail(f"no key with id {key_id}")
    typer.echo(f"revoked {key_id}")
