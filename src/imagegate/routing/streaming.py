"""Route a streaming request: fail over between endpoints until the first event, then commit.

A stream differs from ``Router.route`` in one way: once the caller has seen an event, a
second endpoint would show them a different image forming, so the stream is committed to
the endpoint that produced its first event. Until then candidates, breakers, health, the
429 wait and the deadline work exactly as for ``Router.route``. After that, an upstream
failure ends the stream (the API layer turns it into an ``error`` event). Hedging is not
applied to streams: two upstream streams would both be paid for, and only one is shown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from imagegate.catalog.spec import EndpointSpec, ModelSpec
from imagegate.core.errors import (
    GatewayError,
    UpstreamError,
    UpstreamFailed,
    UpstreamTimeout,
)
from imagegate.core.types import ImageRequest, ImageResult, StreamEvent
from imagegate.providers.base import Provider
from imagegate.routing.health import HealthBook
from imagegate.routing.plan import CANCELLED, Attempt, Candidate, Plan
from imagegate.routing.router import (
    Router,
    caller_error,
    record_cancelled,
    record_failure,
    record_success,
    upstream_errors,
)

log = logging.getLogger("imagegate.routing")


@dataclass(slots=True)
class RoutedStream:
    """A stream committed to one endpoint, its first event already in hand.

    Read further events with :meth:`next_event` until an ``ImageResult``; always
    :meth:`aclose` it, which stops the upstream work if the stream did not finish.
    """

    first: StreamEvent
    endpoint: EndpointSpec
    provider: Provider
    attempts: list[Attempt]
    _events: AsyncIterator[StreamEvent]
    _health: HealthBook
    _expires: float  # event-loop time by which the whole stream must be done
    _started: float  # perf_counter when this endpoint was called
    _request: ImageRequest
    _open: bool = field(default=True)

    @property
    def attempt(self) -> Attempt:
        """This stream's upstream call: its outcome and cost are updated as it ends."""
        return self.attempts[-1]

    @property
    def finished(self) -> bool:
        return not self._open

    async def next_event(self) -> StreamEvent:
        """The next event; a failure becomes the ``GatewayError`` to report to the caller."""
        try:
            event = await _next(self._events, self._expires, self.provider)
        except UpstreamError as exc:
            self.attempt.status, self.attempt.error = exc.status or "error", exc.message
            await self._settle_health(exc)
            if not exc.retryable:
                raise caller_error(exc) from exc
            if exc.timeout:
                raise UpstreamTimeout(f"The upstream stream timed out: {exc.message}") from exc
            raise UpstreamFailed(f"The upstream stream failed: {exc.message}") from exc
        except GatewayError as exc:
            self.attempt.status, self.attempt.error = exc.status, exc.message
            await self._settle_health(None)
            raise
        if isinstance(event, ImageResult):
            self._succeeded(event)
        return event

    async def aclose(self) -> None:
        """Stop the upstream stream if it is still running (a disconnect, an error)."""
        if self._open:
            self._open = False
            self._health.release_probe(*self._key)
            # Stopped before its result: the provider may still bill the whole generation.
            self.attempt.status, self.attempt.error = CANCELLED, "stream stopped before its end"
            self.attempt.cost_micro = self.endpoint.pricing.max_cost_micro(self._request)
        await _close(self._events)

    @property
    def _key(self) -> tuple[str, str]:
        return (self.endpoint.provider, self.endpoint.upstream_model)

    def _succeeded(self, result: ImageResult) -> None:
        if self._open:
            self._open = False
            self.attempt.cost_micro = self.endpoint.pricing.cost_micro(self._request, result)
            elapsed = (time.perf_counter() - self._started) * 1000
            self._health.record_success(*self._key, elapsed, len(result.images))

    async def _settle_health(self, error: UpstreamError | None) -> None:
        if self._open:
            self._open = False
            if error is not None and error.retryable:
                self._health.record_failure(*self._key)
                log.warning(
                    "upstream stream failed after its first event",
                    extra={"provider": self.provider.id, "error": error.message},
                )
            else:
                self._health.release_probe(*self._key)
        await _close(self._events)


async def route_stream(
    router: Router, spec: ModelSpec, request: ImageRequest, plan: Plan | None = None
) -> RoutedStream:
    """Open a stream on the first endpoint that yields an event, failing over before that.

    Raises the same ``GatewayError`` as ``Router.route`` when no endpoint gets that far.
    """

    async def attempt(
        candidate: Candidate, queue: list[Candidate], remaining: float, attempts: list[Attempt]
    ) -> RoutedStream | UpstreamError | GatewayError:
        return await _open(router.health, candidate, request, remaining, attempts)

    return await router.failover(spec, request, attempt, plan)


async def _open(
    health: HealthBook,
    candidate: Candidate,
    request: ImageRequest,
    remaining: float,
    attempts: list[Attempt],
) -> RoutedStream | UpstreamError | GatewayError:
    """Call one endpoint and wait for its first event; account for it as ``Router._attempt``."""
    provider, endpoint = candidate.provider, candidate.endpoint
    limit = min(provider.config.timeout_s, remaining)
    expires = asyncio.get_running_loop().time() + limit
    started = time.perf_counter()
    events = provider.stream(request, endpoint.upstream_model)
    try:
        first = await _next(events, expires, provider)
    except (UpstreamError, GatewayError) as exc:
        await _close(events)
        return record_failure(health, candidate, exc, started, attempts)
    except BaseException:  # cancelled (the client went away) or a bug: free the probe
        health.release_probe(endpoint.provider, endpoint.upstream_model)
        record_cancelled(candidate, request, started, attempts)
        await _close(events)
        raise
    record_success(candidate, started, attempts)
    stream = RoutedStream(
        first, endpoint, provider, attempts, events, health, expires, started, request
    )
    if isinstance(first, ImageResult):
        stream._succeeded(first)
    return stream


async def _next(
    events: AsyncIterator[StreamEvent], expires: float, provider: Provider
) -> StreamEvent:
    """One event within the stream's time limit; transport failures become retryable."""
    timeout_message = (
        f"{provider.id} did not finish streaming within {provider.config.timeout_s:g}s "
        "or the request deadline"
    )
    try:
        with upstream_errors(provider, timeout_message):
            async with asyncio.timeout_at(expires):
                return await anext(events)
    except StopAsyncIteration as exc:
        raise UpstreamError(
            f"{provider.id} ended its stream without a final image", status=502, retryable=True
        ) from exc


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    """Close a provider's event generator: its ``finally``/``async with`` end upstream work."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
