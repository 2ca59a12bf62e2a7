"""The generation use case, one pipeline for JSON and SSE alike.

admit (api) -> plan -> hold (``Charge.open``) -> route/failover (``Router``, following the
plan the hold was sized from) -> conform -> host -> price -> respond (``render.payloads``)
-> settle.

:meth:`Generation.open` runs it up to the first thing to hand over (a JSON request's whole
response, a stream's first event); a failure there is the caller's error response.
:meth:`Generation.run` hands the events to a :class:`Sink` and settles once the completed
one was handed over: the JSON sink keeps the body (the response leaves after the
settlement), the SSE sink writes each event to the transport (a client that leaves before
the completed event is not charged). :func:`price` and :func:`settle` are the only places a
request is priced and settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection

from imagegate.accounts.keys import ApiKey
from imagegate.catalog.spec import EndpointSpec, ModelSpec
from imagegate.core.errors import UpstreamFailed
from imagegate.core.types import (
    GeneratedImage,
    ImageRequest,
    ImageResult,
    PartialImage,
    StreamEvent,
)
from imagegate.generation.charging import Charge
from imagegate.generation.output import conform_output, output_bytes
from imagegate.generation.record import EVENT_HEADER, Record
from imagegate.generation.render import RouteFacts, partial_event, payloads
from imagegate.generation.services import Services
from imagegate.obs import metrics
from imagegate.providers.base import Capabilities, Provider
from imagegate.routing.plan import Attempt, Routed
from imagegate.routing.streaming import route_stream

log = logging.getLogger("imagegate.generation")

Payload = dict[str, Any]
# Awaits upstream work (the routing, a stream's next event), cancelling it when the client
# leaves or the server's drain time runs out; the API layer supplies it.
Guard = Callable[[Awaitable[Any]], Awaitable[Any]]


class Sink(Protocol):
    """Where the pipeline hands a request's events: a JSON body or an event stream."""

    # True when ``completed`` hands the event to the client (SSE): the settlement follows
    # the delivery, and a failed settlement can no longer fail the request.
    delivers: bool

    async def partial(self, event: Payload) -> None: ...

    async def completed(self, payloads: list[Payload]) -> None: ...


class Collected:
    """The JSON sink: keeps the response body, sent once the request is settled."""

    delivers = False

    def __init__(self) -> None:
        self.content = b""

    async def partial(self, event: Payload) -> None:
        raise AssertionError("a JSON request has no partial images")

    async def completed(self, payloads: list[Payload]) -> None:
        (body,) = payloads
        self.content = orjson.dumps(body)


class Source(RouteFacts, Protocol):
    """A routed request's events: ``first`` in hand, the rest from ``next_event``."""

    @property
    def first(self) -> StreamEvent: ...

    async def next_event(self) -> StreamEvent: ...

    async def aclose(self) -> None: ...


@dataclasses.dataclass(slots=True)
class _Whole:
    """A JSON request's routed result: a stream of one event."""

    routed: Routed

    @property
    def first(self) -> StreamEvent:
        return self.routed.result

    @property
    def provider(self) -> Provider:
        return self.routed.provider

    @property
    def endpoint(self) -> EndpointSpec:
        return self.routed.endpoint

    @property
    def attempts(self) -> list[Attempt]:
        return self.routed.attempts

    async def next_event(self) -> StreamEvent:
        raise AssertionError("a routed result has no further events")

    async def aclose(self) -> None:
        return None


@dataclasses.dataclass(slots=True)
class Completed:
    """The completed response, priced: its payloads, cost and image count."""

    payloads: list[Payload]
    cost_micro: int
    images: int


