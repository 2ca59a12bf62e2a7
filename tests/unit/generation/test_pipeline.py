"""The generation pipeline in process: one pipeline, a JSON sink or an event sink.

Driven with the built-in sandbox engine (priced here, so money moves) and a real SQLite
ledger built by ``app.build_gateway``; the sinks are the pipeline's two real shapes, not
stand-ins for our code. Every test ends with the books' invariant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.concurrency import run_in_threadpool

from books import assert_books_balance
from imagegate.accounts.keys import ApiKey
from imagegate.api.state import Gateway
from imagegate.app import build_gateway, close_gateway
from imagegate.catalog.rules import resolve_request
from imagegate.config import load_settings
from imagegate.core.types import RequestFields
from imagegate.generation.pipeline import Collected, Generation

MODEL = "test/priced"
PRICE_MICRO = 40_000  # per image, below
CONFIG = f"""
models:
  - id: {MODEL}
    operations: [generate, edit]
    free_size: {{min_side: 64, max_side: 1024}}
    default_size: 256x256
    endpoints:
      - {{provider: sandbox, upstream_model: sandbox, pricing: {{per_image: 0.04}}}}
"""


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    config = tmp_path / "imagegate.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path))
    for name in ("IMAGEGATE_DATABASE_URL", "IMAGEGATE_REDIS_URL", "IMAGEGATE_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    gateway = await build_gateway(load_settings(config))
    try:
        yield gateway
    finally:
        await close_gateway(gateway)


def _request(*, stream: bool, partial_images: int | None = None) -> RequestFields:
    return RequestFields(
        operation="generate",
        model=MODEL,
        prompt="a lighthouse at dusk",
        size="256x256",
        seed=7,
        stream=stream,
        partial_images=partial_images,
        usage=True,
        meta=True,
    )


async def _unguarded(work: Awaitable[Any]) -> Any:
    return await work


async def _open(gw: Gateway, key: ApiKey, fields: RequestFields) -> Generation:
    spec = gw.catalog.resolve(fields.model)
    req = resolve_request(spec, fields)
    return await Generation.open(gw, req, spec, key, None, guard=_unguarded, base_url="http://gw")


class Events:
    """The event sink's contract, as the SSE transport keeps it: each event handed over as
    it comes; it records the key's open holds when the completed event was handed over."""

    delivers = True

    def __init__(self, gw: Gateway, key: ApiKey, leave_at_completed: bool = False) -> None:
        self.gw, self.key = gw, key
        self.leave_at_completed = leave_at_completed
        self.partials: list[dict[str, Any]] = []
        self.completed_events: list[dict[str, Any]] = []
        self.holds_at_completed: int | None = None

    async def partial(self, event: dict[str, Any]) -> None:
        self.partials.append(event)

    async def completed(self, payloads: list[dict[str, Any]]) -> None:
        self.holds_at_completed = await run_in_threadpool(self.gw.ledger.open_holds, self.key.id)
        if self.leave_at_completed:  # the client went away before the event was written
            raise asyncio.CancelledError
        self.completed_events.extend(payloads)


def _key(gw: Gateway) -> ApiKey:
    key, _ = gw.keys.create("pipeline", credits_usd=1.0)
    return key


async def test_json_and_sse_sinks_charge_and_record_the_same(gw: Gateway) -> None:
    key = _key(gw)
    start = gw.ledger.balance(key.id)
    assert start == 1_000_000

    as_json = await _open(gw, key, _request(stream=False))
    body = Collected()
    await as_json.run(body)
    after_json = gw.ledger.balance(key.id)

    as_sse = await _open(gw, key, _request(stream=True))
    events = Events(gw, key)
    await as_sse.run(events)
    after_sse = gw.ledger.balance(key.id)

    assert start is not None and after_json is not None and after_sse is not None
    assert start - after_json == after_json - after_sse == PRICE_MICRO
    json_usage = gw.usage.get(as_json.charge.generation_id)
    sse_usage = gw.usage.get(as_sse.charge.generation_id)
    assert json_usage is not None and sse_usage is not None
    for usage in (json_usage, sse_usage):
        assert (usage.status, usage.cost_micro, usage.images) == (200, PRICE_MICRO, 1)
        assert (usage.provider, usage.upstream_model) == ("sandbox", "sandbox")

    # One response builder: the same usage and meta, whichever the shape.
    json_body = orjson.loads(body.content)
    (event,) = events.completed_events
    assert event["type"] == "image_generation.completed"
    assert json_body["usage"]["cost_usd"] == event["usage"]["cost_usd"] == 0.04
    assert json_body["usage"]["images"] == event["usage"]["images"] == 1
    assert json_body["meta"]["cost_usd"] == event["meta"]["cost_usd"] == 0.04
    assert json_body["meta"]["provider"] == event["meta"]["provider"] == "sandbox"
    assert json_body["data"][0]["b64_json"] == event["b64_json"]  # same seed, same image
    assert as_json.headers["x-imagegate-cost-usd"] == "0.040000"
    assert_books_balance(gw.db, upstream_calls=2)


async def test_a_stream_settles_after_its_completed_event_is_handed_over(gw: Gateway) -> None:
    key = _key(gw)
    gen = await _open(gw, key, _request(stream=True, partial_images=2))
    events = Events(gw, key)
    await gen.run(events)

    assert [p["partial_image_index"] for p in events.partials] == [0, 1]
    assert all(p["type"] == "image_generation.partial_image" for p in events.partials)
    # Not yet charged when the completed event was handed over; charged once after.
    assert events.holds_at_completed == 1
    assert gw.ledger.balance(key.id) == 1_000_000 - PRICE_MICRO
    assert gw.ledger.open_holds(key.id) == 0
    assert_books_balance(gw.db, upstream_calls=1)


async def test_a_client_that_leaves_before_the_completed_event_is_not_charged(
    gw: Gateway,
) -> None:
    key = _key(gw)
    gen = await _open(gw, key, _request(stream=True))
    with pytest.raises(asyncio.CancelledError):
        await gen.run(Events(gw, key, leave_at_completed=True))

    assert gw.ledger.balance(key.id) == 1_000_000
    assert gw.ledger.open_holds(key.id) == 0
    usage = gw.usage.get(gen.charge.generation_id)
    assert usage is not None
    assert (usage.status, usage.error_code, usage.cost_micro) == (499, "client_disconnected", 0)
    # The upstream call was made and is on record, whatever the caller got.
    assert [a["status"] for a in usage.attempts] == [200]
    assert_books_balance(gw.db, upstream_calls=1)


async def test_a_closed_generation_releases_its_hold_once(gw: Gateway) -> None:
    """What the SSE response does when the client leaves before the body starts."""
    key = _key(gw)
    gen = await _open(gw, key, _request(stream=True))
    assert gw.ledger.open_holds(key.id) == 1
    await gen.close()
    await gen.close()  # a second close (the response's own) changes nothing

    assert gw.ledger.balance(key.id) == 1_000_000
    assert gw.ledger.open_holds(key.id) == 0
    usage = gw.usage.get(gen.charge.generation_id)
    assert usage is not None and usage.status == 499
    assert_books_balance(gw.db, upstream_calls=1)
