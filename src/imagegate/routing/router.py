"""Route a request over its model's endpoints, failing over on retryable upstream errors.

The router knows endpoints and provider ids, never a provider by name. The full router
(sorting, price caps, circuit breakers, hedging) is a later issue; this one takes the
catalog order, applies the caller's ``provider`` filters and fails over on
408/429/5xx, timeouts and connection errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx

from imagegate.catalog.spec import EndpointSpec, ModelSpec
from imagegate.core.errors import (
    GatewayError,
    InvalidRequest,
    NoProviderAvailable,
    UpstreamError,
    UpstreamFailed,
    UpstreamTimeout,
)
from imagegate.core.types import ImageRequest, ImageResult, RoutingPreferences
from imagegate.providers.base import Provider

log = logging.getLogger("imagegate.routing")


@dataclass(slots=True)
class Attempt:
    provider: str
    status: int | str
    latency_ms: float
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
            "error": self.error,
        }


@dataclass(slots=True)
class Routed:
    result: ImageResult
    endpoint: EndpointSpec
    provider: Provider
    attempts: list[Attempt] = field(default_factory=list)


class Router:
    def __init__(self, providers: dict[str, Provider], max_attempts: int = 3) -> None:
        self.providers = providers
        self.max_attempts = max_attempts

    def candidates(
        self, spec: ModelSpec, prefs: RoutingPreferences
    ) -> list[tuple[EndpointSpec, Provider]]:
        """The endpoints to try, in order, after the caller's filters."""
        chosen: list[tuple[EndpointSpec, Provider]] = []
        for endpoint in spec.endpoints:
            provider = self.providers.get(endpoint.provider)
            if provider is None or not provider.available:
                continue
            if provider.config.status == "alpha" and not prefs.include_alpha:
                continue
            if prefs.only is not None and endpoint.provider not in prefs.only:
                continue
            if prefs.ignore and endpoint.provider in prefs.ignore:
                continue
            chosen.append((endpoint, provider))
        if prefs.order:
            rank = {pid: i for i, pid in enumerate(prefs.order)}
            chosen.sort(key=lambda pair: rank.get(pair[0].provider, len(rank)))
        if not prefs.allow_fallbacks:
            chosen = chosen[:1]
        return chosen[: self.max_attempts]

    async def route(self, spec: ModelSpec, request: ImageRequest) -> Routed:
        candidates = self.candidates(spec, request.provider)
        if not candidates:
            raise NoProviderAvailable(
                f"No provider is available for model '{spec.id}' with these routing "
                "preferences (credentials missing, or every endpoint filtered out).",
                param="provider",
            )
        attempts: list[Attempt] = []
        last: UpstreamError | None = None
        for endpoint, provider in candidates:
            started = time.perf_counter()
            try:
                result = await self._call(provider, request, endpoint.upstream_model)
            except UpstreamError as exc:
                elapsed = (time.perf_counter() - started) * 1000
                attempts.append(Attempt(provider.id, exc.status or "error", elapsed, exc.message))
                if not exc.retryable:
                    raise _caller_error(exc, attempts) from exc
                log.warning(
                    "upstream attempt failed",
                    extra={"provider": provider.id, "status": exc.status, "error": exc.message},
                )
                last = exc
                continue
            except GatewayError as exc:
                elapsed = (time.perf_counter() - started) * 1000
                attempts.append(Attempt(provider.id, exc.status, elapsed, exc.message))
                exc.attempts = attempts
                raise
            elapsed = (time.perf_counter() - started) * 1000
            attempts.append(Attempt(provider.id, 200, elapsed))
            return Routed(result, endpoint, provider, attempts)
        raise _exhausted(spec, last, attempts)

    async def _call(self, provider: Provider, request: ImageRequest, upstream: str) -> ImageResult:
        try:
            async with asyncio.timeout(provider.config.timeout_s):
                return await provider.run(request, upstream)
        except TimeoutError as exc:
            raise UpstreamError(
                f"{provider.id} did not answer within {provider.config.timeout_s:g}s",
                retryable=True,
                timeout=True,
                status=504,
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                f"{provider.id} timed out", retryable=True, timeout=True, status=504
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(
                f"could not connect to {provider.id}: {type(exc).__name__}", retryable=True
            ) from exc


def _caller_error(exc: UpstreamError, attempts: list[Attempt]) -> GatewayError:
    error = exc.client_error or InvalidRequest(exc.message, code="upstream_rejected")
    error.attempts = attempts
    return error


def _exhausted(
    spec: ModelSpec, last: UpstreamError | None, attempts: list[Attempt]
) -> GatewayError:
    summary = "; ".join(f"{a.provider}: {a.error or a.status}" for a in attempts)
    error: GatewayError
    if attempts and all(a.status == 504 for a in attempts):
        error = UpstreamTimeout(f"Every upstream attempt for '{spec.id}' timed out ({summary}).")
    else:
        headers = {}
        if last is not None and last.retry_after_s is not None and last.status == 429:
            headers["Retry-After"] = str(max(1, round(last.retry_after_s)))
        error = UpstreamFailed(
            f"Every upstream attempt for '{spec.id}' failed ({summary}).", headers=headers
        )
    error.attempts = attempts
    return error
