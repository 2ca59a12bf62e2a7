"""Exit codes of the ``imagegate`` command, handled in one place (:func:`run`).

Commands raise :class:`CliFailure` (through :func:`fail`); ``run`` prints its message as
``imagegate: <message>`` on stderr (and its JSON line on stdout for ``--json``) and exits
with its code. 1: the operation failed; 2: a usage or configuration mistake (bad option,
config error, no database where one was looked for); 130: interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

import typer

FAILED = 1
USAGE = 2
INTERRUPTED = 130


class CliFailure(Exception):
    """A command could not do what was asked; ``run`` reports it and exits ``code``."""

    def __init__(self, message: str, code: int = FAILED, stdout: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.stdout = stdout  # a machine-readable line for --json, printed before exiting


def fail(message: str, code: int = FAILED, stdout: str | None = None) -> NoReturn:
    raise CliFailure(message, code, stdout)


def run(app: Callable[[], object]) -> NoReturn:
    """Run the command line; every failure leaves through here with its exit code."""
    try:
        app()
    except CliFailure as exc:
        if exc.stdout is not None:
            typer.echo(exc.stdout)
        typer.echo(f"imagegate: {exc.message}", err=True)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    sys.exit(0)
