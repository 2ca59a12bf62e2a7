"""Exceptions raised by the SDK: one ``ApiError`` per failed call, subclassed by status.

Names follow the reference SDKs (``ApiError`` as in the Ruby SDK, the ``*Exception`` classes
as in the OpenAPI-generated Python clients) so ``except`` clauses port between them.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """The gateway answered with an error status (or could not be reached).

    ``message``, ``type``, ``param`` and ``code`` come from the OpenAI-style error envelope
    ``{"error": {...}}``; ``body`` is the raw response text.
    """

    def __init__(
        self,
        status: int = 0,
        reason: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        message: str | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.body = body
        self.message = message or reason or f"HTTP {status}"
        self.type = type
        self.param = param
        self.code = code
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        return f"{self.status} {self.reason or ''}: {self.message}{where}".replace("  ", " ")

    @property
    def request_id(self) -> str | None:
        """The gateway's ``x-request-id``, worth quoting in bug reports."""
        return self.headers.get("x-request-id")

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (``Retry-After``), if it said."""
        return parse_retry_after(self.headers.get("retry-after"))

    @classmethod
    def from_response(
        cls, status: int, reason: str | None, headers: Mapping[str, str], body: str
    ) -> ApiError:
        """Build the subclass for ``status`` from a response's parts."""
        fields: dict[str, Any] = {}
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            err = parsed["error"]
            fields = {k: _text(err.get(k)) for k in ("message", "type", "param", "code")}
        elif isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            fields = {"message": parsed["error"]}
        elif body and not fields:
            fields = {"message": body[:500]}
        return error_class(status)(status, reason, headers=headers, body=body, **fields)


class BadRequestException(ApiError):
    """400: the request is invalid; ``param`` names the field."""


class UnauthorizedException(ApiError):
    """401: the API key is missing, malformed, unknown or revoked."""


class PaymentRequiredException(ApiError):
    """402: not enough credits, or nothing affordable under ``provider.max_price``."""


class ForbiddenException(ApiError):
    """403: the key may not use this model (or route)."""


class NotFoundException(ApiError):
    """404: unknown model or file."""


class TooManyRequestsException(ApiError):
    """429: rate limited; ``retry_after`` says how long to wait."""


class ServiceException(ApiError):
    """5xx: the gateway or every upstream attempt failed."""


class ApiConnectionError(ApiError):
    """The gateway could not be reached (connection refused, reset, DNS ...)."""


class ApiTimeoutError(ApiConnectionError):
    """The request did not complete within the configured timeout."""


class StreamError(ApiError):
    """An ``error`` event arrived in the middle of a stream."""


ApiException = ApiError  # the OpenAPI-generated Python clients' name for the base class

_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestException,
    401: UnauthorizedException,
    402: PaymentRequiredException,
    403: ForbiddenException,
    404: NotFoundException,
    429: TooManyRequestsException,
}


def error_class(status: int) -> type[ApiError]:
    if status >= 500:
        return ServiceException
    return _BY_STATUS.get(status, ApiError)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
