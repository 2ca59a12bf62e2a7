"""Breaker state shared between workers through the local Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from imagegate.routing.health import BreakerSettings, BreakerState, HealthBook
from imagegate.routing.shared_health import RedisBreakerSync

Worker = tuple[HealthBook, RedisBreakerSync]


@asynccontextmanager
async def two_workers(
    redis_url: str, settings: BreakerSettings
) -> AsyncIterator[tuple[Worker, Worker]]:
    """Two workers' health books, each synced through the same fresh Redis key."""
    key = f"imagegate:test:breakers:{uuid.uuid4().hex}"
    book_a, book_b = HealthBook(settings), HealthBook(settings)
    sync_a = RedisBreakerSync(aioredis.from_url(redis_url), book_a, key=key)
    sync_b = RedisBreakerSync(aioredis.from_url(redis_url), book_b, key=key)
    try:
        yield (book_a, sync_a), (book_b, sync_b)
    finally:
        await sync_a.aclose()
        await sync_b.aclose()
        cleanup = aioredis.from_url(redis_url)
        await cleanup.delete(key)
        await cleanup.aclose()


async def test_a_breaker_opened_by_one_worker_opens_for_all(redis_url: str) -> None:
    settings = BreakerSettings(failure_threshold=2, cooldown_s=30)
    async with two_workers(redis_url, settings) as ((book_a, sync_a), (book_b, sync_b)):
        book_a.record_failure("up", "m")
        book_a.record_failure("up", "m")
        assert book_a.state("up", "m") is BreakerState.OPEN
        await asyncio.sleep(0.05)  # the write is sent in the background
        assert book_b.state("up", "m") is BreakerState.CLOSED
        assert await sync_b.poll_once() == 1
        assert book_b.state("up", "m") is BreakerState.OPEN
        assert not book_b.admit("up", "m")
        assert await sync_b.poll_once() == 0  # nothing newer
        assert await sync_a.poll_once() == 0  # its own verdict is not re-applied

        # Worker B's probe after the cooldown succeeds: A closes too.
        book_b.record_success("up", "m", 10.0, 1)
        await asyncio.sleep(0.05)
        assert await sync_a.poll_once() == 1
        assert book_a.state("up", "m") is BreakerState.CLOSED


async def test_an_opening_older_than_the_cooldown_is_ignored(redis_url: str) -> None:
    settings = BreakerSettings(failure_threshold=1, cooldown_s=0.1)
    async with two_workers(redis_url, settings) as ((book_a, _), (book_b, sync_b)):
        book_a.record_failure("up", "m")
        await asyncio.sleep(0.2)
        await sync_b.poll_once()
        assert book_b.state("up", "m") is BreakerState.CLOSED
