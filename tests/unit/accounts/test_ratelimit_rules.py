"""Rate-limit rules as a caller meets them: each key has its own buckets and slots, a 429
names what ran out (``code``, ``param``) and when to come back (``Retry-After``), and the
``x-ratelimit-*`` headers say what is left. Time is a manual clock: nothing sleeps."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from imagegate.accounts.keys import ApiKey
from imagegate.accounts.ratelimit import (
    BucketState,
    Limits,
    MemoryRateLimiter,
    Permit,
    RateLimiter,
    RedisRateLimiter,
    format_duration,
    limit_headers,
)
from imagegate.core.errors import RateLimited
from keys_support import limited_key
from manual_clock import Clock


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter(slot_ttl_s=60)
        return
    import redis.asyncio as aioredis

    shared = RedisRateLimiter(aioredis.from_url(request.getfixturevalue("redis_url")), 60)
    yield shared
    await shared.aclose()


async def refused(limiter: RateLimiter, k: ApiKey, images: int = 1) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(k, images, uuid.uuid4().hex)
    return info.value


# -- one key's limit never touches another's ----------------------------------------------


async def test_each_key_has_its_own_request_bucket(limiter: RateLimiter) -> None:
    a, b = limited_key(rpm=2), limited_key(rpm=2)
    await limiter.acquire(a, 1, "a1")
    await limiter.acquire(a, 1, "a2")
    err = await refused(limiter, a)
    assert (err.status, err.code, err.param) == (429, "requests_per_minute_exceeded", None)
    assert "2 requests per minute" in err.message
    permit = await limiter.acquire(b, 1, "b1")
    assert permit.headers["x-ratelimit-remaining-requests"] == "1"


async def test_each_key_has_its_own_image_bucket(limiter: RateLimiter) -> None:
    a, b = limited_key(ipm=4), limited_key(ipm=4)
    await limiter.acquire(a, 3, "a1")
    err = await refused(limiter, a, 2)
    assert (err.code, err.param) == ("images_per_minute_exceeded", None)
    assert "4 images per minute" in err.message
    assert err.headers["x-ratelimit-remaining-images"] == "1"
    permit = await limiter.acquire(b, 4, "b1")  # exactly the limit: admitted
    assert permit.headers["x-ratelimit-remaining-images"] == "0"
    assert "x-ratelimit-limit-requests" not in permit.headers


async def test_each_key_has_its_own_concurrency_slots(limiter: RateLimiter) -> None:
    a, b = limited_key(concurrent=1), limited_key(concurrent=1)
    held = await limiter.acquire(a, 1, "a1")
    assert held.holds_slot
    err = await refused(limiter, a)
    assert (err.code, err.headers) == ("concurrency_limit_exceeded", {"Retry-After": "1"})
    assert err.message == (
        "This API key already has 1 requests in flight, its limit; wait for one to finish."
    )
    other = await limiter.acquire(b, 1, "b1")
    await limiter.release(other)  # releasing b's slot gives a nothing
    await refused(limiter, a)
    await limiter.release(held)
    await limiter.release(held)  # a second release of the same permit is harmless
    assert (await limiter.acquire(a, 1, "a2")).holds_slot


async def test_a_request_over_the_image_limit_itself_is_refused_naming_n(
    limiter: RateLimiter,
) -> None:
    err = await refused(limiter, limited_key(ipm=3, rpm=100), 4)
    assert (err.code, err.param) == ("images_per_minute_exceeded", "n")
    assert err.message == (
        "This request asks for 4 images but the key's limit is 3 images per minute; "
        "ask for fewer images."
    )
    assert err.headers["Retry-After"] == "60"


async def test_a_key_without_limits_is_admitted_without_headers_or_a_slot(
    limiter: RateLimiter,
) -> None:
    permit = await limiter.acquire(limited_key(), 100, "r")
    assert permit == Permit(permit.key_id, "r", {}, False)


async def test_a_refused_request_takes_no_slot(limiter: RateLimiter) -> None:
    k = limited_key(rpm=1, concurrent=1)
    first = await limiter.acquire(k, 1, "r1")
    await limiter.release(first)
    await refused(limiter, k)  # over rpm: refused before a slot is taken
    other = limited_key(ipm=1, concurrent=1)
    await refused(limiter, other, 2)
    assert (await limiter.acquire(other, 1, "ok")).holds_slot


# -- numbers in the headers and the 429 (memory limiter, manual clock) -------------------


async def test_headers_after_each_request_count_down_and_say_when_full() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=60, clock=clock)
    k = limited_key(rpm=4, ipm=10)
    permit = await limiter.acquire(k, 3, "r1")
    assert permit.headers == {
        "x-ratelimit-limit-requests": "4",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "15s",
        "x-ratelimit-limit-images": "10",
        "x-ratelimit-remaining-images": "7",
        "x-ratelimit-reset-images": "18s",
    }
    clock.now += 6  # 0.4 request and 1 image back
    permit = await limiter.acquire(k, 1, "r2")
    assert permit.headers["x-ratelimit-remaining-requests"] == "2"  # 2.4 left, floored
    assert permit.headers["x-ratelimit-remaining-images"] == "7"
    assert permit.headers["x-ratelimit-reset-requests"] == "24s"


async def test_retry_after_is_the_wait_for_the_missing_tokens_rounded_up() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=60, clock=clock)
    k = limited_key(rpm=3)
    for i in range(3):
        await limiter.acquire(k, 1, f"r{i}")
    assert (await refused(limiter, k)).headers["Retry-After"] == "20"
    clock.now += 19.5
    assert (await refused(limiter, k)).headers["Retry-After"] == "1"
    clock.now += 0.5
    await limiter.acquire(k, 1, "back")
    images = limited_key(ipm=6)
    await limiter.acquire(images, 5, "i1")
    err = await refused(limiter, images, 4)  # 1 left, 3 missing at 10 s each
    assert err.headers["Retry-After"] == "30"
    assert err.headers["x-ratelimit-reset-images"] == "50s"


async def test_when_both_buckets_are_short_the_longer_wait_wins() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=60, clock=clock)
    k = limited_key(rpm=2, ipm=2)
    await limiter.acquire(k, 1, "r1")
    await limiter.acquire(k, 1, "r2")
    err = await refused(limiter, k, 2)  # a request back in 30 s, two images in 60 s
    assert (err.code, err.headers["Retry-After"]) == ("requests_per_minute_exceeded", "60")
    other = limited_key(rpm=1, ipm=6)
    await limiter.acquire(other, 6, "o1")
    err = await refused(limiter, other, 1)  # a request back in 60 s, an image in 10 s
    assert (err.code, err.headers["Retry-After"]) == ("requests_per_minute_exceeded", "60")
    third = limited_key(rpm=60, ipm=1)
    await limiter.acquire(third, 1, "t1")
    err = await refused(limiter, third, 1)
    assert (err.code, err.headers["Retry-After"]) == ("images_per_minute_exceeded", "60")


async def test_a_bucket_never_refills_beyond_its_limit() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=60, clock=clock)
    k = limited_key(rpm=2)
    await limiter.acquire(k, 1, "r1")
    clock.now += 3600
    permit = await limiter.acquire(k, 1, "r2")
    assert permit.headers["x-ratelimit-remaining-requests"] == "1"


async def test_a_dead_requests_slot_frees_exactly_at_its_ttl() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=5, clock=clock)
    a, b = limited_key(concurrent=1), limited_key(concurrent=2)
    await limiter.acquire(a, 1, "never-released")
    await limiter.acquire(b, 1, "b1")
    clock.now = 1004.999
    await refused(limiter, a)
    clock.now = 1005.0
    assert (await limiter.acquire(a, 1, "next")).holds_slot
    await limiter.acquire(b, 1, "b2")  # b: two slots, one expired and one new
    await refused(limiter, a)


def test_limits_of_a_key_and_whether_any_applies() -> None:
    assert Limits.of(limited_key(rpm=1, ipm=2, concurrent=3)) == Limits(1, 2, 3)
    assert not Limits().any
    assert Limits(rpm=1).any and Limits(ipm=1).any and Limits(concurrent=1).any


async def test_a_request_for_exactly_the_image_limit_waits_only_for_missing_images() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=60, clock=clock)
    k = limited_key(ipm=2)
    await limiter.acquire(k, 1, "r1")
    err = await refused(limiter, k, 2)  # one image back in 30 s covers it
    assert (err.headers["Retry-After"], err.param) == ("30", None)


async def test_a_refusal_names_the_images_when_one_request_is_still_left() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(slot_ttl_s=60, clock=clock)
    k = limited_key(rpm=2, ipm=2)
    await limiter.acquire(k, 1, "r1")  # one request and one image left
    err = await refused(limiter, k, 2)
    assert err.code == "images_per_minute_exceeded"
    assert err.message == (
        "Rate limit reached for this API key: 2 images per minute. Try again in 30s."
    )
    assert err.headers["x-ratelimit-remaining-requests"] == "1"


async def test_shared_buckets_live_under_the_imagegate_prefix_in_redis(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    limiter = RedisRateLimiter(aioredis.from_url(redis_url), slot_ttl_s=60)
    try:
        k = limited_key(rpm=5, ipm=5, concurrent=2)
        await limiter.acquire(k, 1, "r1")
        for part in ("req", "img", "slots"):
            assert await client.exists(f"imagegate:rl:{k.id}:{part}") == 1
    finally:
        await limiter.aclose()
        await client.aclose()


def test_reset_durations_in_openais_format() -> None:
    assert format_duration(1.23456) == "1.235s"
    assert format_duration(61.23456) == "1m1.235s"
    assert format_duration(0) == "0ms"
    assert format_duration(-1) == "0ms"
    assert format_duration(0.0001) == "1ms"
    assert format_duration(0.5) == "500ms"
    assert format_duration(1) == "1s"
    assert format_duration(59.5) == "59.5s"
    assert format_duration(60) == "1m0s"
    assert format_duration(125.5) == "2m5.5s"
    assert BucketState(limit=10, remaining=4).reset_s == 36.0


def test_limit_headers_floor_what_remains_and_never_go_negative() -> None:
    headers = limit_headers(BucketState(5, 2.9), BucketState(4, -1.5))
    assert headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "25.2s",
        "x-ratelimit-limit-images": "4",
        "x-ratelimit-remaining-images": "0",
        "x-ratelimit-reset-images": "1m22.5s",
    }
    assert limit_headers(None, None) == {}
