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

The stream itself (charging, routing, events, settlement) is the generation pipeline
(``generation.pipeline``) with :class:`EventSink` as its sink; this module checks the
request and carries the events over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from imagegate.api.disconnect import drain_cut, wait_for_disconnect
from imagegate.api.drain import first_of, until_cut
from imagegate.api.state import Gateway
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import GatewayError, InvalidRequest
from imagegate.core.types import ImageRequest
from imagegate.generation.pipeline import Generation
from imagegate.generation.record import Record

Write = Callable[[bytes], Awaitable[None]]


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


def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event: ``event: <kind>``, one ``data:`` line, a blank line."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class EventSink:
    """The pipeline's SSE sink: each event is written to the transport as it comes; the
    completed one is handed over before the pipeline settles."""

    delivers = True

    def __init__(self, write: Write) -> None:
        self.write = write

    async def partial(self, event: dict[str, Any]) -> None:
        await self.write(sse_event(str(event["type"]), event))

    async def completed(self, payloads: list[dict[str, Any]]) -> None:
        await self.write(b"".join(sse_event(str(data["type"]), data) for data in payloads))


async def stream_response(
    gw: Gateway, request: Request, req: ImageRequest, spec: ModelSpec, record: Record | None = None
) -> Response:
    """Open the stream (failing over until its first event) and return the SSE response."""
    check_streamable(req)
    cut = drain_cut(request)
    # SIGTERM's drain time running out ends the stream (an error event once it started).
    gen = await Generation.open(
        gw,
        req,
        spec,
        request.state.api_key,
        record,
        guard=lambda work: until_cut(cut, work),
        base_url=gw.public_base(request),
    )
    request.state.provider = gen.headers["x-imagegate-provider"]
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **gen.headers}

    async def produce(write: Write) -> None:
        try:
            await gen.run(EventSink(write))
        except GatewayError as exc:  # after the first event: the stream ends with an error
            await write(sse_event("error", {"type": "error", **exc.to_dict()}))

    return EventStreamResponse(produce, headers=headers, on_close=gen.close)


class EventStreamResponse(Response):
    """A ``text/event-stream`` response whose producer is cancelled when the client leaves.

    The body is produced in its own task while another waits for ``http.disconnect``;
    whichever ends first stops the other, so a client that goes away mid-stream cancels
    the provider work running inside the producer.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Callable[[Write], Awaitable[None]],
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.produce = produce
        # Releases a stream that ended without the producer settling or releasing it (the
        # client left before the headers); a no-op otherwise.
        self.on_close = on_close
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.ensure_future(self._produce(send))
        try:
            await first_of(producer, asyncio.ensure_future(wait_for_disconnect(receive)))
        finally:  # also when this response is cancelled: the producer ends first
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await producer
            if self.on_close is not None:
                await self.on_close()

    async def _produce(self, send: Send) -> None:
        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await self.produce(write)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
