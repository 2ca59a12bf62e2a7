"""What the router decides and reports: the ``Plan`` a request's hold is sized from and
its attempts follow, each upstream ``Attempt``, and the ``Routed`` result."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from imagegate.catalog.spec import EndpointSpec
from imagegate.core.types import ImageRequest, ImageResult
from imagegate.providers.base import Provider

CANCELLED = "cancelled"  # an attempt's status when the gateway stopped it (hedge loser, ...)


@dataclass(slots=True)
class Attempt:
    """One upstream call and what the provider bills for it (``cost_micro``: the price of
    its result; the worst case for a call cancelled while running, which may still be
    billed; 0 for a refused one)."""

    provider: str
    status: int | str
    latency_ms: float
    error: str | None = None
    upstream_model: str = ""
    cost_micro: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 1),
            "error": self.error,
            "cost_micro": self.cost_micro,
        }


@dataclass(slots=True)
class Candidate:
    endpoint: EndpointSpec
    provider: Provider
    price: float = math.inf  # worst-case USD for one image of this request; inf = unpriced


@dataclass(slots=True)
class Plan:
    """What one request may use: its candidates, in order, and every upstream call made
    for it. The credit hold is :meth:`max_cost_micro` of the same plan the router then
    follows, so a change of health in between cannot route past what was held."""

    request: ImageRequest
    candidates: list[Candidate]
    attempts: list[Attempt] = field(default_factory=list)

    def max_cost_micro(self) -> int:
        """The worst case over every candidate: what to hold."""
        return max(
            (c.endpoint.pricing.max_cost_micro(self.request) for c in self.candidates),
            default=0,
        )

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)


@dataclass(slots=True)
class Routed:
    result: ImageResult
    endpoint: EndpointSpec
    provider: Provider
    attempts: list[Attempt] = field(default_factory=list)
