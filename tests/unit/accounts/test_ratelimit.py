"""Per-key rate limits, in process and shared through the local Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from imagegate.accounts.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    format_duration,
)
from imagegate.core.errors import RateLimited
from keys_support import limited_key
from manual_clock import Clock

LimiterFactory = Callable[[], RateLimiter]


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(
    request: pytest.FixtureRequest,
) -> AsyncIterator[LimiterFactory]:
    """Limiters that share state the way workers would (one process, or one Redis)."""
    made: list[RateLimiter] = []
    if request.param == "memory":
        shared = MemoryRateLimiter(slot_ttl_s=60)

        def factory() -> RateLimiter:
            return shared
    else:
        import redis.asyncio as aioredis

        url = request.getfixturevalue("redis_url")

        def factory() -> RateLimiter:
            limiter = RedisRateLimiter(aioredis.from_url(url), slot_ttl_s=60)
            made.append(limiter)
            return limiter

    yield factory
    for limiter in made:
        await limiter.aclose()


async def test_requests_per_minute(make_limiter: LimiterFactory) -> None:
    key = limited_key(rpm=3)
    worker_a, worker_b = make_limiter(), make_limiter()
    first = await worker_a.acquire(key, 1, "r1")
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    await worker_b.acquire(key, 1, "r2")
    third = await worker_a.acquire(key, 1, "r3")
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimited) as info:
        await worker_b.acquire(key, 1, "r4")
    error = info.value
    assert error.status == 429 and error.code == "requests_per_minute_exceeded"
    assert 1 <= int(error.headers["Retry-After"]) <= 20  # one token refills in 20 s
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert "3 requests per minute" in error.message


async def test_images_per_minute_counts_n(make_limiter: LimiterFactory) -> None:
    key = limited_key(ipm=5)
    limiter = make_limiter()
    permit = await limiter.acquire(key, 4, "r1")
    assert permit.headers["x-ratelimit-remaining-images"] == "1"
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(key, 2, "r2")
    assert info.value.code == "images_per_minute_exceeded"
    await limiter.acquire(key, 1, "r3")
    with pytest.raises(RateLimited) as too_many:
        await limiter.acquire(limited_key(ipm=5), 6, "r4")
    assert too_many.value.param == "n"


async def test_refused_request_consumes_nothing(make_limiter: LimiterFactory) -> None:
    key = limited_key(rpm=10, ipm=2)
    limiter = make_limiter()
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 3, "big")  # over the image limit
    permit = await limiter.acquire(key, 1, "small")
    assert permit.headers["x-ratelimit-remaining-requests"] == "9"


async def test_concurrency_slots(make_limiter: LimiterFactory) -> None:
    key = limited_key(concurrent=2)
    worker_a, worker_b = make_limiter(), make_limiter()
    one = await worker_a.acquire(key, 1, "r1")
    await worker_b.acquire(key, 1, "r2")
    with pytest.raises(RateLimited) as info:
        await worker_a.acquire(key, 1, "r3")
    assert info.value.code == "concurrency_limit_exceeded"
    await worker_a.release(one)
    await worker_b.acquire(key, 1, "r3")


async def test_no_limits_no_headers(make_limiter: LimiterFactory) -> None:
    permit = await make_limiter().acquire(limited_key(), 10, "r")
    assert permit.headers == {}


async def test_memory_bucket_refills_with_time() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=5, clock=clock)
    key = limited_key(rpm=60)
    permit = await limiter.acquire(key, 1, "r1")
    assert permit.headers["x-ratelimit-reset-requests"] == "1s"
    for i in range(59):
        await limiter.acquire(key, 1, f"x{i}")
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 1, "late")
    clock.now += 1.0  # one token back
    await limiter.acquire(key, 1, "late")


async def test_memory_slot_of_a_dead_request_expires() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=5, clock=clock)
    key = limited_key(concurrent=1)
    await limiter.acquire(key, 1, "never-released")
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 1, "next")
    clock.now += 5.0
    await limiter.acquire(key, 1, "next")


def test_reset_format_matches_openai() -> None:
    assert format_duration(0.12) == "120ms"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(61.25) == "1m1.25s"


async def test_a_check_without_consume_takes_no_tokens_but_a_slot(
    make_limiter: LimiterFactory,
) -> None:
    """Admission (api.admission) checks the buckets before the body, taking only a slot."""
    limiter, key = make_limiter(), limited_key(rpm=1, concurrent=1)
    checked = await limiter.acquire(key, 1, "adm-1", consume=False)
    with pytest.raises(RateLimited):  # the slot is held while the body is read
        await limiter.acquire(key, 1, "adm-2", consume=False)
    await limiter.release(checked)
    await limiter.acquire(key, 1, "req-1")  # the one request token is still there
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(key, 1, "adm-3", consume=False)
    assert refused.value.code in ("requests_per_minute_exceeded", "concurrency_limit_exceeded")


async def test_input_fetches_take_request_tokens_without_a_slot(
    make_limiter: LimiterFactory,
) -> None:
    limiter, key = make_limiter(), limited_key(rpm=2, concurrent=1)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(key, 0, "f-1", requests=3, slot=False)
    assert refused.value.code == "requests_per_minute_exceeded"
    await limiter.acquire(key, 0, "f-2", requests=2, slot=False)
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 1, "req-1")
