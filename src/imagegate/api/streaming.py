"""``stream: true``: OpenAI's image streaming events over server-sent events.

The wire format is what the official SDK parses (openai-python ``_streaming.py`` and
``types/image_gen_partial_image_event.py``, ``image_gen_completed_event.py``,
``image_edit_partial_image_event.py``, ``image_edit_completed_event.py``): each event is
``event: <type>`` and one ``data: <json>`` line, then a blank line. Generations send
``image_generation.partial_image`` (``b64_json``, ``created_at``, ``size``, ``quality``,
``background``, ``output_format``, ``partial_image_index``) zero to ``partial_images``
times, then one ``image_generation.completed`` (the same fields less the index, plus
``usage``); edits send ``image_edit.*``. No ``[DONE]`` line follows, as with OpenAI.

What streaming takes, and why:

* ``n`` must be 1: the events carry no image index, so several images could not be told
  apart. ``response_format: url`` is refused: the events carry ``b64_json`` only.
  Variations do not stream (OpenAI's variations endpoint has no ``stream``).
* Failures before the first event are ordinary JSON error envelopes with their status.
  After it, a failure ends the stream with an ``error`` event whose data is
  ``{"type": "error", "error": {message, type, param, code}}``, which the SDK raises as
  ``APIError``.
* The provider runs inside the response's producer task; a client that disconnects
  cancels that task, which closes the upstream stream (or stops the engine).

Settlement happens in one place: :meth:`_StreamSession.completed`, called once the
completed event was handed to the transport (a client that leaves before that is not
charged, and its usage record says so: 499 with the upstream call and its cost), or
:meth:`_StreamSession.ended_without_completing`, which the ``finally`` of every path calls
when it did not. With an ``Idempotency-Key`` the completed event is what a repeat replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from imagegate.api.disconnect import drain_cut
from imagegate.api.drain import until_cut
from imagegate.api.replay import EVENT_HEADER, Record
from imagegate.api.state import Gateway
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import GatewayError, InvalidRequest, UpstreamFailed
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, PartialImage
from imagegate.generation.charging import Charge
from imagegate.generation.output import conform_output
from imagegate.obs import metrics
from imagegate.routing.streaming import RoutedStream, route_stream

log = logging.getLogger("imagegate.streaming")


def check_streamable(req: ImageRequest) -> None:
    """Refuse what a stream cannot carry, naming the field (see the module docstring)."""
    if req.operation == "variation":
        raise InvalidRequest(
            "Variations cannot be streamed; send stream: false.",
            param="stream",
            code="unsupported_parameter",
        )
    if req.n != 1:
        raise InvalidRequest(
            "A streamed request produces one image: n must be 1 when stream is true.",
            param="n",
            code="unsupported_parameter",
        )
    if req.response_format == "url":
        raise InvalidRequest(
            "Streamed images are sent as b64_json; response_format 'url' cannot be streamed.",
            param="response_format",
            code="unsupported_parameter",
        )


async def stream_response(
    gw: Gateway, request: Request, req: ImageRequest, spec: ModelSpec, record: Record | None = None
) -> Response:
    """Open the stream (failing over until its first event) and return the SSE response."""
    check_streamable(req)
    charge = await Charge.open(gw, request.state.api_key, spec, req)
    session = _StreamSession(gw, req, spec, charge, record)
    session.cut = drain_cut(request)
    try:
        opened = await route_stream(gw.router, spec, req, charge.plan)
        session.routed = opened
        first = await session.render(opened.first)
    except BaseException as exc:
        session.failure = exc
        await session.close()
        raise
    request.state.provider = opened.provider.id
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "x-imagegate-provider": opened.provider.id,
        # Sent before the cost is known: the most this stream can cost (the completed event's
        # meta and usage carry what it did cost).
        "x-imagegate-cost-usd": f"{opened.endpoint.pricing.max_cost_micro(req) / 1e6:.6f}",
        "x-imagegate-generation-id": session.generation_id,
        **charge.headers,
    }
    session.headers = headers
    return EventStreamResponse(session.events(first), headers=headers, on_close=session.close)


class _StreamSession:
    """One streamed request from routing to its last event."""

    def __init__(
        self,
        gw: Gateway,
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
        self.cut: asyncio.Event | None = None  # set when the server's drain time is up

    async def events(self, first: bytes) -> AsyncIterator[bytes]:
        """The SSE body: the first event (already rendered), then the rest, then the end."""
        assert self.routed is not None
        try:
            yield first
            await self._delivered()
            while not self.done:
                # SIGTERM's drain time running out ends the stream with an error event.
                event = await until_cut(self.cut, self.routed.next_event())
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
        images = await _conform(event.images, self.req, self.routed)
        produced = dataclasses.replace(event, images=images)
        micro = self.routed.endpoint.pricing.cost_micro(self.req, produced)
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
            charged = await self.charge.succeed(
                self.routed.provider.id, self.routed.endpoint.upstream_model, micro, images, also
            )
        except Exception:  # the image was delivered; its hold expires, it is not charged
            log.exception("could not settle a delivered stream")
            if self.record is not None:
                await self.record.abandon()
            return
        if self.record is not None:
            self.record.settled()
        self.cost_usd = charged / 1_000_000
        metrics.record_generation(self.spec.id, self.routed.provider.id, images, self.cost_usd)

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
            "size": f"{image.width}x{image.height}",
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
        kind = f"{self.prefix}.completed"
        data: dict[str, Any] = {
            "type": kind,
            "b64_json": image.b64,
            "created_at": int(time.time()),
            "size": f"{image.width}x{image.height}",
            "quality": result.quality or self.req.quality or "auto",
            "background": result.background or self.req.background or "opaque",
            "output_format": image.format,
            "usage": _usage(result, self.req, cost),
        }
        if self.req.meta:
            data["meta"] = {
                "generation_id": self.generation_id,
                "model": self.spec.id,
                "provider": self.routed.provider.id,
                "upstream_model": self.routed.endpoint.upstream_model,
                "attempts": [a.to_dict() for a in self.routed.attempts],
                "latency_ms": round((time.perf_counter() - self.started) * 1000, 1),
                "cost_usd": cost,
            }
        return data


class EventStreamResponse(Response):
    """A ``text/event-stream`` response whose producer is cancelled when the client leaves.

    The body is produced in its own task while another waits for ``http.disconnect``;
    whichever ends first stops the other, so a client that goes away mid-stream cancels
    the provider work running inside the producer.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.body_iterator = body
        # Settles a stream whose body never started (the client left before the headers).
        self.on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.create_task(self._produce(send))
        listener = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait({producer, listener}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listener, producer):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await producer

    async def _produce(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = self.body_iterator
        try:
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
            if self.on_close is not None:
                await self.on_close()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _conform(
    images: list[GeneratedImage], req: ImageRequest, routed: RoutedStream | None
) -> list[GeneratedImage]:
    """The same output formatting as a non-streamed response (format, compression)."""
    assert routed is not None
    return await conform_output(images, req, routed.provider.capabilities)


def _usage(result: ImageResult, req: ImageRequest, cost_usd: float) -> dict[str, Any]:
    """OpenAI's ``usage`` (zero tokens when the upstream bills per image), plus the
    gateway's ``images`` and ``cost_usd`` when the request asked for ``usage``."""
    tokens = result.usage
    usage: dict[str, Any] = {
        "input_tokens": tokens.input_tokens if tokens else 0,
        "output_tokens": tokens.output_tokens if tokens else 0,
        "total_tokens": tokens.total_tokens if tokens else 0,
        "input_tokens_details": (tokens.input_tokens_details if tokens else None)
        or {"image_tokens": 0, "text_tokens": 0},
    }
    if req.usage:
        usage["images"] = len(result.images)
        usage["cost_usd"] = cost_usd
    return usage


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
