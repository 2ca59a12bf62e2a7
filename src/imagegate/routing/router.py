"""Route a request over its model's endpoints, failing over on retryable upstream errors.

The router knows endpoints and provider ids, never a provider by name. It filters the
catalog's endpoints by the caller's ``provider`` preferences and by health, orders them
(catalog order weighted by health, or ``sort``), then tries them in turn within one
deadline, failing over on 408/429/5xx, timeouts and connection errors. A caller's own
mistake is never retried on another provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import NamedTuple, TypeVar

import httpx

from imagegate.catalog.spec import ModelSpec
from imagegate.config import RoutingSettings
from imagegate.core.errors import (
    GatewayError,
    InsufficientCredits,
    InvalidRequest,
    NoProviderAvailable,
    UpstreamError,
    UpstreamFailed,
    UpstreamTimeout,
)
from imagegate.core.types import ImageRequest, ImageResult, RoutingPreferences
from imagegate.obs.metrics import record_attempt
from imagegate.providers.base import Provider
from imagegate.routing.health import BreakerState, HealthBook
from imagegate.routing.plan import CANCELLED, Attempt, Candidate, Plan, Routed

log = logging.getLogger("imagegate.routing")
MODEL_GONE_SKIP_S = 3600.0  # how long an endpoint whose model the upstream disowned is skipped
T = TypeVar("T")


# The router reads the config file's ``routing`` section as it is (breaker fields aside).
RouterSettings = RoutingSettings


class _Outcome(NamedTuple):
    """How one attempt ended: an image, an upstream failure (fail over) or the caller's."""

    candidate: Candidate
    result: ImageResult | None = None
    error: UpstreamError | None = None
    caller_error: GatewayError | None = None


