"""HTTP transport with retries: ``ApiClient`` (sync) and ``AsyncApiClient``.

Both send one prepared ``Outgoing`` body and retry 429, 5xx and connection errors with the
``Configuration``'s policy. A retry waits the server's ``Retry-After`` when it gives one;
if that is longer than ``max_retry_after``, the error is raised at once instead. Each call
carries one ``Idempotency-Key`` across its retries (unless ``idempotency=False``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from imagegate_client.configuration import Configuration
from imagegate_client.errors import (
    ApiConnectionError,
    ApiError,
    ApiTimeoutError,
    parse_retry_after,
)
from imagegate_client.payload import Outgoing


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class _Base:
    def __init__(self, configuration: Configuration | None) -> None:
        self.configuration = configuration or Configuration.from_env()

    def _timeout(self) -> httpx.Timeout:
        c = self.configuration
        return httpx.Timeout(c.timeout, connect=c.connect_timeout)

    def _build(
        self, http: httpx.Client | httpx.AsyncClient, out: Outgoing, idempotency_key: str | None
    ) -> httpx.Request:
        headers = self.configuration.headers()
        if out.stream:
            headers["Accept"] = "text/event-stream"
        if idempotency_key and "Idempotency-Key" not in headers:
            headers["Idempotency-Key"] = idempotency_key
        return http.build_request(
            "POST",
            self.configuration.host + out.path,
            json=out.json,
            data=out.data,
            files=out.files or None,
            headers=headers,
            timeout=self._timeout(),
        )

    def _idempotency_key(self, out: Outgoing) -> str | None:
        """One key per logical call, reused by its retries, so a retry after a lost
        response is answered from the first run instead of generating (and billing) twice."""
        if not self.configuration.idempotency or out.stream:
            return None
        return "ig-sdk-" + uuid.uuid4().hex

    def _delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds before the next try, or ``None`` when no retry is left or wanted."""
        c = self.configuration
        if attempt >= c.max_retries:
            return None
        if response is not None:
            wait = parse_retry_after(response.headers.get("retry-after"))
            if wait is not None:
                return wait if wait <= c.max_retry_after else None
        return c.backoff(attempt)

    @staticmethod
    def _error(response: httpx.Response) -> ApiError:
        return ApiError.from_response(
            response.status_code,
            response.reason_phrase,
            dict(response.headers.items()),
            response.text,
        )

    @staticmethod
    def _transport_error(exc: httpx.TransportError) -> ApiError:
        cls = ApiTimeoutError if isinstance(exc, httpx.TimeoutException) else ApiConnectionError
        return cls(0, type(exc).__name__, message=str(exc) or type(exc).__name__)


class ApiClient(_Base):
    """Sync transport; one connection pool, closed with ``close()`` or ``with``."""

    def __init__(
        self, configuration: Configuration | None = None, http_client: httpx.Client | None = None
    ) -> None:
        super().__init__(configuration)
        self.http = http_client or httpx.Client(verify=self.configuration.verify_ssl)

    def send(self, out: Outgoing) -> httpx.Response:
        """POST ``out``; a 2xx response, read whole unless ``out.stream`` (then open)."""
        attempt = 0
        key = self._idempotency_key(out)
        while True:
            try:
                response = self.http.send(self._build(self.http, out, key), stream=True)
            except httpx.TransportError as exc:
                wait = self._delay(attempt, None)
                if wait is None:
                    raise self._transport_error(exc) from exc
                time.sleep(wait)
                attempt += 1
                continue
            if response.is_success:
                if not out.stream:
                    response.read()
                    response.close()
                return response
            response.read()
            response.close()
            wait = self._delay(attempt, response) if _retryable(response.status_code) else None
            if wait is None:
                raise self._error(response)
            time.sleep(wait)
            attempt += 1

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncApiClient(_Base):
    """Async transport for ``AsyncImagesApi``."""

    def __init__(
        self,
        configuration: Configuration | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(configuration)
        self.http = http_client or httpx.AsyncClient(verify=self.configuration.verify_ssl)

    async def send(self, out: Outgoing) -> httpx.Response:
        attempt = 0
        key = self._idempotency_key(out)
        while True:
            try:
                response = await self.http.send(self._build(self.http, out, key), stream=True)
            except httpx.TransportError as exc:
                wait = self._delay(attempt, None)
                if wait is None:
                    raise self._transport_error(exc) from exc
                await asyncio.sleep(wait)
                attempt += 1
                continue
            if response.is_success:
                if not out.stream:
                    await response.aread()
                    await response.aclose()
                return response
            await response.aread()
            await response.aclose()
            wait = self._delay(attempt, response) if _retryable(response.status_code) else None
            if wait is None:
                raise self._error(response)
            await asyncio.sleep(wait)
            attempt += 1

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
