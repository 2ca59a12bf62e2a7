"""Per-key rate limits: requests/min, images/min and concurrent requests.

Requests and images are token buckets that refill continuously (a limit of 60/min
refills one token a second), which is what OpenAI's ``x-ratelimit-*`` headers describe:
what is left now and how long until the bucket is full again. Concurrency is a set of
in-flight request ids, each with an expiry so that a worker that dies cannot hold a slot
for ever. :class:`MemoryRateLimiter` keeps the state in this process;
:class:`RedisRateLimiter` keeps it in Redis with Lua scripts, so every worker on every host
shares one limit and one check-and-take is atomic.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from imagegate.accounts.keys import ApiKey
from imagegate.core.errors import RateLimited

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    ipm: int | None = None
    concurrent: int | None = None

    @classmethod
    def of(cls, key: ApiKey) -> Limits:
        return cls(key.rpm, key.ipm, key.max_concurrent)

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.ipm or self.concurrent)


@dataclass(slots=True)
class Permit:
    """An admitted request: its headers, and its concurrency slot to give back."""

    key_id: str
    request_id: str
    headers: dict[str, str] = field(default_factory=dict)
    holds_slot: bool = False


@dataclass(frozen=True, slots=True)
class BucketState:
    """One bucket after a check: tokens left and the seconds until it is full."""

    limit: int
    remaining: float

    @property
    def reset_s(self) -> float:
        return (self.limit - self.remaining) * WINDOW_S / self.limit


class RateLimiter(ABC):
    """A limiter's front: keys without limits pass untouched; the rest are its buckets'."""

    async def acquire(
        self,
        key: ApiKey,
        images: int,
        request_id: str,
        *,
        requests: int = 1,
        slot: bool = True,
        consume: bool = True,
    ) -> Permit:
        """Check-and-take ``requests`` request tokens, ``images`` image tokens and (with
        ``slot``) a concurrency slot; ``consume=False`` checks the buckets without taking."""
        limits = Limits.of(key)
        permit = Permit(key.id, request_id)
        if limits.any:
            await self._take(limits, permit, images, requests, slot, consume)
        return permit

    @abstractmethod
    async def _take(
        self, limits: Limits, permit: Permit, images: int, requests: int, slot: bool, consume: bool
    ) -> None:
        """Admit ``permit`` (filling its headers and slot) or raise ``RateLimited``."""

    @abstractmethod
    async def release(self, permit: Permit) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``120ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def limit_headers(requests: BucketState | None, images: BucketState | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, state in (("requests", requests), ("images", images)):
        if state is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(state.remaining)))
            headers[f"x-ratelimit-reset-{name}"] = format_duration(state.reset_s)
    return headers


def refuse(
    limits: Limits,
    images: int,
    requests: BucketState | None,
    image_state: BucketState | None,
    wait_s: float,
    wanted_requests: int = 1,
) -> RateLimited:
    """The 429 for a bucket that cannot cover this request now."""
    headers = limit_headers(requests, image_state)
    headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
    if limits.ipm is not None and images > limits.ipm:
        return RateLimited(
            f"This request asks for {images} images but the key's limit is {limits.ipm} "
            "images per minute; ask for fewer images.",
            param="n",
            code="images_per_minute_exceeded",
            headers=headers,
        )
    if requests is not None and requests.remaining < wanted_requests:
        what, code = f"{limits.rpm} requests per minute", "requests_per_minute_exceeded"
    else:
        what, code = f"{limits.ipm} images per minute", "images_per_minute_exceeded"
    return RateLimited(
        f"Rate limit reached for this API key: {what}. Try again in {headers['Retry-After']}s.",
        code=code,
        headers=headers,
    )


def refuse_concurrency(limits: Limits) -> RateLimited:
    return RateLimited(
        f"This API key already has {limits.concurrent} requests in flight, its limit; "
        "wait for one to finish.",
        code="concurrency_limit_exceeded",
        headers={"Retry-After": "1"},
    )


class MemoryRateLimiter(RateLimiter):
    """Buckets and slots in this process (one worker)."""

    def __init__(self, slot_ttl_s: float, clock: Any = time.monotonic) -> None:
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._slot_ttl_s = slot_ttl_s
        self._clock = clock

    def _peek(self, key_id: str, kind: str, limit: int | None, now: float) -> float | None:
        if not limit:
            return None
        tokens, stamp = self._buckets.get((key_id, kind), (float(limit), now))
        return min(float(limit), tokens + (now - stamp) * limit / WINDOW_S)

    async def _take(
        self, limits: Limits, permit: Permit, images: int, requests: int, slot: bool, consume: bool
    ) -> None:
        key_id, request_id = permit.key_id, permit.request_id
        now = self._clock()
        req_tokens = self._peek(key_id, "req", limits.rpm, now)
        img_tokens = self._peek(key_id, "img", limits.ipm, now)
        wait = _wait(limits, images, req_tokens, img_tokens, requests)
        if wait is not None:
            states = _states(limits, req_tokens, img_tokens)
            raise refuse(limits, images, *states, wait, requests)
        if limits.concurrent and slot:
            slots = self._slots.setdefault(key_id, {})
            for rid in [rid for rid, exp in slots.items() if exp <= now]:
                del slots[rid]
            if len(slots) >= limits.concurrent:
                raise refuse_concurrency(limits)
            slots[request_id] = now + self._slot_ttl_s
            permit.holds_slot = True
        if req_tokens is not None and consume:
            req_tokens -= requests
            self._buckets[(key_id, "req")] = (req_tokens, now)
        if img_tokens is not None and consume:
            img_tokens -= images
            self._buckets[(key_id, "img")] = (img_tokens, now)
        permit.headers = limit_headers(*_states(limits, req_tokens, img_tokens))

    async def release(self, permit: Permit) -> None:
        if permit.holds_slot:
            self._slots.get(permit.key_id, {}).pop(permit.request_id, None)

    async def aclose(self) -> None:
        return None


def _wait(
    limits: Limits,
    images: int,
    req_tokens: float | None,
    img_tokens: float | None,
    requests: int = 1,
) -> float | None:
    """Seconds until both buckets can cover the request, or None if they can now."""
    wait = 0.0
    if req_tokens is not None and limits.rpm and req_tokens < requests:
        wait = max(wait, (min(requests, limits.rpm) - req_tokens) * WINDOW_S / limits.rpm)
        if requests > limits.rpm:
            wait = max(wait, WINDOW_S)
    if img_tokens is not None and limits.ipm and img_tokens < images:
        wait = max(wait, (min(images, limits.ipm) - img_tokens) * WINDOW_S / limits.ipm)
        if images > limits.ipm:
            wait = max(wait, WINDOW_S)
    return wait if wait > 0 else None


def _states(
    limits: Limits, req_tokens: float | None, img_tokens: float | None
) -> tuple[BucketState | None, BucketState | None]:
    return (
        BucketState(limits.rpm, req_tokens) if limits.rpm and req_tokens is not None else None,
        BucketState(limits.ipm, img_tokens) if limits.ipm and img_tokens is not None else None,
    )


# KEYS: requests bucket, images bucket, slots set. ARGV: rpm, ipm, images, concurrent,
# request id, slot ttl, requests, consume (1 take tokens, 0 only check them). Returns
# {status, req tokens, img tokens, wait} with status 1 admitted, 0 over a bucket, -1 over
# the concurrency limit (numbers as strings: Redis would truncate Lua floats).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, ipm, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local conc, rid, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local nr, consume = tonumber(ARGV[7]), tonumber(ARGV[8])
local function peek(key, limit)
  if limit <= 0 then return nil end
  local v = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then return limit end
  return math.min(limit, tokens + (now - ts) * limit / 60)
end
local rt, it = peek(KEYS[1], rpm), peek(KEYS[2], ipm)
local wait = 0
if rt and rt < nr then
  wait = math.max(wait, (math.min(nr, rpm) - rt) * 60 / rpm)
  if nr > rpm then wait = math.max(wait, 60) end
end
if it and it < n then
  wait = math.max(wait, (math.min(n, ipm) - it) * 60 / ipm)
  if n > ipm then wait = math.max(wait, 60) end
end
if wait > 0 then
  return {0, tostring(rt or -1), tostring(it or -1), tostring(wait)}
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then
    return {-1, tostring(rt or -1), tostring(it or -1), '1'}
  end
  redis.call('ZADD', KEYS[3], now + ttl, rid)
  redis.call('EXPIRE', KEYS[3], math.ceil(ttl) + 60)
end
if rt and consume == 1 then
  rt = rt - nr
  redis.call('HSET', KEYS[1], 'tokens', tostring(rt), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[1], 120)
end
if it and consume == 1 then
  it = it - n
  redis.call('HSET', KEYS[2], 'tokens', tostring(it), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[2], 120)
end
return {1, tostring(rt or -1), tostring(it or -1), '0'}
"""


