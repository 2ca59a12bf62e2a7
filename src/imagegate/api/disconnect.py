"""Cancel a request's work when its client goes away.

Once the body has been read, the only message ASGI's ``receive`` can still deliver is
``http.disconnect``. ``cancel_on_disconnect`` runs the work beside a watcher of
``receive``; if the client disconnects first, the work is cancelled (so a queued local
generation leaves its queue, and an upstream call is abandoned) and ``ClientDisconnected``
is raised. Its 499 envelope is never seen by anyone, but the access log records it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive

from imagegate.api.drain import race, shutting_down
from imagegate.core.errors import GatewayError

T = TypeVar("T")


class ClientDisconnected(GatewayError):
    """499 (nginx's "client closed request"): the caller hung up before the answer."""

    status = 499
    type = "client_error"
    code = "client_disconnected"


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects; any other message (none expected) is skipped."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it and raise ``ClientDisconnected`` if the client leaves first,
    or ``ServerShuttingDown`` if the server's drain time (SIGTERM) runs out first.

    Call only after the request body has been read in full.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(request.receive))
    cut = _drain_cut(request)
    stopper = asyncio.ensure_future(cut.wait()) if cut is not None else None
    watchers: list[asyncio.Future[Any]] = [watcher] if stopper is None else [watcher, stopper]

    def lost() -> GatewayError:
        if stopper is not None and stopper.done() and not stopper.cancelled():
            return shutting_down()
        return ClientDisconnected("The client disconnected before the response was ready.")

    return await race(task, watchers, lost)


def drain_cut(request: Request) -> asyncio.Event | None:
    """The event set when the server's drain time runs out (None outside an app)."""
    return _drain_cut(request)


def _drain_cut(request: Request) -> asyncio.Event | None:
    drain = getattr(request.app.state, "drain", None)
    return drain.cut if drain is not None else None
