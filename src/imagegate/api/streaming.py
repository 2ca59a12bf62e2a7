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

The stream itself (charging, routing, events, settlement) is ``generation.stream``; this
module checks the request and carries the events over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from imagegate.api.disconnect import drain_cut
from imagegate.api.drain import until_cut
from imagegate.api.state import Gateway
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import InvalidRequest
from imagegate.core.types import ImageRequest
from imagegate.generation.charging import Charge
from imagegate.generation.record import Record
from imagegate.generation.stream import StreamSession
from imagegate.routing.streaming import route_stream

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
    session = StreamSession(gw, req, spec, charge, record)
    cut = drain_cut(request)
    session.guard = lambda work: until_cut(cut, work)
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
