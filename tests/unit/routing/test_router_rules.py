"""Routing rules as a caller sees them: which endpoint is tried in what order, and what an
error says (its ``code``, ``param``, ``headers`` and the ``attempts`` it lists). Three
endpoints on loopback fakes of OpenAI's Images API (tests/fakes/openai_images.py); health
is set through the health book, with a manual clock, so nothing sleeps."""

from __future__ import annotations

import logging
import re
import time
from typing import Any, ClassVar

import httpx
import pytest

from fakes.openai_images import FakeOpenAI
from imagegate.core.errors import (
    InsufficientCredits,
    InvalidRequest,
    NoProviderAvailable,
    UpstreamError,
    UpstreamFailed,
    UpstreamTimeout,
)
from imagegate.core.types import ImageRequest
from imagegate.obs.metrics import render
from imagegate.providers.base import Capabilities
from imagegate.providers.openai.compatible import OpenAICompatibleProvider
from imagegate.routing.health import BreakerSettings, HealthBook
from imagegate.routing.router import Attempt, Router, caller_error
from manual_clock import Clock
from router_support import build_router, model, request


class GenerateOnly(OpenAICompatibleProvider):
    """An OpenAI-style upstream without the edits endpoint."""

    capabilities: ClassVar[Capabilities] = Capabilities(operations=frozenset({"generate"}))


def build(
    fakes: dict[str, FakeOpenAI],
    http: httpx.AsyncClient,
    *,
    threshold: int = 5,
    alpha: float = 0.5,
    unavailable: tuple[str, ...] = (),
    **settings: Any,
) -> Router:
    """A router over a, b, c; one failure halves an endpoint's success EWMA (alpha 0.5)."""
    health = HealthBook(BreakerSettings(failure_threshold=threshold, cooldown_s=30), Clock(), alpha)
    return build_router(fakes, http, health, unavailable=unavailable, **settings)


def planned(router: Router, req: ImageRequest | None = None, **prices: Any) -> list[str]:
    spec = model(prices or None)
    return [c.provider.id for c in router.plan(spec, req or request())]


def fail(router: Router, name: str, times: int) -> None:
    for _ in range(times):
        router.health.record_failure(name, f"up-{name}")


# -- order ---------------------------------------------------------------------------------


async def test_a_degraded_endpoint_moves_below_healthy_ones_before_an_open_one(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, threshold=3)
    fail(router, "a", 3)  # breaker open
    fail(router, "b", 2)  # success EWMA 0.25, breaker still closed: degraded
    assert router.health.state("b", "up-b") == "closed"
    assert planned(router) == ["c", "b", "a"]
    routed = await router.route(model(), request())
    assert [a.provider for a in routed.attempts] == ["c"]


