"""Breaker state shared between workers through Redis (``IMAGEGATE_REDIS_URL``).

Each worker keeps its own :class:`HealthBook` (EWMAs and failure counts stay local: they
are cheap to relearn), but when one worker opens or closes a breaker it writes that to a
Redis hash at once, and every worker polls the hash every ``interval_s`` and adopts newer
verdicts of other workers. So an upstream that one worker found down is skipped by all
within about a second, and one probe's success reopens it for all. If Redis is unreachable
the workers carry on with their local view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson

from imagegate.routing.health import BreakerState, HealthBook

log = logging.getLogger("imagegate.routing")

_SEP = "\x1f"


class RedisBreakerSync:
    def __init__(
        self,
        redis: Any,
        health: HealthBook,
        *,
        key: str = "imagegate:breakers",
        interval_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._health = health
        self._key = key
        self._interval_s = interval_s
        self._worker = secrets.token_hex(6)
        self._seen: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()
        health.on_change = self._changed

    def _changed(self, provider: str, model: str, state: BreakerState) -> None:
        field = f"{provider}{_SEP}{model}"
        now = time.time()
        self._seen[field] = now
        value = orjson.dumps({"state": state.value, "at": now, "by": self._worker})
        try:
            task = asyncio.get_running_loop().create_task(self._write(field, value))
        except RuntimeError:  # no loop (a synchronous caller): the next poll won't see it
            return
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, field: str, value: bytes) -> None:
        try:
            await self._redis.hset(self._key, field, value)
        except Exception as exc:
            log.warning("could not share breaker state", extra={"error": str(exc)})

    async def poll_once(self) -> int:
        """Adopt other workers' newer verdicts; returns how many were applied."""
        applied = 0
        entries = await self._redis.hgetall(self._key)
        now = time.time()
        for raw_field, raw_value in entries.items():
            field = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
            try:
                value = orjson.loads(raw_value)
                provider, model = field.split(_SEP, 1)
                state = BreakerState(value["state"])
                at = float(value["at"])
            except (ValueError, KeyError, TypeError):
                continue
            if value.get("by") == self._worker or at <= self._seen.get(field, 0.0):
                continue
            self._seen[field] = at
            self._health.apply_shared(provider, model, state, max(0.0, now - at))
            applied += 1
        return applied

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.poll_once()
            except Exception as exc:
                log.warning("could not read shared breaker state", extra={"error": str(exc)})
            await asyncio.sleep(self._interval_s)

    async def aclose(self) -> None:
        for task in list(self._writes):
            with contextlib.suppress(Exception):
                await task
        await self._redis.aclose()