class Generation:
    """One request through the pipeline, from its hold to its settlement."""

    def __init__(
        self,
        svc: Services,
        req: ImageRequest,
        spec: ModelSpec,
        charge: Charge,
        record: Record | None,
        *,
        guard: Guard,
        base_url: str,
        started: float,
    ) -> None:
        self.svc = svc
        self.req = req
        self.spec = spec
        self.charge = charge
        self.record = record
        self.guard = guard
        self.base_url = base_url
        self.started = started
        self.source: Source | None = None
        # The next thing to hand to the sink (None: nothing, a partial beyond those asked for).
        self.pending: Payload | Completed | None = None
        self.partials_sent = 0
        self.headers: dict[str, str] = {}
        self.finished = False  # settled or released: the charge is closed

    @classmethod
    async def open(
        cls,
        svc: Services,
        req: ImageRequest,
        spec: ModelSpec,
        key: ApiKey,
        record: Record | None,
        *,
        guard: Guard,
        base_url: str,
        on_routed: Callable[[str], None] | None = None,
    ) -> Generation:
        """Hold, route, and prepare the first thing to hand over (429 / 402 / the routing's
        error otherwise, the hold released)."""
        started = time.perf_counter()
        charge = await Charge.open(svc, key, spec, req)
        gen = cls(svc, req, spec, charge, record, guard=guard, base_url=base_url, started=started)
        try:
            source = gen.source = await gen._route()
            if on_routed is not None:
                on_routed(source.provider.id)
            gen.pending = await gen._advance(source.first)
        except BaseException as exc:
            await gen.close(exc)
            raise
        gen.headers = gen._headers(source)
        return gen

    async def run(self, sink: Sink) -> None:
        """Hand the events to ``sink`` up to the completed one, then settle: the request is
        charged exactly when its completed event was handed over."""
        source = self.source
        assert source is not None
        try:
            while not isinstance(self.pending, Completed):
                if self.pending is not None:
                    await sink.partial(self.pending)
                self.pending = await self._advance(await self.guard(source.next_event()))
            done = self.pending
            await sink.completed(done.payloads)
        except BaseException as exc:
            await self.close(exc)
            raise
        self.finished = True
        try:
            await self._settle(done, delivered=sink.delivers)
        finally:
            await source.aclose()

    async def close(self, exc: BaseException | None = None) -> None:
        """End a request whose completed event was not handed over (an error, the client
        gone, the drain): stop the upstream work, release the hold and the key's record."""
        if self.finished:
            return
        self.finished = True
        try:
            if self.source is not None:
                await self.source.aclose()
        finally:
            try:
                await self.charge.fail(exc or asyncio.CancelledError())
            finally:
                if self.record is not None:
                    await self.record.abandon()

    async def _route(self) -> Source:
        plan = self.charge.plan
        assert plan is not None
        if self.req.stream:
            opened = route_stream(self.svc.router, self.spec, self.req, plan)
            stream: Source = await self.guard(opened)
            return stream
        routed: Routed = await self.guard(self.svc.router.route(self.spec, self.req, plan))
        return _Whole(routed)

    async def _advance(self, event: StreamEvent) -> Payload | Completed | None:
        """One upstream event made ready to hand over: conformed, and the completed one
        hosted, priced and rendered."""
        source = self.source
        assert source is not None
        capabilities = source.provider.capabilities
        if isinstance(event, PartialImage):
            return await self._partial(event, capabilities)
        if not event.images:
            raise UpstreamFailed("The upstream finished its stream without an image.")
        produced, cost_micro = await price(self.req, capabilities, source.endpoint, event)
        images = produced.images
        urls: list[str | None] = [None] * len(images)
        if self.req.response_format == "url":
            urls = [await host(self.svc, self.base_url, img) for img in images]
        rendered = payloads(
            self.req,
            source,
            produced,
            urls,
            model_id=self.spec.id,
            generation_id=self.charge.generation_id,
            cost_usd=cost_micro / 1_000_000,
            latency_ms=(time.perf_counter() - self.started) * 1000,
        )
        return Completed(rendered, cost_micro, len(images))

    async def _partial(self, partial: PartialImage, capabilities: Capabilities) -> Payload | None:
        if partial.index != 0 or self.partials_sent >= (self.req.partial_images or 0):
            return None
        (image,) = await conform_output([partial.image], self.req, capabilities)
        event = partial_event(image, self.req, self.partials_sent)
        self.partials_sent += 1
        return event

    def _headers(self, source: Source) -> dict[str, str]:
        """A JSON response's headers carry its cost; a stream's are sent before its cost is
        known, so they carry the most it can cost (its events carry what it did cost)."""
        if isinstance(self.pending, Completed) and not self.req.stream:
            cost_micro = self.pending.cost_micro
        else:
            cost_micro = source.endpoint.pricing.max_cost_micro(self.req)
        return {
            **self.charge.headers,
            "x-imagegate-provider": source.provider.id,
            "x-imagegate-cost-usd": f"{cost_micro / 1_000_000:.6f}",
            "x-imagegate-generation-id": self.charge.generation_id,
        }

    async def _settle(self, done: Completed, *, delivered: bool) -> None:
        """Settle, and keep the Idempotency-Key's replay in the same transaction."""
        try:
            await _to_the_end(self._settlement(done), self.record)
        except Exception:
            if self.record is not None:
                await self.record.abandon()
            if not delivered:
                raise
            # The image was delivered: its hold expires, it is not charged.
            log.exception("could not settle a delivered stream")

    async def _settlement(self, done: Completed) -> int:
        source = self.source
        assert source is not None
        also = None
        if self.record is not None:  # stored by the settlement's own transaction
            kept = done.payloads[-1]  # the record copies what it strips, not the images
            headers = dict(self.headers)
            if self.req.stream:
                headers[EVENT_HEADER] = str(kept["type"])
            also = self.record.writer(await self.record.prepare(200, headers, kept))
        return await settle(
            self.charge,
            self.spec.id,
            source.provider.id,
            source.endpoint.upstream_model,
            done.cost_micro,
            done.images,
            also,
        )


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
