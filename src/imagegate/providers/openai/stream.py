"""Read OpenAI's image streaming events from an upstream ``text/event-stream`` response.

Wire format, from the official SDK (openai/openai-python ``src/openai/_streaming.py``,
``types/image_gen_partial_image_event.py``, ``image_gen_completed_event.py``,
``image_edit_partial_image_event.py``, ``image_edit_completed_event.py``): events are
``event:``/``data:`` lines ended by a blank line; ``data`` is JSON whose ``type`` is
``image_generation.partial_image`` / ``image_edit.partial_image`` (``b64_json``,
``partial_image_index``, ...) or ``image_generation.completed`` / ``image_edit.completed``
(``b64_json``, ``usage``, ``quality``, ``background``, ...). A ``data`` object with an
``error`` member (or ``type: error``) is a failure, as the SDK treats it; ``[DONE]`` ends
the stream if an upstream sends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from imagegate.core.errors import UpstreamError
from imagegate.core.types import ImageResult, PartialImage, StreamEvent, TokenUsage
from imagegate.providers._shared import b64json
from imagegate.providers._shared.common import (
    CONTENT_POLICY_CODES,
    bad_upstream,
    image_from_b64,
    upstream_error,
)


async def server_sent_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    """``(event, data)`` for each event of an SSE body (comments and ids are skipped)."""
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data or event:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


async def image_stream_events(
    provider_id: str,
    response: httpx.Response,
    upstream_model: str,
    usage: Callable[[Any], TokenUsage | None],
) -> AsyncIterator[StreamEvent]:
    """Partial images, then one ``ImageResult`` built from the completed event.

    ``usage`` parses the completed event's ``usage`` (the adapter's own parser), so
    streamed and non-streamed results report tokens the same way.
    """
    async for event, raw in server_sent_events(response):
        if raw.startswith("[DONE]"):
            break
        try:
            data = b64json.loads(raw)  # long b64_json strings copied out, not parsed
        except orjson.JSONDecodeError as exc:
            raise bad_upstream(provider_id, "sent a stream event that is not JSON") from exc
        if not isinstance(data, dict):
            raise bad_upstream(provider_id, "sent a malformed stream event")
        kind = str(data.get("type") or event or "")
        if data.get("error") or kind == "error":
            raise _stream_error(provider_id, data)
        if kind.endswith(".partial_image"):
            index = data.get("partial_image_index")
            image = image_from_b64(provider_id, _b64(provider_id, data))
            yield PartialImage(0, index if isinstance(index, int) else 0, image)
        elif kind.endswith(".completed"):
            image = image_from_b64(provider_id, _b64(provider_id, data))
            tokens = usage(data.get("usage"))
            yield ImageResult(
                images=[image],
                usage=tokens,
                upstream_model=upstream_model,
                quality=_str(data.get("quality")),
                background=_str(data.get("background")),
            )
            return
    raise bad_upstream(provider_id, "ended its stream without a completed event")


def _b64(provider_id: str, data: dict[str, Any]) -> str:
    value = data.get("b64_json")
    if not isinstance(value, str) or not value:
        raise bad_upstream(provider_id, "sent a stream event without b64_json")
    return value


def _stream_error(provider_id: str, data: dict[str, Any]) -> UpstreamError:
    """An error event mid-stream: the upstream's failure, so another endpoint may do
    better (before the first event) and the caller sees its message (after)."""
    error = data.get("error")
    body = error if isinstance(error, dict) else data
    message = body.get("message")
    text = message[:500] if isinstance(message, str) and message else "error event"
    code = body.get("code")
    if code in CONTENT_POLICY_CODES:  # a refused prompt stays the caller's, as unstreamed
        return upstream_error(provider_id, 400, text, code=code)
    return UpstreamError(f"{provider_id} stream error: {text}", status=502, retryable=True)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
