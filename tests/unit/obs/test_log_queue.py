"""The access log is written by a background thread, not by the event loop, and keeps
the request id the loop knew."""

from __future__ import annotations

import logging
import sys
import threading

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from imagegate.api.middleware import RequestContextMiddleware
from imagegate.obs import log_queue
from imagegate.obs.logs import configure_logging


class _Recorder:
    """A stand-in for stderr that remembers which thread wrote each line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, text: str) -> int:
        self.lines.append((threading.current_thread().name, text))
        return len(text)

    def flush(self) -> None:
        pass


async def test_access_log_is_written_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    recorder = _Recorder()
    monkeypatch.setattr(sys, "stderr", recorder)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO")
    try:
        app = Starlette(
            routes=[Route("/ok", ok)], middleware=[Middleware(RequestContextMiddleware)]
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/ok")
        loop_thread = threading.current_thread().name
    finally:
        log_queue.stop()  # drains the queue
        root.handlers[:], level = saved
        root.setLevel(level)
    access = [
        (thread, orjson.loads(text))
        for thread, text in recorder.lines
        if text.startswith("{") and '"imagegate.access"' in text
    ]
    assert len(access) == 1
    thread, entry = access[0]
    assert thread != loop_thread
    assert entry["request_id"] == response.headers["x-request-id"]
