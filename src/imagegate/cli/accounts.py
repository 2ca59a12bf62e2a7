"""``imagegate usage`` and ``imagegate ledger verify``: operator commands on the database.

Like ``imagegate keys`` they work on the database the gateway uses
(``IMAGEGATE_DATABASE_URL`` or the data dir's SQLite, found as ``cli.database`` says), so they
need no running server; they never create a database.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from imagegate.accounts.audit import BooksUnbalanced, verify_books
from imagegate.accounts.usage import GROUP_BY, UsageBook
from imagegate.cli.database import ConfigOption, DataDirOption, admin_database
from imagegate.cli.exits import USAGE, fail
from imagegate.cli.keys import key_id_of
from imagegate.core.errors import GatewayError

console = Console(width=None if sys.stdout.isatty() else 200)


def usage(
    start: Annotated[str | None, typer.Option(help="Start: YYYY-MM-DD or ISO time (UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="End (exclusive); default now.")] = None,
    group_by: Annotated[
        str, typer.Option("--group-by", help="model, provider, key or day.")
    ] = "model",
    key: Annotated[str | None, typer.Option("--key", help="Only this key id.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Requests, images and cost over a period (default: the last 30 days)."""
    from imagegate.api.routes.usage import DEFAULT_WINDOW, parse_time

    if group_by not in GROUP_BY:
        fail(f"--group-by must be one of {', '.join(GROUP_BY)}", USAGE)
    try:
        stop = parse_time(end, "end") or datetime.now(UTC) + timedelta(seconds=1)
        begin = parse_time(start, "start") or stop - DEFAULT_WINDOW
    except GatewayError as exc:
        fail(exc.message, USAGE)
    book = UsageBook(admin_database(config, data_dir))
    summary = book.summary(begin, stop, group_by, key_id_of(key) if key else None)
    if as_json:
        typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    console.print(_table(summary, group_by))


def _table(summary: dict[str, Any], group_by: str) -> Table:
    table = Table(group_by, "requests", "succeeded", "images", "cost (USD)")
    for row in summary["data"]:
        table.add_row(
            str(row["group"]),
            str(row["requests"]),
            str(row["succeeded"]),
            str(row["images"]),
            f"{row['cost_usd']:.6f}",
        )
    totals = summary["totals"]
    table.add_section()
    table.add_row(
        "total",
        str(totals["requests"]),
        str(totals["succeeded"]),
        str(totals["images"]),
        f"{totals['cost_usd']:.6f}",
    )
    return table


def verify(config: ConfigOption = None) -> None:
    """Check the books: ledger entries sum to every key's balance, every hold and every
    upstream call is on record. Exits 1 with the first discrepancy."""
    try:
        summary = verify_books(admin_database(config))
    except BooksUnbalanced as exc:
        fail(f"the books do not balance: {exc}")
    typer.echo(
        f"ok: {summary.keys} keys, {summary.holds} holds, {summary.usage_records} usage "
        f"records, {summary.upstream_calls} upstream calls; callers charged "
        f"${summary.charged_micro / 1e6:.6f}, upstreams billed "
        f"${summary.upstream_cost_micro / 1e6:.6f}"
    )


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
    ledger_app = typer.Typer(help="Audit the credit ledger.", no_args_is_help=True)
    ledger_app.command("verify")(verify)
    app.add_typer(ledger_app, name="ledger")