class Router:
    def __init__(
        self,
        providers: dict[str, Provider],
        settings: RouterSettings | None = None,
        health: HealthBook | None = None,
    ) -> None:
        self.providers = providers
        self.settings = settings or RouterSettings()
        self.health = health or HealthBook()

    def plan(self, spec: ModelSpec, request: ImageRequest) -> Plan:
        """The endpoints to try, in order, after preferences, prices and health."""
        return Plan(request, self._candidates(spec, request))

    def _candidates(self, spec: ModelSpec, request: ImageRequest) -> list[Candidate]:
        prefs = request.provider
        pool = self._eligible(spec, request)
        priced = [c for c in pool if c.endpoint.pricing.configured]
        if pool and not priced:
            raise InsufficientCredits(
                f"Model '{spec.id}' has no price configured for any available endpoint, so "
                "it cannot be billed; the operator must set a price or `free: true` in its "
                "endpoint's `pricing`.",
                param="model",
                code="pricing_not_configured",
            )
        pool = priced
        if prefs.max_price is not None:
            affordable = [c for c in pool if c.price <= prefs.max_price]
            if pool and not affordable:
                cheapest = min(pool, key=lambda c: c.price)
                raise InsufficientCredits(
                    f"No endpoint for '{spec.id}' costs at most ${prefs.max_price:g} per image; "
                    f"the cheapest is '{cheapest.provider.id}' at ${cheapest.price:g}.",
                    param="provider.max_price",
                    code="max_price_exceeded",
                )
            pool = affordable
        if not pool:
            raise self._no_provider(spec, request)
        ordered = self._order(pool, request)
        if not prefs.allow_fallbacks:
            ordered = ordered[:1]
        return ordered[: self.settings.max_attempts]

    def _no_provider(self, spec: ModelSpec, request: ImageRequest) -> NoProviderAvailable:
        """Say why nothing can serve ``spec``: the credentials to set, or the caller's own
        routing preferences (the only time ``param`` names ``provider``)."""
        sent_prefs = request.provider != RoutingPreferences()
        missing = sorted(
            {
                f"{p.config.api_key_env} (provider '{p.id}')"
                if p.config.api_key_env
                else f"an api_key for provider '{p.id}'"
                for e in spec.endpoints
                if (p := self.providers.get(e.provider)) is not None and not p.available
            }
        )
        if missing and not sent_prefs:
            return NoProviderAvailable(
                f"No provider is available for model '{spec.id}': the gateway has no "
                f"credentials for it. The operator must set {' or '.join(missing)}."
            )
        if not sent_prefs:
            return NoProviderAvailable(
                f"No provider is available for model '{spec.id}': its endpoints are alpha; "
                "send provider.include_alpha to use them."
            )
        reason = f" (credentials missing: {', '.join(missing)})" if missing else ""
        return NoProviderAvailable(
            f"No provider is available for model '{spec.id}' with these routing "
            f"preferences{reason}.",
            param="provider",
        )

    def _eligible(self, spec: ModelSpec, request: ImageRequest) -> list[Candidate]:
        prefs = request.provider
        chosen: list[Candidate] = []
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
            if prefs.require_parameters and provider.capabilities.unsupported(request):
                continue
            price = endpoint.pricing.unit_price_usd(request)
            chosen.append(Candidate(endpoint, provider, math.inf if price is None else price))
        return chosen

    def _order(self, pool: list[Candidate], request: ImageRequest) -> list[Candidate]:
        prefs = request.provider
        if prefs.sort == "price":
            pool = sorted(pool, key=lambda c: c.price)
        elif prefs.sort in ("latency", "throughput"):
            pool = sorted(pool, key=lambda c: self._speed(c, prefs.sort == "throughput"))
        else:
            pool = sorted(pool, key=self._health_penalty)
        if prefs.order:
            rank = {pid: i for i, pid in enumerate(prefs.order)}
            pool = sorted(pool, key=lambda c: rank.get(c.endpoint.provider, len(rank)))
        return pool

    def _health_penalty(self, candidate: Candidate) -> int:
        key = (candidate.endpoint.provider, candidate.endpoint.upstream_model)
        if self.health.state(*key) is BreakerState.OPEN:
            return 2
        return 1 if self.health.get(*key).success_ewma < 0.5 else 0

    def _speed(self, candidate: Candidate, per_image: bool) -> float:
        entry = self.health.get(candidate.endpoint.provider, candidate.endpoint.upstream_model)
        value = entry.ms_per_image_ewma if per_image else entry.latency_ewma_ms
        return value if value is not None else math.inf

    async def route(
        self, spec: ModelSpec, request: ImageRequest, plan: Plan | None = None
    ) -> Routed:
        async def attempt(
            candidate: Candidate, queue: list[Candidate], remaining: float, attempts: list[Attempt]
        ) -> Routed | UpstreamError | GatewayError:
            outcome = await self._try(candidate, queue, request, remaining, attempts)
            if outcome.result is not None:
                winner = outcome.candidate
                return Routed(outcome.result, winner.endpoint, winner.provider, attempts)
            error = outcome.caller_error or outcome.error
            assert error is not None
            return error

        return await self.failover(spec, request, attempt, plan)

    async def failover(
        self, spec: ModelSpec, request: ImageRequest, attempt: TryOne[T], plan: Plan | None = None
    ) -> T:
        """Try the plan's endpoints in turn with ``attempt`` until one succeeds.

        ``attempt`` returns its success, a retryable ``UpstreamError`` (fail over), or the
        caller's ``GatewayError`` (raised at once). Breakers, the 429 wait and the deadline
        are applied here, for plain requests and streams alike. Every call made is added to
        ``plan.attempts``, which the caller keeps whatever happens.
        """
        plan = plan or self.plan(spec, request)
        deadline = time.monotonic() + self.settings.deadline_s
        attempts = plan.attempts
        last: UpstreamError | None = None
        queue = list(plan.candidates)
        admitted_any = waited = False
        while queue:
            candidate = queue.pop(0)
            key = (candidate.endpoint.provider, candidate.endpoint.upstream_model)
            if not self.health.admit(*key):
                continue
            admitted_any = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            outcome = await attempt(candidate, queue, remaining, attempts)
            if isinstance(outcome, GatewayError):
                outcome.attempts = attempts
                raise outcome
            if not isinstance(outcome, UpstreamError):
                return outcome
            last = outcome
            if not waited and self._wait_and_retry(last, queue, deadline):
                waited = True  # once: an upstream that keeps answering 429 is not hammered
                await asyncio.sleep(last.retry_after_s or 0)
                queue.insert(0, candidate)
        if not admitted_any:
            raise NoProviderAvailable(
                f"Every endpoint for '{spec.id}' is failing (circuit breakers open, or the "
                "upstream model is gone); try again shortly.",
                headers={"Retry-After": str(math.ceil(self.health.breaker.cooldown_s))},
            )
        raise _exhausted(spec, last, attempts)

    def _wait_and_retry(
        self, error: UpstreamError, queue: list[Candidate], deadline: float
    ) -> bool:
        """On a 429 with Retry-After and nothing else to try, wait if it fits the deadline."""
        wait = _retry_after(error)
        return (
            not queue
            and wait is not None
            and wait <= self.settings.max_retry_wait_s
            and time.monotonic() + wait < deadline
        )

    async def _try(
        self,
        candidate: Candidate,
        queue: list[Candidate],
        request: ImageRequest,
        remaining: float,
        attempts: list[Attempt],
    ) -> _Outcome:
        entry = self.health.get(candidate.endpoint.provider, candidate.endpoint.upstream_model)
        p95 = entry.p95_ms()
        hedge_ok = (
            self.settings.hedge
            and queue
            and p95 is not None
            and len(entry.recent_latencies) >= self.settings.hedge_min_samples
        )
        if not hedge_ok:
            return await self._attempt(candidate, request, remaining, attempts)
        assert p95 is not None
        first = asyncio.create_task(self._attempt(candidate, request, remaining, attempts))
        done, _ = await asyncio.wait({first}, timeout=p95 / 1000)
        if done:
            return first.result()
        backup = queue.pop(0)
        if not self.health.admit(backup.endpoint.provider, backup.endpoint.upstream_model):
            return await first
        second = asyncio.create_task(self._attempt(backup, request, remaining, attempts))
        pending = {first, second}
        outcome = _Outcome(candidate)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                outcome = task.result()
                if outcome.result is not None or outcome.caller_error is not None:
                    for other in pending:
                        other.cancel()
                    # Let the loser record itself (a cancelled call may still be billed).
                    await asyncio.gather(*pending, return_exceptions=True)
                    return outcome
        return outcome

    async def _attempt(
        self, candidate: Candidate, request: ImageRequest, remaining: float, attempts: list[Attempt]
    ) -> _Outcome:
        provider, endpoint = candidate.provider, candidate.endpoint
        key = (endpoint.provider, endpoint.upstream_model)
        started = time.perf_counter()
        limit = min(provider.config.timeout_s, remaining)
        try:
            with upstream_errors(provider, f"{provider.id} did not answer within {limit:g}s"):
                async with asyncio.timeout(limit):
                    result = await provider.run(request, endpoint.upstream_model)
        except (UpstreamError, GatewayError) as exc:
            failed = record_failure(self.health, candidate, exc, started, attempts)
            if isinstance(failed, UpstreamError):
                return _Outcome(candidate, error=failed)
            return _Outcome(candidate, caller_error=failed)
        except asyncio.CancelledError:
            self.health.release_probe(*key)
            record_cancelled(candidate, request, started, attempts)
            raise
        elapsed = record_success(candidate, started, attempts)
        attempts[-1].cost_micro = endpoint.pricing.cost_micro(request, result)
        self.health.record_success(*key, elapsed, len(result.images))
        return _Outcome(candidate, result=result)