def test_an_endpoint_at_exactly_half_success_is_not_yet_degraded(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    fail(router, "a", 1)  # EWMA exactly 0.5
    assert router.health.get("a", "up-a").success_ewma == 0.5
    assert planned(router) == ["a", "b", "c"]
    fail(router, "a", 1)  # 0.25: degraded
    assert planned(router) == ["b", "c", "a"]


def test_sort_by_price_latency_and_throughput_order_the_whole_plan(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    assert planned(router, request(sort="price")) == ["b", "c", "a"]
    router.health.record_success("a", "up-a", 300, images=1)
    router.health.record_success("b", "up-b", 900, images=1)
    router.health.record_success("c", "up-c", 400, images=4)  # 100 ms per image
    assert planned(router, request(sort="latency")) == ["a", "c", "b"]
    assert planned(router, request(sort="throughput")) == ["c", "a", "b"]


def test_an_endpoint_never_seen_sorts_last_by_latency(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    router.health.record_success("b", "up-b", 900, images=1)
    router.health.record_success("c", "up-c", 100, images=1)
    assert planned(router, request(sort="latency")) == ["c", "b", "a"]
    assert planned(router, request(sort="throughput")) == ["c", "b", "a"]


def test_order_puts_named_providers_first_in_their_order_and_keeps_the_rest(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    assert planned(router, request(order=["c", "b"])) == ["c", "b", "a"]
    assert planned(router, request(order=["b"])) == ["b", "a", "c"]
    assert planned(router, request(order=["c"], sort="price")) == ["c", "b", "a"]


def test_the_plan_is_cut_to_max_attempts_or_to_one_without_fallbacks(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    assert planned(build(fakes, http, max_attempts=2)) == ["a", "b"]
    assert planned(build(fakes, http), request(allow_fallbacks=False)) == ["a"]


def test_only_and_ignore_filter_by_provider_id(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    router = build(fakes, http)
    assert planned(router, request(only=["c", "a"])) == ["a", "c"]
    assert planned(router, request(ignore=["a", "c"])) == ["b"]
    assert planned(router, request(only=["a", "b"], ignore=["a"])) == ["b"]


def test_max_price_keeps_endpoints_at_or_below_it(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    router = build(fakes, http)
    assert planned(router, request(max_price=0.02)) == ["b", "c"]
    assert planned(router, request(max_price=0.01)) == ["b"]


# -- errors ----------------------------------------------------------------------------------


def test_no_endpoint_under_max_price_is_402_naming_the_cheapest(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    with pytest.raises(InsufficientCredits) as info:
        planned(build(fakes, http), request(max_price=0.005, ignore=["b"]))
    err = info.value
    assert (err.status, err.code, err.param) == (402, "max_price_exceeded", "provider.max_price")
    assert "at most $0.005 per image" in err.message and "'c' at $0.02" in err.message


def test_an_unpriced_model_is_402_pricing_not_configured(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    with pytest.raises(InsufficientCredits) as info:
        planned(router, a=None, b=None, c=None)
    err = info.value
    assert (err.status, err.code, err.param) == (402, "pricing_not_configured", "model")
    assert "'t/m'" in err.message
    # One priced endpoint is enough, and only it is planned.
    assert planned(router, a=None, b=0.03, c=None) == ["b"]


def test_nothing_left_after_preferences_is_503_naming_provider(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, unavailable=("a",))
    del router.providers["c"]  # a provider the catalog names but the config does not
    with pytest.raises(NoProviderAvailable) as info:
        planned(router, request(only=["a", "c"]))
    err = info.value
    assert (err.status, err.param) == (503, "provider")
    assert "'t/m'" in err.message
    assert planned(router) == ["b"]  # without credentials, or unconfigured: left out


async def test_every_breaker_open_is_503_with_the_cooldown_as_retry_after(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, threshold=1)
    for name in "abc":
        fail(router, name, 1)
    with pytest.raises(NoProviderAvailable) as info:
        await router.route(model(), request())
    assert info.value.headers == {"Retry-After": "30"}
    assert info.value.param is None  # no field of the caller's is at fault (issue 14)
    assert all(not fake.calls for fake in fakes.values())


async def test_a_failed_request_lists_every_attempt_in_order(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["a"].fail_status, fakes["b"].fail_status, fakes["c"].fail_status = 500, 503, 502
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http).route(model(), request())
    err = info.value
    rows = [a.to_dict() for a in err.attempts]
    assert [(r["provider"], r["status"]) for r in rows] == [("a", 500), ("b", 503), ("c", 502)]
    assert all(isinstance(r["error"], str) and r["error"] for r in rows)
    assert all(isinstance(r["latency_ms"], float) and r["latency_ms"] >= 0 for r in rows)
    assert err.status == 502 and err.headers == {}
    assert "Every upstream attempt for 't/m' failed (a: " in err.message
    # Each endpoint's failure counted against it.
    assert [router_calls for router_calls in (len(f.calls) for f in fakes.values())] == [1, 1, 1]


async def test_a_success_after_failover_lists_the_failures_then_the_200(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["a"].fail_status = 500
    router = build(fakes, http)
    routed = await router.route(model(), request())
    assert [(a.provider, a.status, a.error is None) for a in routed.attempts] == [
        ("a", 500, False),
        ("b", 200, True),
    ]
    assert routed.provider.id == "b" and routed.endpoint.upstream_model == "up-b"
    assert router.health.get("a", "up-a").success_ewma == 0.5
    assert router.health.get("b", "up-b").latency_ewma_ms is not None


async def test_a_final_429_without_retry_after_is_502_with_no_retry_after(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["b"].fail_status = 429
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http).route(model(), request(only=["b"]))
    err = info.value
    assert err.status == 502 and "Retry-After" not in err.headers
    assert [(a.provider, a.status) for a in err.attempts] == [("b", 429)]
    assert len(fakes["b"].calls) == 1  # nothing to wait for: not retried


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
async def test_a_final_429_with_a_nonsense_retry_after_is_502_without_waiting(
    fakes: dict[str, FakeOpenAI], http: Any, value: str
) -> None:
    fakes["b"].fail_status, fakes["b"].retry_after = 429, value
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http, deadline_s=5.0).route(model(), request(only=["b"]))
    assert "Retry-After" not in info.value.headers
    assert len(fakes["b"].calls) == 1


async def test_a_final_429_passes_its_retry_after_on_rounded_and_at_least_one(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["b"].fail_status, fakes["b"].retry_after = 429, "7.4"
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http).route(model(), request(only=["b"]))
    assert info.value.headers == {"Retry-After": "7"}
    fakes["b"].retry_after = "0.2"  # too short to be worth waiting? no: waited, then fails
    fakes["b"].calls.clear()
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http, max_retry_wait_s=0.1).route(model(), request(only=["b"]))
    assert info.value.headers == {"Retry-After": "1"}
    assert len(fakes["b"].calls) == 1


async def test_a_429_retry_after_is_waited_only_when_nothing_else_is_left(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["a"].fail_status, fakes["a"].fail_first, fakes["a"].retry_after = 429, 1, "0"
    routed = await build(fakes, http).route(model(), request())
    assert [(a.provider, a.status) for a in routed.attempts] == [("a", 429), ("b", 200)]
    fakes["a"].calls.clear()
    routed = await build(fakes, http).route(model(), request(only=["a"]))
    assert [(a.provider, a.status) for a in routed.attempts] == [("a", 429), ("a", 200)]


async def test_a_429_is_not_waited_out_past_the_deadline_or_the_wait_cap(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["b"].fail_status, fakes["b"].fail_first, fakes["b"].retry_after = 429, 1, "2"
    with pytest.raises(UpstreamFailed):
        await build(fakes, http, deadline_s=1.0).route(model(), request(only=["b"]))
    fakes["b"].calls.clear()
    with pytest.raises(UpstreamFailed):
        await build(fakes, http, max_retry_wait_s=1.0).route(model(), request(only=["b"]))
    assert len(fakes["b"].calls) == 1


async def test_only_timeouts_make_a_504(fakes: dict[str, FakeOpenAI], http: Any) -> None:
    fakes["a"].delay_s = 2.0
    fakes["b"].fail_status = 500
    router = build(fakes, http, deadline_s=30.0)
    router.providers["a"].config.timeout_s = 0.2
    with pytest.raises(UpstreamFailed) as info:  # a timeout and a 500: not all timeouts
        await router.route(model(), request(only=["a", "b"]))
    assert [a.status for a in info.value.attempts] == [504, 500]
    with pytest.raises(UpstreamTimeout) as timeout:
        await router.route(model(), request(only=["a"]))
    assert timeout.value.status == 504 and [a.status for a in timeout.value.attempts] == [504]
    assert "did not answer within 0.2s" in (timeout.value.attempts[0].error or "")


async def test_a_callers_mistake_is_raised_at_once_with_its_attempts(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    req = request()
    req.prompt = "forbidden words"
    with pytest.raises(InvalidRequest) as info:
        await build(fakes, http).route(model(), req)
    err = info.value
    assert err.code == "content_policy_violation" and err.status == 400
    assert [(a.provider, a.status) for a in err.attempts] == [("a", 400)]
    assert not fakes["b"].calls and not fakes["c"].calls


def test_an_upstream_rejection_without_a_client_error_is_400_upstream_rejected() -> None:
    err = caller_error(UpstreamError("bad size", status=400, retryable=False))
    assert (err.status, err.code, err.message) == (400, "upstream_rejected", "bad size")


def test_an_attempt_reports_its_latency_rounded_to_a_tenth() -> None:
    assert Attempt("a", 200, 12.345, None, "up-a", 40_000).to_dict() == {
        "provider": "a",
        "upstream_model": "up-a",
        "status": 200,
        "latency_ms": 12.3,
        "error": None,
        "cost_micro": 40_000,
    }


async def test_an_upstream_that_keeps_answering_429_is_waited_out_once(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["b"].fail_status, fakes["b"].retry_after = 429, "0"
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http).route(model(), request(only=["b"]))
    assert [(a.provider, a.status) for a in info.value.attempts] == [("b", 429), ("b", 429)]
    assert len(fakes["b"].calls) == 2


def attempts_counted(provider: str, outcome: str) -> float:
    """The gateway's own count of upstream attempts, as /metrics shows it."""
    pattern = r"imagegate_upstream_attempts_total\{([^}]*)\} ([0-9.e+]+)"
    for labels, value in re.findall(pattern, render().decode()):
        if f'provider="{provider}"' in labels and f'outcome="{outcome}"' in labels:
            return float(value)
    return 0.0


async def test_each_attempt_is_counted_by_provider_and_outcome(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    before = {(p, o): attempts_counted(p, o) for p in "ab" for o in ("ok", "retryable_error")}
    fakes["a"].fail_status = 500
    await build(fakes, http).route(model(), request())
    after = {key: attempts_counted(*key) - count for key, count in before.items()}
    assert after == {
        ("a", "ok"): 0,
        ("a", "retryable_error"): 1,
        ("b", "ok"): 1,
        ("b", "retryable_error"): 0,
    }


async def test_a_failed_attempt_is_logged_with_provider_status_and_error(
    fakes: dict[str, FakeOpenAI], http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fakes["a"].fail_status = 503
    with caplog.at_level(logging.WARNING, logger="imagegate.routing"):
        await build(fakes, http).route(model(), request())
    logged = [
        (r.getMessage(), getattr(r, "provider", None), getattr(r, "status", None))
        for r in caplog.records
        if r.name == "imagegate.routing"
    ]
    assert logged == [("upstream attempt failed", "a", 503)]
    assert "a returned 503" in getattr(caplog.records[-1], "error", "")


async def test_attempt_latencies_are_measured_in_milliseconds(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["a"].fail_status, fakes["a"].delay_s, fakes["b"].delay_s = 500, 0.1, 0.1
    routed = await build(fakes, http).route(model(), request())
    rows = [a.to_dict() for a in routed.attempts]
    assert [r["status"] for r in rows] == [500, 200]
    # at least the fakes' 100 ms; nowhere near a clock reading or a thousandth of it
    assert all(100 <= float(r["latency_ms"]) < 60_000 for r in rows)  # type: ignore[arg-type]


async def test_an_operation_the_provider_lacks_is_the_callers_error_with_its_attempt(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    router.providers["a"] = GenerateOnly(
        router.providers["a"].config, router.providers["a"].context
    )
    edit = request()
    edit.operation = "edit"
    with pytest.raises(InvalidRequest) as info:
        await router.route(model(), edit)
    err = info.value
    assert err.message == "Provider 'a' does not support edit."
    rows = [a.to_dict() for a in err.attempts]
    assert [(r["provider"], r["status"], r["error"]) for r in rows] == [
        ("a", 400, "Provider 'a' does not support edit.")
    ]
    assert isinstance(rows[0]["latency_ms"], float)
    assert not fakes["a"].calls and not fakes["b"].calls


async def test_a_deadline_already_passed_fails_without_any_attempt(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http, deadline_s=0).route(model(), request())
    err = info.value
    assert err.message == "Every upstream attempt for 't/m' failed (deadline passed)."
    assert err.attempts == [] and err.headers == {}
    assert all(not fake.calls for fake in fakes.values())


async def test_a_retry_after_of_exactly_the_wait_cap_is_waited_out(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["b"].fail_status, fakes["b"].fail_first, fakes["b"].retry_after = 429, 1, "0"
    router = build(fakes, http, max_retry_wait_s=0.0)
    routed = await router.route(model(), request(only=["b"]))
    assert [(a.provider, a.status) for a in routed.attempts] == [("b", 429), ("b", 200)]


async def test_a_retry_after_beyond_the_deadline_fails_at_once_instead_of_sleeping(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["b"].fail_status, fakes["b"].retry_after = 429, "4"
    started = time.monotonic()
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http, deadline_s=1.0).route(model(), request(only=["b"]))
    assert time.monotonic() - started < 3.0  # far below the 4 s it would have slept
    assert info.value.headers == {"Retry-After": "4"}
    assert len(fakes["b"].calls) == 1


async def test_without_hedging_a_slow_endpoint_is_awaited_alone(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)  # hedge off, however much latency history there is
    for _ in range(25):
        router.health.record_success("a", "up-a", 10, images=1)
    fakes["a"].delay_s = 0.2
    routed = await router.route(model(), request())
    assert routed.provider.id == "a" and not fakes["b"].calls


async def test_a_hedged_first_endpoint_that_answers_first_still_wins(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, hedge=True, hedge_min_samples=5)
    for _ in range(5):
        router.health.record_success("a", "up-a", 10, images=1)
    fakes["a"].delay_s, fakes["b"].delay_s = 0.2, 1.0
    routed = await router.route(model(), request())
    assert routed.provider.id == "a"
    # The hedge was started, then cancelled: still on the books, at its worst-case price.
    assert [(a.provider, a.status, a.upstream_model, a.cost_micro) for a in routed.attempts] == [
        ("a", 200, "up-a", 40_000),
        ("b", "cancelled", "up-b", 10_000),
    ]
    assert routed.attempts[1].error == "cancelled while running"
    assert len(fakes["b"].calls) == 1


async def test_no_hedge_goes_to_an_endpoint_whose_breaker_is_open(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, hedge=True, hedge_min_samples=5, threshold=1)
    for _ in range(5):
        router.health.record_success("a", "up-a", 10, images=1)
    fail(router, "b", 1)
    fakes["a"].delay_s = 0.2
    routed = await router.route(model(), request(only=["a", "b"]))
    assert routed.provider.id == "a" and not fakes["b"].calls


async def test_a_timeout_names_every_attempt_in_its_message(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["a"].delay_s = 0.5
    router = build(fakes, http)
    router.providers["a"].config.timeout_s = 0.1
    with pytest.raises(UpstreamTimeout) as info:
        await router.route(model(), request(only=["a"]))
    assert info.value.message == (
        "Every upstream attempt for 't/m' timed out (a: a did not answer within 0.1s)."
    )


async def test_an_exhausted_request_names_each_attempts_error_in_order(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["a"].fail_status, fakes["b"].fail_status = 500, 503
    with pytest.raises(UpstreamFailed) as info:
        await build(fakes, http).route(model(), request(only=["a", "b"]))
    message = info.value.message
    assert message.startswith("Every upstream attempt for 't/m' failed (a: a returned 500: ")
    assert "; b: b returned 503: " in message and message.endswith(").")


async def test_the_routed_result_is_the_upstreams_images(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    routed = await build(fakes, http).route(model(), request())
    assert [(i.width, i.height, i.format) for i in routed.result.images] == [(256, 256, "png")]


async def test_a_429_is_waited_out_for_its_retry_after(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    fakes["b"].fail_status, fakes["b"].fail_first, fakes["b"].retry_after = 429, 1, "0.2"
    started = time.monotonic()
    routed = await build(fakes, http).route(model(), request(only=["b"]))
    assert time.monotonic() - started >= 0.2  # a sleep never ends early
    assert [a.status for a in routed.attempts] == [429, 200]


async def test_a_hedged_first_endpoint_that_fails_leaves_the_hedge_to_finish(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, hedge=True, hedge_min_samples=5)
    for _ in range(5):
        router.health.record_success("a", "up-a", 10, images=1)
    fakes["a"].fail_status, fakes["a"].delay_s, fakes["b"].delay_s = 500, 0.1, 0.3
    routed = await router.route(model(), request())
    assert routed.provider.id == "b" and not fakes["c"].calls


def test_refusals_before_any_attempt_explain_themselves(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http)
    with pytest.raises(InsufficientCredits) as unpriced:
        planned(router, a=None, b=None, c=None)
    assert unpriced.value.message == (
        "Model 't/m' has no price configured for any available endpoint, so it cannot be "
        "billed; the operator must set a price or `free: true` in its endpoint's `pricing`."
    )
    with pytest.raises(NoProviderAvailable) as nothing:
        planned(router, request(only=["x"]))
    assert nothing.value.message == (
        "No provider is available for model 't/m' with these routing preferences."
    )


async def test_every_breaker_open_says_to_try_again_shortly(
    fakes: dict[str, FakeOpenAI], http: Any
) -> None:
    router = build(fakes, http, threshold=1)
    for name in "abc":
        fail(router, name, 1)
    with pytest.raises(NoProviderAvailable) as info:
        await router.route(model(), request())
    assert info.value.message == (
        "Every endpoint for 't/m' is failing (circuit breakers open, or the upstream model "
        "is gone); try again shortly."
    )
