"""A streamed generation: the pipeline of ``generation.pipeline`` with SSE events as its
sink (the wire format is described in ``api/streaming.py``).

Settlement happens in one place: :meth:`StreamSession.completed`, called once the
completed event was handed to the transport (a client that leaves before that is not
charged, and its usage record says so: 499 with the upstream call and its cost), or
:meth:`StreamSession.ended_without_completing`, which the ``finally`` of every path calls
when it did not. With an ``Idempotency-Key`` the completed event is what a repeat replays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import GatewayError, UpstreamFailed
from imagegate.core.size import Size
from imagegate.core.types import (
    GeneratedImage,
    ImageRequest,
    ImageResult,
    PartialImage,
    StreamEvent,
)
from imagegate.generation.charging import Charge
from imagegate.generation.output import conform_output
from imagegate.generation.pipeline import price, settle
from imagegate.generation.record import EVENT_HEADER, Record
from imagegate.generation.render import completed_event, meta, usage_block
from imagegate.generation.services import Services
from imagegate.routing.streaming import RoutedStream

log = logging.getLogger("imagegate.streaming")


async def _unguarded(work: Awaitable[StreamEvent]) -> StreamEvent:
    return await work


class StreamSession:
    """One streamed request from routing to its last event."""

    def __init__(
        self,
        gw: Services,
        req: ImageRequest,
        spec: ModelSpec,
        charge: Charge,
        record: Record | None = None,
    ) -> None:
        self.gw = gw
        self.record = record
        self.headers: dict[str, str] = {}
        # The completed event rendered and not yet handed to the transport.
        self.pending: tuple[int, int, dict[str, Any]] | None = None
        self.req = req
        self.spec = spec
        self.charge = charge
        self.routed: RoutedStream | None = None
        self.generation_id = charge.generation_id
        # Why the stream ended without completing (None: the client went away).
        self.failure: BaseException | None = None
        self.started = time.perf_counter()
        self.prefix = "image_generation" if req.operation == "generate" else "image_edit"
        self.partials_sent = 0
        self.done = False  # completed() ran to the end
        self.cost_usd = 0.0
        self.closed = False
        # Awaits the next upstream event; the API ends it when the server's drain time is up.
        self.guard: Callable[[Awaitable[StreamEvent]], Awaitable[StreamEvent]] = _unguarded

    async def events(self, first: bytes) -> AsyncIterator[bytes]:
        """The SSE body: the first event (already rendered), then the rest, then the end."""
        assert self.routed is not None
        try:
            yield first
            await self._delivered()
            while not self.done:
                # SIGTERM's drain time running out ends the stream with an error event.
                event = await self.guard(self.routed.next_event())
                chunk = await self.render(event)
                if chunk:
                    yield chunk
                    await self._delivered()
        except GatewayError as exc:
            self.failure = exc
            yield _sse("error", {"type": "error", **exc.to_dict()})
        except BaseException as exc:
            self.failure = exc
            raise
        finally:
            await self.close()

    async def render(self, event: PartialImage | ImageResult) -> bytes:
        """One event as SSE bytes (empty for a partial beyond what was asked for)."""
        if isinstance(event, PartialImage):
            return await self._partial(event)
        if not event.images:
            raise UpstreamFailed("The upstream finished its stream without an image.")
        assert self.routed is not None
        provider, endpoint = self.routed.provider, self.routed.endpoint
        produced, micro = await price(self.req, provider.capabilities, endpoint, event)
        images = produced.images
        self.cost_usd = micro / 1_000_000
        payloads = [self._completed_event(image, event) for image in images]
        self.pending = (micro, len(images), payloads[-1])
        return b"".join(_sse(str(data["type"]), data) for data in payloads)

    async def _delivered(self) -> None:
        """The last chunk was handed to the transport: settle if it was the completed one."""
        if self.pending is not None and not self.done:
            micro, count, payload = self.pending
            await self.completed(micro, count, payload)

    async def completed(self, micro: int, images: int, payload: dict[str, Any]) -> None:
        """The completed event reached the transport: settle, once, and keep the replay."""
        self.done = True
        # One shielded task: a client leaving now cannot split the charge from its record.
        await asyncio.shield(asyncio.ensure_future(self._settle(micro, images, payload)))

    async def _settle(self, micro: int, images: int, payload: dict[str, Any]) -> None:
        assert self.routed is not None
        also = None
        if self.record is not None:  # stored by the settlement's own transaction
            headers = {**self.headers, EVENT_HEADER: str(payload["type"])}
            also = self.record.writer(await self.record.prepare(200, headers, payload))
        try:
            charged = await settle(
                self.charge,
                self.spec.id,
                self.routed.provider.id,
                self.routed.endpoint.upstream_model,
                micro,
                images,
                also,
            )
        except Exception:  # the image was delivered; its hold expires, it is not charged
            log.exception("could not settle a delivered stream")
            if self.record is not None:
                await self.record.abandon()
            return
        if self.record is not None:
            self.record.settled()
        self.cost_usd = charged / 1_000_000

    async def ended_without_completing(self) -> None:
        """The stream ended without its completed event reaching the transport (error,
        disconnect, failover gave up): release whatever was held for it."""
        try:
            await self.charge.fail(self.failure or asyncio.CancelledError())
        finally:
            if self.record is not None:
                await self.record.abandon()

    async def close(self) -> None:
        """Stop upstream work if it is still running, then settle the unfinished case."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.routed is not None:
                await self.routed.aclose()
        finally:
            if not self.done:
                await self.ended_without_completing()

    async def _partial(self, partial: PartialImage) -> bytes:
        wanted = self.req.partial_images or 0
        if partial.index != 0 or self.partials_sent >= wanted:
            return b""
        (image,) = await _conform([partial.image], self.req, self.routed)
        kind = f"{self.prefix}.partial_image"
        data = {
            "type": kind,
            "b64_json": image.b64,
            "created_at": int(time.time()),
            "size": str(Size(image.width, image.height)),
            "quality": self.req.quality or "auto",
            "background": self.req.background or "auto",
            "output_format": image.format,
            "partial_image_index": self.partials_sent,
        }
        self.partials_sent += 1
        return _sse(kind, data)

    def _completed_event(self, image: GeneratedImage, result: ImageResult) -> dict[str, Any]:
        assert self.routed is not None
        cost = self.cost_usd
        usage = usage_block(result.usage, self.req, len(result.images), cost, event=True)
        assert usage is not None
        block = None
        if self.req.meta:
            block = meta(
                self.routed,
                model_id=self.spec.id,
                generation_id=self.generation_id,
                cost_usd=cost,
                latency_ms=(time.perf_counter() - self.started) * 1000,
            )
        return completed_event(f"{self.prefix}.completed", image, result, self.req, usage, block)


async def _conform(
    images: list[GeneratedImage], req: ImageRequest, routed: RoutedStream | None
) -> list[GeneratedImage]:
    """The same output formatting as a non-streamed response (format, compression)."""
    assert routed is not None
    return await conform_output(images, req, routed.provider.capabilities)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
