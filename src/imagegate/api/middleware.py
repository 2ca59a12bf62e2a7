"""Pure-ASGI middleware: request ids, the access log, and the last-resort 500 envelope.

Written against raw ASGI (not BaseHTTPMiddleware) so it adds no task or body copy to
the hot path.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.logs import request_id_var

log = logging.getLogger("imagegate.access")
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or "req_" + secrets.token_hex(12)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", raw_id))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not response_started:
                await _send_internal_error(send_with_id, request_id)
        finally:
            state = scope.get("state", {})
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    "key_id": state.get("key_id"),
                    "model": state.get("model"),
                    "provider": state.get("provider"),
                },
            )
            request_id_var.reset(token)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and _SAFE_ID.match(value):
            return str(value.decode())
    return None


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": f"The server had an error while processing your request "
                f"(request id {request_id}).",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
