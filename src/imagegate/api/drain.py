"""Graceful drain on SIGTERM.

At the signal ``/readyz`` turns 503 at once and uvicorn stops accepting connections; the
requests in flight get up to ``server.drain_s`` (default ``routing.deadline_s``) to finish.
Whatever still runs then is cut *here*, as a server-side cancellation (503
``server_shutting_down``, its hold released and its concurrency slot freed through the
normal failure path), before uvicorn's own, later, hard stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, TypeVar

from imagegate.core.errors import GatewayError

T = TypeVar("T")
log = logging.getLogger("imagegate.drain")
# uvicorn's hard stop comes this long after our cut, so cut requests can still settle.
HARD_STOP_MARGIN_S = 15.0


class ServerShuttingDown(GatewayError):
    """503: the server stopped this request while shutting down; retry it elsewhere."""

    status = 503
    type = "server_error"
    code = "server_shutting_down"


class Drain:
    """The process's drain state: set by SIGTERM, read by ``/readyz`` and the pipeline."""

    def __init__(self) -> None:
        self.draining = False
        self.drain_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cut: asyncio.Event | None = None

    def bind(self, drain_s: float) -> None:
        """Attach to the running loop (at start-up) with the drain time to grant."""
        self._loop = asyncio.get_running_loop()
        self._cut = asyncio.Event()
        self.drain_s = drain_s

    @property
    def cut(self) -> asyncio.Event | None:
        """Set when in-flight requests must stop; None before start-up."""
        return self._cut

    def begin(self) -> None:
        """Start draining; safe to call from a signal handler, and more than once."""
        if self.draining or self._loop is None:
            return
        self.draining = True
        loop, cut = self._loop, self._cut
        assert cut is not None

        def schedule() -> None:
            log.info("draining: not ready; in-flight requests have %g s", self.drain_s)
            loop.call_later(self.drain_s, cut.set)

        loop.call_soon_threadsafe(schedule)


def shutting_down() -> ServerShuttingDown:
    return ServerShuttingDown(
        "The server is shutting down and stopped this request before it finished; retry it.",
        headers={"retry-after": "1"},
    )


async def until_cut(cut: asyncio.Event | None, work: Awaitable[T]) -> T:
    """Await ``work``, or cancel it and raise ``ServerShuttingDown`` once ``cut`` is set."""
    if cut is None:
        return await work
    task = asyncio.ensure_future(work)
    if cut.is_set():
        task.cancel()
    return await race(task, [asyncio.ensure_future(cut.wait())], shutting_down)


async def race(
    task: asyncio.Future[T], watchers: list[asyncio.Future[Any]], lost: Callable[[], Exception]
) -> T:
    """``task``'s result if it ends before every watcher; else ``task`` is cancelled and
    ``lost()`` raised. Nothing is left running, also when the caller itself is cancelled."""
    try:
        await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, *watchers):
            if not pending.done():
                pending.cancel()
        for watcher in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    if task.done() and not task.cancelled():
        return task.result()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise lost()


def drain_of(app: Any) -> Drain:
    drain: Drain = app.state.drain
    return drain


def chain_sigterm(drain: Drain) -> None:
    """Run ``drain.begin`` before the SIGTERM (and SIGINT) handlers uvicorn installed."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        # A later app in the same process (tests) replaces our hook instead of stacking.
        previous = getattr(previous, "_imagegate_previous", previous)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            drain.begin()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                raise SystemExit(128 + signum)

        handler._imagegate_previous = previous  # type: ignore[attr-defined]
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (an embedding server): no drain hook
            return
