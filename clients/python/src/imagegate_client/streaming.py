"""Server-sent events from ``stream: true`` calls, parsed into typed image events.

The event shapes are OpenAI's ``ImageGenStreamEvent``/``ImageEditStreamEvent``:
``image_generation.partial_image``, ``image_generation.completed``,
``image_edit.partial_image`` and ``image_edit.completed``. An ``error`` event raises.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from imagegate_client.errors import ApiConnectionError, StreamError
from imagegate_client.models import Usage


@dataclass
class ImageStreamEvent:
    """One event; ``partial_image_index`` is set on partials, ``usage`` on completion."""

    type: str
    b64_json: str | None = None
    created_at: int | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    partial_image_index: int | None = None
    usage: Usage | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_partial(self) -> bool:
        return self.type.endswith(".partial_image")

    @property
    def is_completed(self) -> bool:
        return self.type.endswith(".completed")

    def bytes(self) -> bytes:
        return base64.b64decode(self.b64_json or "")

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.bytes())
        return target


class ImagePartialImageEvent(ImageStreamEvent):
    """``image_generation.partial_image`` / ``image_edit.partial_image``."""


class ImageCompletedEvent(ImageStreamEvent):
    """``image_generation.completed`` / ``image_edit.completed``."""


class SSEDecoder:
    """Line-by-line ``text/event-stream`` decoder (the WHATWG rules we need)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """Take one line (without its newline); return ``(event, data)`` when one ends."""
        line = line.rstrip("\r")
        if not line:
            if not self._data and not self._event:
                return None
            out = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def to_event(name: str, data: str, status: int, headers: dict[str, str]) -> ImageStreamEvent | None:
    """Build the typed event; ``None`` for keep-alives and ``[DONE]``."""
    if not data or data.strip() == "[DONE]":
        return None
    payload = json.loads(data)
    if not isinstance(payload, dict):
        return None
    kind = str(payload.get("type") or name)
    if kind == "error" or name == "error" or "error" in payload:
        err = payload.get("error") if isinstance(payload.get("error"), dict) else payload
        assert isinstance(err, dict)
        raise StreamError(
            status,
            "stream error",
            headers=headers,
            body=data,
            message=_opt(err.get("message")),
            type=_opt(err.get("type")),
            param=_opt(err.get("param")),
            code=_opt(err.get("code")),
        )
    cls: type[ImageStreamEvent] = ImageStreamEvent
    if kind.endswith(".partial_image"):
        cls = ImagePartialImageEvent
    elif kind.endswith(".completed"):
        cls = ImageCompletedEvent
    return cls(
        type=kind,
        b64_json=payload.get("b64_json"),
        created_at=payload.get("created_at"),
        size=payload.get("size"),
        quality=payload.get("quality"),
        background=payload.get("background"),
        output_format=payload.get("output_format"),
        partial_image_index=payload.get("partial_image_index"),
        usage=Usage.from_dict(payload.get("usage")),
        raw=payload,
    )


class ImageStream:
    """Iterator of events over one open response; closes it when exhausted or closed."""

    def __init__(
        self,
        lines: Iterator[str],
        close: Callable[[], None],
        status: int,
        headers: dict[str, str],
    ) -> None:
        self._lines = lines
        self._close = close
        self.status_code = status
        self.headers = headers
        self._decoder = SSEDecoder()

    def __iter__(self) -> Iterator[ImageStreamEvent]:
        try:
            for line in _guarded(self._lines):
                found = self._decoder.feed(line)
                if found is not None:
                    event = to_event(*found, self.status_code, self.headers)
                    if event is not None:
                        yield event
            found = self._decoder.feed("")
            if found is not None:
                event = to_event(*found, self.status_code, self.headers)
                if event is not None:
                    yield event
        finally:
            self.close()

    def close(self) -> None:
        self._close()

    def __enter__(self) -> ImageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncImageStream:
    """Async twin of ``ImageStream``."""

    def __init__(
        self,
        lines: AsyncIterator[str],
        close: Callable[[], Any],
        status: int,
        headers: dict[str, str],
    ) -> None:
        self._lines = lines
        self._close = close
        self.status_code = status
        self.headers = headers
        self._decoder = SSEDecoder()

    async def __aiter__(self) -> AsyncIterator[ImageStreamEvent]:
        try:
            async for line in _aguarded(self._lines):
                found = self._decoder.feed(line)
                if found is not None:
                    event = to_event(*found, self.status_code, self.headers)
                    if event is not None:
                        yield event
            found = self._decoder.feed("")
            if found is not None:
                event = to_event(*found, self.status_code, self.headers)
                if event is not None:
                    yield event
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        result = self._close()
        if hasattr(result, "__await__"):
            await result

    async def __aenter__(self) -> AsyncImageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _guarded(lines: Iterator[str]) -> Iterator[str]:
    """A connection lost mid-stream surfaces as the SDK's error, not httpx's."""
    try:
        yield from lines
    except httpx.TransportError as exc:
        raise ApiConnectionError(
            0, type(exc).__name__, message=str(exc) or "stream broken"
        ) from exc


async def _aguarded(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for line in lines:
            yield line
    except httpx.TransportError as exc:
        raise ApiConnectionError(
            0, type(exc).__name__, message=str(exc) or "stream broken"
        ) from exc


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)