# One attempt on one endpoint for ``Router.failover``: (candidate, the rest of the queue,
# seconds left, the attempts so far) -> success, UpstreamError (fail over) or GatewayError.
TryOne = Callable[
    [Candidate, list[Candidate], float, list[Attempt]],
    Awaitable[T | UpstreamError | GatewayError],
]


@contextlib.contextmanager
def upstream_errors(provider: Provider, timeout_message: str) -> Iterator[None]:
    """Turn timeouts and transport failures of an upstream call into retryable errors."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamError(timeout_message, retryable=True, timeout=True, status=504) from exc
    except httpx.TimeoutException as exc:
        raise UpstreamError(
            f"{provider.id} timed out", retryable=True, timeout=True, status=504
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamError(
            f"could not reach {provider.id}: {type(exc).__name__}", retryable=True
        ) from exc


def record_failure(
    health: HealthBook,
    candidate: Candidate,
    exc: UpstreamError | GatewayError,
    started: float,
    attempts: list[Attempt],
) -> UpstreamError | GatewayError:
    """Account for one failed attempt (attempts list, metrics, health, log) and return what
    ``failover`` acts on: the retryable ``UpstreamError``, or the caller's ``GatewayError``."""
    provider, endpoint = candidate.provider, candidate.endpoint
    key = (endpoint.provider, endpoint.upstream_model)
    elapsed = (time.perf_counter() - started) * 1000
    record_attempt(provider.id, exc)
    model = endpoint.upstream_model
    if isinstance(exc, GatewayError):
        attempts.append(Attempt(provider.id, exc.status, elapsed, exc.message, model))
        health.release_probe(*key)
        return exc
    attempts.append(Attempt(provider.id, exc.status or "error", elapsed, exc.message, model))
    if not exc.retryable:
        health.release_probe(*key)
        return caller_error(exc)
    if exc.model_gone:
        health.mark_gone(*key, MODEL_GONE_SKIP_S)
        log.error(
            "upstream says the model is gone; skipping this endpoint (update the catalog: "
            "shutdown_on)",
            extra={
                "provider": provider.id,
                "upstream_model": endpoint.upstream_model,
                "status": exc.status,
                "error": exc.message,
            },
        )
        return exc
    health.record_failure(*key)
    log.warning(
        "upstream attempt failed",
        extra={"provider": provider.id, "status": exc.status, "error": exc.message},
    )
    return exc


