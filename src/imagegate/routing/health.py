"""Per-(provider, model) health: success and latency EWMAs and a circuit breaker.

In-process state; with Redis configured, :mod:`imagegate.routing.shared_health` shares
breaker openings and closings between workers through the ``on_change`` hook and
:meth:`HealthBook.apply_shared`. The clock is injectable so behaviour over time is testable
without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    cooldown_s: float = 30.0


@dataclass(slots=True)
class EndpointHealth:
    """What the router has seen of one endpoint."""

    success_ewma: float = 1.0
    latency_ewma_ms: float | None = None
    ms_per_image_ewma: float | None = None
    consecutive_failures: int = 0
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    probe_in_flight: bool = False
    gone_until: float = 0.0  # the upstream said "no such model": skip until then
    recent_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=100))

    def p95_ms(self) -> float | None:
        if len(self.recent_latencies) < 5:
            return None
        ordered = sorted(self.recent_latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


class HealthBook:
    """Health for every endpoint, keyed by (provider id, upstream model)."""

    def __init__(
        self,
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        alpha: float = 0.2,
    ) -> None:
        self.breaker = breaker or BreakerSettings()
        self.clock = clock
        self.alpha = alpha
        self._entries: dict[tuple[str, str], EndpointHealth] = {}
        # Called as on_change(provider, model, state) when this process opens or closes a
        # breaker; the Redis sync publishes it to the other workers.
        self.on_change: Callable[[str, str, BreakerState], None] | None = None

    def get(self, provider: str, model: str) -> EndpointHealth:
        key = (provider, model)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = EndpointHealth()
        return entry

    def state(self, provider: str, model: str) -> BreakerState:
        """The breaker state now; an open breaker past its cooldown reads as half-open."""
        entry = self.get(provider, model)
        cooled = self.clock() - entry.opened_at >= self.breaker.cooldown_s
        if entry.state is BreakerState.OPEN and cooled:
            entry.state = BreakerState.HALF_OPEN
            entry.probe_in_flight = False
        return entry.state

    def admit(self, provider: str, model: str) -> bool:
        """May a request go to this endpoint now? Half-open admits one probe at a time;
        an endpoint whose model the upstream called gone is skipped until it is due."""
        if self.get(provider, model).gone_until > self.clock():
            return False
        state = self.state(provider, model)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        entry = self.get(provider, model)
        if entry.probe_in_flight:
            return False
        entry.probe_in_flight = True
        return True

    def record_success(self, provider: str, model: str, latency_ms: float, images: int) -> None:
        entry = self.get(provider, model)
        entry.success_ewma = self._mix(entry.success_ewma, 1.0)
        entry.latency_ewma_ms = self._mix(entry.latency_ewma_ms, latency_ms)
        per_image = latency_ms / max(images, 1)
        entry.ms_per_image_ewma = self._mix(entry.ms_per_image_ewma, per_image)
        entry.recent_latencies.append(latency_ms)
        entry.consecutive_failures = 0
        was = entry.state
        entry.state = BreakerState.CLOSED
        entry.probe_in_flight = False
        if was is not BreakerState.CLOSED:
            self._changed(provider, model, BreakerState.CLOSED)

    def record_failure(self, provider: str, model: str) -> None:
        entry = self.get(provider, model)
        entry.success_ewma = self._mix(entry.success_ewma, 0.0)
        entry.consecutive_failures += 1
        if entry.state is BreakerState.HALF_OPEN or (
            entry.consecutive_failures >= self.breaker.failure_threshold
        ):
            newly_open = entry.state is not BreakerState.OPEN
            entry.state = BreakerState.OPEN
            entry.opened_at = self.clock()
            if newly_open:
                self._changed(provider, model, BreakerState.OPEN)
        entry.probe_in_flight = False

    def mark_gone(self, provider: str, model: str, for_s: float) -> None:
        """The upstream answered "model not found" for a model the catalog believes live:
        skip this endpoint for ``for_s`` seconds. Not a breaker failure (the provider is
        healthy), so it neither opens the breaker nor spreads to other workers."""
        entry = self.get(provider, model)
        entry.gone_until = self.clock() + for_s
        entry.probe_in_flight = False

    def apply_shared(self, provider: str, model: str, state: BreakerState, age_s: float) -> None:
        """Adopt another worker's verdict: opened ``age_s`` seconds ago, or closed."""
        entry = self.get(provider, model)
        if state is BreakerState.OPEN:
            if age_s < self.breaker.cooldown_s and entry.state is not BreakerState.OPEN:
                entry.state = BreakerState.OPEN
                entry.opened_at = self.clock() - age_s
                entry.probe_in_flight = False
        elif entry.state is not BreakerState.CLOSED:
            entry.state = BreakerState.CLOSED
            entry.consecutive_failures = 0
            entry.probe_in_flight = False

    def _changed(self, provider: str, model: str, state: BreakerState) -> None:
        if self.on_change is not None:
            self.on_change(provider, model, state)

    def release_probe(self, provider: str, model: str) -> None:
        """A probe that ended without a verdict (a caller error) frees the slot."""
        self.get(provider, model).probe_in_flight = False

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {
            f"{provider}/{model}": {
                "state": self.state(provider, model).value,
                "model_gone": entry.gone_until > self.clock(),
                "success_ewma": round(entry.success_ewma, 3),
                "latency_ewma_ms": entry.latency_ewma_ms and round(entry.latency_ewma_ms, 1),
            }
            for (provider, model), entry in self._entries.items()
        }

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.alpha) * old + self.alpha * new
