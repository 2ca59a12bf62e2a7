"""Upstreams that answer a submission with a task to poll (fal's queue, Replicate's
predictions, BFL): the polling budget and options read the same way everywhere."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from imagegate.providers._shared.common import poll
from imagegate.providers.base import Provider

T = TypeVar("T")


async def poll_task(
    provider: Provider,
    check: Callable[[], Awaitable[T | None]],
    *,
    interval_s: float,
    started: float | None = None,
) -> T:
    """Call ``check`` until it returns a value, every ``options.poll_interval_s`` (else
    ``interval_s``) seconds, backing off. The budget is ``options.poll_timeout_s``, else
    what is left of ``timeout_s`` since ``started`` (a monotonic time; None: all of it);
    running out raises ``poll``'s timeout ``UpstreamError`` (a 504 attempt)."""
    options = provider.config.options
    budget = provider.config.timeout_s
    if started is not None:
        budget = max(1.0, budget - (time.monotonic() - started) - 1.0)
    return await poll(
        check,
        interval_s=float(options.get("poll_interval_s", interval_s)),
        timeout_s=float(options.get("poll_timeout_s", budget)),
        provider_id=provider.id,
    )