class RedisRateLimiter(RateLimiter):
    """Buckets and slots in Redis: one limit for every worker and host."""

    def __init__(self, redis: Any, slot_ttl_s: float, prefix: str = "imagegate:rl") -> None:
        self._redis = redis
        self._slot_ttl_s = slot_ttl_s
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)

    async def _take(
        self, limits: Limits, permit: Permit, images: int, requests: int, slot: bool, consume: bool
    ) -> None:
        """One atomic script in Redis."""
        concurrent = (limits.concurrent or 0) if slot else 0
        p = f"{self._prefix}:{permit.key_id}"
        status, req, img, wait = await self._acquire(
            keys=[f"{p}:req", f"{p}:img", f"{p}:slots"],
            args=[
                limits.rpm or 0,
                limits.ipm or 0,
                images,
                concurrent,
                permit.request_id,
                self._slot_ttl_s,
                requests,
                1 if consume else 0,
            ],
        )
        req_tokens = float(req) if limits.rpm else None
        img_tokens = float(img) if limits.ipm else None
        if int(status) == -1:
            raise refuse_concurrency(limits)
        if int(status) == 0:
            states = _states(limits, req_tokens, img_tokens)
            raise refuse(limits, images, *states, float(wait), requests)
        permit.holds_slot = bool(concurrent)
        permit.headers = limit_headers(*_states(limits, req_tokens, img_tokens))

    async def release(self, permit: Permit) -> None:
        if permit.holds_slot:
            await self._redis.zrem(f"{self._prefix}:{permit.key_id}:slots", permit.request_id)

    async def aclose(self) -> None:
        await self._redis.aclose()
