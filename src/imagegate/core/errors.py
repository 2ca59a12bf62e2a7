"""The gateway's error hierarchy.

Every error knows the HTTP status, OpenAI-style ``type`` and ``code`` and the request
``param`` it is about, so the API layer can render the envelope without guessing.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any


class GatewayError(Exception):
    """Base class: an error that becomes an OpenAI-style error envelope."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.attempts: list[Any] = []

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    """400: the caller's request is malformed or not supported by the model."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"  # as OpenAI answers a bad key
    code = "invalid_api_key"


class InsufficientCredits(GatewayError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_credits"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    code = "internal_error"


class UpstreamFailed(GatewayError):
    """502: every upstream attempt failed with a retryable error."""

    status = 502
    type = "upstream_error"
    code = "upstream_failed"


class NoProviderAvailable(GatewayError):
    status = 503
    type = "server_error"
    code = "no_provider_available"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


@dataclass(eq=False, repr=False)
class UpstreamError(Exception):
    """Raised by a provider adapter when an upstream call fails.

    ``retryable`` tells the router whether another endpoint may be tried (408, 429, 5xx,
    timeouts, connection errors). Non-retryable errors carry the caller-facing
    ``GatewayError`` they map to in ``client_error``.
    """

    message: str
    _: KW_ONLY
    status: int | None = None
    retryable: bool
    timeout: bool = False
    retry_after_s: float | None = None
    client_error: GatewayError | None = None
    # The upstream says the model we asked for does not exist (retired, renamed): the
    # router skips this endpoint for a while instead of counting breaker failures.
    model_gone: bool = False
    # About the gateway's own account (billing, quota, credentials), not the caller's
    # request: fail over, never wait it out, never blame the caller.
    ours: bool = False

    def __post_init__(self) -> None:
        super().__init__(self.message)  # str(exc) and exc.args, as any exception's


def is_retryable_status(status: int) -> bool:
    """Statuses on which the router moves on to another endpoint."""
    return status in (408, 409, 425, 429) or status >= 500
