"""Render every error, ours or the framework's, as OpenAI's error envelope."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from imagegate.core.errors import GatewayError, InvalidRequest, NotFound
from imagegate.obs.logs import request_id_var

log = logging.getLogger("imagegate.api")

_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
}


def envelope_response(error: GatewayError) -> Response:
    headers = dict(error.headers)
    request_id = request_id_var.get()
    if request_id:
        headers["x-request-id"] = request_id
    return Response(
        orjson.dumps(error.to_dict()),
        status_code=error.status,
        headers=headers,
        media_type="application/json",
    )


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return envelope_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: GatewayError
    if exc.status_code == 404:
        error = NotFound(
            f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url"
        )
    else:
        kind, code = _STATUS_ERRORS.get(exc.status_code, ("invalid_request_error", "http_error"))
        message = (
            f"Method {request.method} is not allowed on {request.url.path}."
            if exc.status_code == 405
            else str(exc.detail)
        )
        error = InvalidRequest(message, code=code, status=exc.status_code)
        error.type = kind
    if exc.headers:
        error.headers.update(exc.headers)
    return envelope_response(error)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's own 422s become 400s naming the first offending field."""
    errors: list[dict[str, Any]] = getattr(exc, "errors", list)()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", []) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    message = first.get("msg", "Invalid request.")
    return envelope_response(
        InvalidRequest(f"{param}: {message}" if param else message, param=param)
    )
