"""The router against real adapters talking to loopback fakes of OpenAI's Images API.

Time is injected into the health book (a manual clock), so breaker transitions are tested
without sleeping; nothing asserts on durations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import pytest

from fakes.openai_images import FakeOpenAI
from imagegate.core.errors import (
    GatewayError,
    InsufficientCredits,
    InvalidRequest,
    NoProviderAvailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from imagegate.providers.base import Capabilities
from imagegate.providers.openai.compatible import OpenAICompatibleProvider
from imagegate.routing.health import BreakerSettings, BreakerState, HealthBook
from imagegate.routing.router import Router
from manual_clock import Clock
from router_support import build_router, model, request


class NoSeedProvider(OpenAICompatibleProvider):
    """An OpenAI-style upstream that has no seed parameter (as OpenAI itself)."""

    capabilities: ClassVar[Capabilities] = Capabilities(supports_seed=False)


def build(
    fakes: dict[str, FakeOpenAI],
    http: httpx.AsyncClient,
    *,
    clock: Clock | None = None,
    alpha: tuple[str, ...] = (),
    no_seed: tuple[str, ...] = (),
    **settings: Any,
) -> Router:
    """A router over a, b, c (each with a 30 s timeout unless ``timeout_<name>`` says)."""
    timeouts = {name: settings.pop(f"timeout_{name}", 30.0) for name in fakes}
    health = HealthBook(BreakerSettings(failure_threshold=2, cooldown_s=30), clock or Clock())
    kinds = dict.fromkeys(no_seed, NoSeedProvider)
    return build_router(
        fakes, http, health, kinds=kinds, in_alpha=alpha, timeouts=timeouts, **settings
    )


MODEL = model()


def providers_tried(routed: Any) -> list[str]:
    return [a.provider for a in routed.attempts]


async def test_default_is_catalog_order(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    routed = await build(fakes, http).route(MODEL, request())
    assert routed.provider.id == "a" and providers_tried(routed) == ["a"]


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [
        ({"order": ["c", "b"]}, "c"),
        ({"only": ["b"]}, "b"),
        ({"ignore": ["a"]}, "b"),
        ({"sort": "price"}, "b"),
        ({"only": ["a", "c"], "sort": "price"}, "c"),
        ({"sort": "price", "order": ["a"]}, "a"),
        ({"max_price": 0.03}, "b"),
        ({"max_price": 0.03, "order": ["c"]}, "c"),
    ],
)
async def test_each_preference_alone_and_combined(
    fakes: dict[str, FakeOpenAI], http: Any, prefs: dict[str, Any], expected: str
) -> None:
    routed = await build(fakes, http).route(MODEL, request(**prefs))
    assert routed.provider.id == expected


async def test_alpha_providers_need_include_alpha(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    router = build(fakes, http, alpha=("a",))
    assert (await router.route(MODEL, request())).provider.id == "b"
    assert (await router.route(MODEL, request(include_alpha=True))).provider.id == "a"


async def test_sort_latency_and_throughput_use_observed_health(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    router.health.record_success("a", "up-a", 900, images=1)
    router.health.record_success("b", "up-b", 300, images=1)
    router.health.record_success("c", "up-c", 400, images=4)  # 100 ms per image
    assert (await router.route(MODEL, request(sort="latency"))).provider.id == "b"
    assert (await router.route(MODEL, request(sort="throughput"))).provider.id == "c"


async def test_max_price_nothing_affordable_is_402_naming_cheapest(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    with pytest.raises(InsufficientCredits) as info:
        await build(fakes, http).route(MODEL, request(max_price=0.001))
    assert info.value.status == 402 and "'b' at $0.01" in info.value.message
    assert info.value.param == "provider.max_price"


async def test_require_parameters_skips_endpoints_that_cannot_honour(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, no_seed=("a",))
    seeded = request(require_parameters=True)
    seeded.seed = 42
    assert (await router.route(MODEL, seeded)).provider.id == "b"
    loose = request()
    loose.seed = 42
    assert (await router.route(MODEL, loose)).provider.id == "a"


async def test_failover_chain_and_no_fallbacks(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    fakes["a"].fail_status = 500
    fakes["b"].fail_status = 503
    routed = await build(fakes, http).route(MODEL, request())
    assert [(a.provider, a.status) for a in routed.attempts] == [("a", 500), ("b", 503), ("c", 200)]
    with pytest.raises(UpstreamFailed):
        await build(fakes, http).route(MODEL, request(allow_fallbacks=False))


async def test_failover_on_429_408_and_connection_error(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["a"].fail_status = 429
    fakes["b"].fail_status = 408
    router = build(fakes, http)
    router.providers["c"].config.base_url = "http://127.0.0.1:9/v1"  # nothing listens there
    with pytest.raises(UpstreamFailed) as info:
        await router.route(MODEL, request())
    assert [a.status for a in info.value.attempts] == [429, 408, "error"]


async def test_429_retry_after_is_waited_out_when_nothing_else_is_left(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["c"].fail_status, fakes["c"].fail_first, fakes["c"].retry_after = 429, 1, "0.05"
    routed = await build(fakes, http).route(MODEL, request(only=["c"]))
    assert [a.status for a in routed.attempts] == [429, 200]
    fakes["b"].fail_status, fakes["b"].retry_after = 429, "60"  # too long to wait
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http).route(MODEL, request(only=["b"]))
    assert info.value.headers["Retry-After"] == "60"


async def test_caller_error_is_never_retried(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    forbidden = request()
    forbidden.prompt = "forbidden words"
    with pytest.raises(InvalidRequest) as info:
        await build(fakes, http).route(MODEL, forbidden)
    assert info.value.code == "content_policy_violation"
    assert len(fakes["b"].calls) == 0 and len(fakes["c"].calls) == 0


async def test_breaker_open_half_open_closed(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    clock = Clock()
    router = build(fakes, http, clock=clock)
    fakes["a"].fail_status = 500
    for _ in range(2):  # threshold 2
        assert (await router.route(MODEL, request())).provider.id == "b"
    assert router.health.state("a", "up-a") is BreakerState.OPEN
    calls = len(fakes["a"].calls)
    assert (await router.route(MODEL, request())).provider.id == "b"
    assert len(fakes["a"].calls) == calls  # open: not even tried
    clock.now += 31
    assert router.health.state("a", "up-a") is BreakerState.HALF_OPEN
    assert (await router.route(MODEL, request())).provider.id == "b"  # probe fails
    assert router.health.state("a", "up-a") is BreakerState.OPEN
    clock.now += 31
    fakes["a"].fail_status = None
    assert (await router.route(MODEL, request())).provider.id == "a"  # probe succeeds
    assert router.health.state("a", "up-a") is BreakerState.CLOSED


async def test_all_breakers_open_is_503(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    router = build(fakes, http)
    for name in "abc":
        for _ in range(2):
            router.health.record_failure(name, f"up-{name}")
    with pytest.raises(NoProviderAvailable) as info:
        await router.route(MODEL, request())
    assert "Retry-After" in info.value.headers


async def test_deadline_bounds_the_whole_request(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    fakes["a"].delay_s = 1.5
    router = build(fakes, http, deadline_s=0.3)
    with pytest.raises(UpstreamTimeout) as info:
        await router.route(MODEL, request())
    assert [a.provider for a in info.value.attempts] == ["a"]


async def hedged_past_a_slow_a(fakes: dict[str, FakeOpenAI], http: httpx.AsyncClient) -> Any:
    """A hedging router whose p95 for a is 20 ms routes a request while a takes 1.5 s."""
    router = build(fakes, http, hedge=True, hedge_min_samples=5)
    for _ in range(5):
        router.health.record_success("a", "up-a", 20, images=1)
    fakes["a"].delay_s = 1.5
    return await router.route(MODEL, request())


async def test_hedging_starts_a_second_endpoint_after_p95(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    routed = await hedged_past_a_slow_a(fakes, http)
    assert routed.provider.id == "b"
    assert len(fakes["a"].calls) == 1 and len(fakes["b"].calls) == 1


async def test_errors_carry_attempts(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    for fake in fakes.values():
        fake.fail_status = 502
    with pytest.raises(GatewayError) as info:
        await build(fakes, http).route(MODEL, request())
    assert info.value.status == 502 and len(info.value.attempts) == 3


async def test_a_hedge_loser_is_recorded_with_what_it_may_cost(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    """The cancelled first call was sent (and may be billed): it stays in the attempts."""
    routed = await hedged_past_a_slow_a(fakes, http)
    assert routed.provider.id == "b"
    by_provider = {a.provider: a for a in routed.attempts}
    assert set(by_provider) == {"a", "b"}
    assert by_provider["a"].status == "cancelled" and by_provider["a"].cost_micro == 40_000
    assert by_provider["b"].status == 200 and by_provider["b"].cost_micro == 10_000
    assert by_provider["a"].upstream_model == "up-a"


async def test_the_route_follows_the_plan_its_hold_was_taken_for(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    """Health changing between the hold and the call never routes past the held plan."""
    router = build(fakes, http)
    fakes["a"].fail_status = 500
    for _ in range(2):  # a's breaker opens; b serves
        await router.route(MODEL, request())
    req = request(allow_fallbacks=False)
    plan = router.plan(MODEL, req)
    assert [c.provider.id for c in plan] == ["b"] and plan.max_cost_micro() == 10_000
    fakes["b"].fail_status = 500
    for _ in range(2):  # now b's breaker opens too; c (pricier than the hold) is next
        await router.route(MODEL, request())
    assert [c.provider.id for c in router.plan(MODEL, req)] == ["c"]
    calls = len(fakes["c"].calls)
    with pytest.raises(NoProviderAvailable):
        await router.route(MODEL, req, plan)
    assert len(fakes["c"].calls) == calls
