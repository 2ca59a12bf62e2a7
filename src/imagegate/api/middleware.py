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
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.api.security_headers import add_security_headers
from imagegate.obs import metrics
from imagegate.obs.logs import request_id_var
from imagegate.storage.ownership import log_id

log = logging.getLogger("imagegate.access")
_FILES = "/v1/files/"
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
                add_security_headers(headers)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status = 499  # gone while its body was read: nobody to answer
        except Exception as exc:
            service = _unavailable(exc)
            if service is None:
                log.exception(
                    "unhandled error", extra={"path": _loggable_path(scope.get("path", ""))}
                )
            else:  # an outage, not a bug: one line, no traceback
                log.warning(
                    "%s unavailable: %s: %s",
                    service,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:300] if str(exc) else "",
                    extra={"path": _loggable_path(scope.get("path", "")), "service": service},
                )
            if not response_started:
                await _send_internal_error(send_with_id, request_id, service)
        finally:
            state = scope.get("state", {})
            elapsed = time.perf_counter() - started
            metrics.observe_request(
                scope.get("path", ""), state.get("model"), state.get("provider"), status, elapsed
            )
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": _loggable_path(scope.get("path", "")),
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 2),
                    "key_id": state.get("key_id"),
                    "model": state.get("model"),
                    "provider": state.get("provider"),
                },
            )
            request_id_var.reset(token)


def _loggable_path(path: str) -> str:
    """The path as logged: a file id names a stored image, so only its hash is written."""
    if path.startswith(_FILES):
        return _FILES + log_id(path[len(_FILES) :])
    return path


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and _SAFE_ID.match(value):
            return str(value.decode())
    return None


def outage_service(exc: BaseException) -> str | None:
    """The shared service a failure came from, when it is one (database, Redis)."""
    return _unavailable(exc)


def _unavailable(exc: BaseException) -> str | None:
    """The shared service a failure came from, when it is one (database, Redis)."""
    for cause in (exc, exc.__cause__, exc.__context__):
        module = type(cause).__module__ if cause is not None else ""
        name = type(cause).__name__
        if module.startswith("sqlalchemy") and name in (
            "OperationalError",
            "InterfaceError",
            "TimeoutError",  # no pooled connection came free in time
        ):
            return "database"
        if module.startswith("redis") and name in ("ConnectionError", "TimeoutError"):
            return "Redis"
    return None


async def _send_internal_error(send: Send, request_id: str, service: str | None = None) -> None:
    """500, or 503 with Retry-After when a shared service (database, Redis) is unreachable:
    nothing was generated or charged, and the request can be retried."""
    if service is None:
        status, code = 500, "internal_error"
        message = "The server had an error while processing your request"
    else:
        status, code = 503, "service_unavailable"
        message = f"The gateway cannot reach its {service} right now; retry shortly"
    body = orjson.dumps(
        {
            "error": {
                "message": f"{message} (request id {request_id}).",
                "type": "server_error",
                "param": None,
                "code": code,
            }
        }
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if service is not None:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
