"""The generation use case, one pipeline for JSON and SSE alike.

admit (api) -> plan -> hold (``Charge.open``) -> route/failover (``Router``, following the
plan the hold was sized from) -> conform -> host -> price -> settle -> respond.

``generate`` drives it for a JSON response; ``generation.stream.StreamSession`` drives the
same stages for a stream, its events being the sink. :func:`price` and :func:`settle` are
the only places a request is priced and settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from sqlalchemy import Connection

from imagegate.accounts.keys import ApiKey
from imagegate.catalog.spec import EndpointSpec, ModelSpec
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult
from imagegate.generation.charging import Charge
from imagegate.generation.output import conform_output, output_bytes
from imagegate.generation.record import Record
from imagegate.generation.render import response_body
from imagegate.generation.services import Services
from imagegate.obs import metrics
from imagegate.providers.base import Capabilities
from imagegate.routing.plan import Routed

# Awaits the routing, cancelling it when the client leaves or the server's drain runs out.
Guard = Callable[[Coroutine[Any, Any, Routed]], Awaitable[Routed]]


async def price(
    req: ImageRequest, capabilities: Capabilities, endpoint: EndpointSpec, result: ImageResult
) -> tuple[ImageResult, int]:
    """Conform the images to what was asked for, then price what will be delivered."""
    images = await conform_output(result.images, req, capabilities)
    produced = dataclasses.replace(result, images=images)
    return produced, endpoint.pricing.cost_micro(req, produced)


async def settle(
    charge: Charge,
    model_id: str,
    provider_id: str,
    upstream_model: str,
    cost_micro: int,
    images: int,
    also: Callable[[Connection], None] | None = None,
) -> int:
    """Charge ``cost_micro`` (an excess over the hold is an ``adjust`` row, never a cap),
    record the request, count it; returns what was charged."""
    charged = await charge.succeed(provider_id, upstream_model, cost_micro, images, also)
    metrics.record_generation(model_id, provider_id, images, charged / 1_000_000)
    return charged


async def generate(
    svc: Services,
    req: ImageRequest,
    spec: ModelSpec,
    key: ApiKey,
    record: Record | None,
    *,
    guard: Guard,
    base_url: str,
    on_routed: Callable[[str], None],
) -> tuple[bytes, dict[str, str]]:
    """Hold, route, settle: the request is charged exactly when it returns a response.

    The response (and its idempotency record) is ready before the settlement, which stores
    the record in its own transaction; nothing after the settlement can fail the request.
    """
    started = time.perf_counter()
    charge = await Charge.open(svc, key, spec, req)
    assert charge.plan is not None
    try:
        routed = await guard(svc.router.route(spec, req, charge.plan))
        on_routed(routed.provider.id)
        produced, cost_micro = await price(
            req, routed.provider.capabilities, routed.endpoint, routed.result
        )
        images = produced.images
        urls: list[str | None] = [None] * len(images)
        if req.response_format == "url":
            urls = [await host(svc, base_url, img) for img in images]
        content, headers = _render(req, spec, charge, routed, produced, urls, cost_micro, started)
        also = None
        if record is not None:
            also = record.writer(await record.prepare(200, headers, orjson.loads(content)))
    except BaseException as exc:
        await charge.fail(exc)
        raise
    provider, upstream = routed.provider.id, routed.endpoint.upstream_model
    charging = settle(charge, spec.id, provider, upstream, cost_micro, len(images), also)
    await _to_the_end(charging, record)
    return content, headers


def _render(
    req: ImageRequest,
    spec: ModelSpec,
    charge: Charge,
    routed: Routed,
    produced: ImageResult,
    urls: list[str | None],
    cost_micro: int,
    started: float,
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers, at the cost the settlement will charge."""
    cost = cost_micro / 1_000_000
    body = response_body(
        req,
        routed,
        produced,
        urls,
        model_id=spec.id,
        generation_id=charge.generation_id,
        cost_usd=cost,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    headers = {
        **charge.headers,
        "x-imagegate-provider": routed.provider.id,
        "x-imagegate-cost-usd": f"{cost:.6f}",
        "x-imagegate-generation-id": charge.generation_id,
    }
    return orjson.dumps(body), headers


async def _to_the_end(settling: Coroutine[Any, Any, int], record: Record | None) -> None:
    """Run the settlement to its end even if this request is cancelled meanwhile, so that
    whether the idempotency record may be abandoned is known, never guessed."""
    task = asyncio.ensure_future(settling)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        if record is not None and task.done() and task.exception() is None:
            record.settled()
        raise
    if record is not None:
        record.settled()


async def host(svc: Services, base: str, image: GeneratedImage) -> str:
    """Store one image and return its URL: the store's own (e.g. presigned S3), else a
    signed gateway URL."""
    file_id = await svc.store.put(output_bytes(image), image.format)
    direct = await svc.store.public_url(file_id, svc.settings.url_ttl_s)
    if direct is not None:  # downloads bypass the gateway
        return direct
    exp = int(time.time()) + svc.settings.url_ttl_s
    sig = svc.signer.sign(file_id, exp)
    return f"{base}/v1/files/{file_id}?exp={exp}&sig={sig}"