def record_success(candidate: Candidate, started: float, attempts: list[Attempt]) -> float:
    """Add a successful attempt; returns its latency in ms (health is the caller's: a
    stream is healthy only once it completes)."""
    elapsed = (time.perf_counter() - started) * 1000
    model = candidate.endpoint.upstream_model
    attempts.append(Attempt(candidate.provider.id, 200, elapsed, upstream_model=model))
    record_attempt(candidate.provider.id, None)
    return elapsed


def record_cancelled(
    candidate: Candidate, request: ImageRequest, started: float, attempts: list[Attempt]
) -> None:
    """Add a call the gateway stopped while it ran (a hedge loser, a client gone): the
    provider may bill it in full, so it is booked at its worst-case price."""
    elapsed = (time.perf_counter() - started) * 1000
    endpoint = candidate.endpoint
    attempts.append(
        Attempt(
            candidate.provider.id,
            CANCELLED,
            elapsed,
            "cancelled while running",
            endpoint.upstream_model,
            endpoint.pricing.max_cost_micro(request),
        )
    )


def caller_error(exc: UpstreamError) -> GatewayError:
    return exc.client_error or InvalidRequest(exc.message, code="upstream_rejected")


def _exhausted(
    spec: ModelSpec, last: UpstreamError | None, attempts: list[Attempt]
) -> GatewayError:
    summary = "; ".join(f"{a.provider}: {a.error or a.status}" for a in attempts)
    error: GatewayError
    if attempts and all(a.status == 504 for a in attempts):
        error = UpstreamTimeout(f"Every upstream attempt for '{spec.id}' timed out ({summary}).")
    else:
        headers = {}
        wait = None if last is None else _retry_after(last)
        if wait is not None:
            headers["Retry-After"] = str(max(1, round(wait)))
        error = UpstreamFailed(
            f"Every upstream attempt for '{spec.id}' failed ({summary or 'deadline passed'}).",
            headers=headers,
        )
    error.attempts = attempts
    return error


def _retry_after(error: UpstreamError) -> float | None:
    """A 429's Retry-After in seconds; None without one, or for one that is not a finite
    number >= 0 (an upstream's ``inf``, ``nan`` or negative value is no wait to honour)."""
    wait = error.retry_after_s
    if error.status != 429 or wait is None or not math.isfinite(wait) or wait < 0:
        return None
    return wait
