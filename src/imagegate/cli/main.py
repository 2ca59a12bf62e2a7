"""The ``imagegate`` command: run the server and administer keys and models locally."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from imagegate.cli.accounts import register as register_account_commands
from imagegate.cli.client import register as register_client_commands
from imagegate.cli.database import ConfigOption, database_unavailable, settings_for
from imagegate.cli.exits import USAGE, fail, run
from imagegate.cli.keys import keys_app
from imagegate.cli.ops import register as register_ops_commands
from imagegate.config import NO_MIGRATE_ENV, ConfigError

app = typer.Typer(
    help="imagegate: an OpenAI-compatible Images API gateway.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(keys_app, name="keys")
register_client_commands(app)  # generate, edit, vary (cli/client.py)
# Piped output gets a wide console so ids and model names are never truncated.
console = Console(width=None if sys.stdout.isatty() else 200)
WORKER_START_S = 60  # how long a new worker may take to start serving (SIGHUP reloads)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes sharing the port (metrics are summed).")
    ] = 1,
    no_migrate: Annotated[
        bool,
        typer.Option(
            "--no-migrate",
            help="Do not change the schema (run `imagegate migrate` first); start only if the "
            "database is current.",
        ),
    ] = False,
) -> None:
    """Start the gateway."""
    import uvicorn

    from imagegate.api.drain import HARD_STOP_MARGIN_S
    from imagegate.app import (
        check_settings,
        check_storage,
        create_app,
        prepare_database,
        tune_gc_for_serving,
    )
    from imagegate.obs.logs import configure_logging

    settings = settings_for(config)
    configure_logging(log_level.upper())
    settings.migrate = settings.migrate and not no_migrate  # also IMAGEGATE_NO_MIGRATE=1
    try:
        check_settings(settings)
        db, _ = prepare_database(settings)  # migrations and the admin key: once, before workers
        db.dispose()
        check_storage(settings)  # e.g. the S3 bucket exists and is reachable
        settings.migrate = False  # done: the app (and every worker) only checks the schema
        application = create_app(settings)
    except (ConfigError, ValueError) as exc:
        fail(f"cannot start: {exc}", USAGE)
    except SQLAlchemyError as exc:
        database_unavailable(exc, "cannot start")
    if workers > 1 and not settings.redis_url:
        typer.echo(
            f"imagegate: warning: {workers} workers without IMAGEGATE_REDIS_URL: rate limits "
            "and concurrency limits are enforced by each worker alone (a key gets up to "
            f"{workers}x its limits) and circuit breakers are per worker",
            err=True,
        )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "log_level": log_level.lower(),
        # The app cuts requests still running after server.drain_s itself (as server-side
        # cancellations); uvicorn's hard stop only comes after they have been settled.
        "timeout_graceful_shutdown": settings.effective_drain_s + HARD_STOP_MARGIN_S,
    }
    print(f"imagegate: serving on http://{host}:{port}/v1 (docs at /docs)", flush=True)
    if workers == 1:
        tune_gc_for_serving()
        _ignore_sighup()
        uvicorn.run(application, **options)
        return
    # Workers are fresh processes: they rebuild the app from the environment, so the config
    # path, log level and metrics directory travel there.
    if config:
        os.environ["IMAGEGATE_CONFIG"] = str(Path(config).resolve())
    os.environ["IMAGEGATE_LOG_LEVEL"] = log_level
    os.environ[NO_MIGRATE_ENV] = "1"  # the parent migrated; workers only check the schema
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # SIGHUP replaces workers one by one and gives up if a new one is not serving in
        # time: a worker builds the whole gateway first, which takes longer than uvicorn's 5 s.
        options["timeout_worker_healthcheck"] = WORKER_START_S
    with _metrics_dir():
        uvicorn.run("imagegate.app:create_app_from_env", factory=True, workers=workers, **options)


def _ignore_sighup() -> None:
    """One process cannot reload in place (``--workers N`` can: SIGHUP replaces its workers
    one by one); SIGHUP would otherwise kill it mid-request."""
    import logging
    import signal

    def hangup(signum: int, frame: object) -> None:
        logging.getLogger("imagegate").warning(
            "SIGHUP ignored: reloading needs `serve --workers 2` or more; restart the "
            "process (SIGTERM drains it) to load a new config"
        )

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, hangup)


@contextlib.contextmanager
def _metrics_dir() -> Iterator[None]:
    """A clean ``PROMETHEUS_MULTIPROC_DIR`` for the workers: the operator's, emptied, or a
    temporary one removed on exit."""
    from imagegate.obs.metrics import MULTIPROC_ENV, clean_multiproc_dir

    given = os.environ.get(MULTIPROC_ENV)
    path = given or tempfile.mkdtemp(prefix="imagegate-metrics-")
    clean_multiproc_dir(path)
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)


@app.command()
def models(
    config: ConfigOption = None,
    check_lifecycle: Annotated[
        bool,
        typer.Option(
            "--check-lifecycle",
            help="List models past or within 30 days of their shutdown date, and the "
            "deprecated ones, with their replacement and the source of the dates.",
        ),
    ] = False,
) -> None:
    """List the models this gateway's catalog serves."""
    from imagegate.catalog.catalog import Catalog, merge_providers
    from imagegate.core.provider_config import ProviderConfig

    settings = settings_for(config)
    configs: dict[str, ProviderConfig] = {p.id: p for p in merge_providers(settings.providers)}
    if check_lifecycle:
        _check_lifecycle(list(Catalog.load(settings.models, set(configs))))
        return
    table = Table("model", "aliases", "operations", "providers", "available")
    for spec in Catalog.load(settings.models, {k: c.type for k, c in configs.items()}):
        available = any(_has_credentials(configs[e.provider]) for e in spec.endpoints)
        table.add_row(
            spec.id,
            ", ".join(spec.aliases),
            ", ".join(sorted(spec.operations)),
            ", ".join(e.provider for e in spec.endpoints),
            "yes" if available else "no",
        )
    console.print(table)


def _check_lifecycle(specs: list[Any]) -> None:
    """``models --check-lifecycle``: one line per model past or near shutdown, or
    deprecated (shut-down models are refused by the gateway; the others need a plan)."""
    from imagegate.catalog import lifecycle

    found = lifecycle.check(specs)
    table = Table("status", "model", "deprecated", "shutdown", "replacement", "source")
    for kind, spec in found:
        table.add_row(
            kind,
            spec.id,
            str(spec.deprecated_on or "-"),
            str(spec.shutdown_on or "-"),
            spec.replacement or "-",
            spec.lifecycle_source or "-",
        )
    if found:
        console.print(table)
    else:
        typer.echo("no model is deprecated or near its shutdown date")


def _has_credentials(config: object) -> bool:
    env = getattr(config, "api_key_env", None)
    return bool(getattr(config, "api_key", None) or not env or os.environ.get(env))


register_account_commands(app)  # usage, ledger verify (cli/accounts.py)
register_ops_commands(app)  # migrate, secret (cli/ops.py)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
