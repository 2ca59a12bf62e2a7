"""Read request bodies as streams with hard caps, before anything is buffered whole.

JSON bodies are read up to ``max_bytes``; multipart bodies are parsed incrementally with
python-multipart so that an oversized part is refused as soon as it crosses its cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from imagegate.core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

MB = 1024 * 1024
_MAX_TEXT_FIELD = 64 * MB  # a text field may carry a base64 image


@dataclass(slots=True)
class FilePart:
    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class Multipart:
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[FilePart] = field(default_factory=list)


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        raise InvalidRequest("Invalid Content-Length header.", code="invalid_body") from None


OnChunk = Callable[[int], None]


async def read_json(
    request: Request, max_bytes: int, on_chunk: OnChunk | None = None
) -> dict[str, object]:
    """Read and parse a JSON object body; 413 past ``max_bytes`` (before parsing anything),
    400 on bad JSON. ``on_chunk`` sees each chunk's size before it is kept."""
    raw = await _read_capped(request, max_bytes, on_chunk)
    if not raw:
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", code="invalid_json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


async def read_urlencoded(
    request: Request, max_bytes: int, on_chunk: OnChunk | None = None
) -> list[tuple[str, str]]:
    """Read an application/x-www-form-urlencoded body as (name, value) pairs."""
    raw = await _read_capped(request, max_bytes, on_chunk)
    return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)


async def _read_capped(request: Request, max_bytes: int, on_chunk: OnChunk | None) -> bytes:
    chunks = [chunk async for chunk in _capped_stream(request, max_bytes, on_chunk)]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _capped_stream(
    request: Request, max_bytes: int, on_chunk: OnChunk | None
) -> AsyncIterator[bytes]:
    """The body's chunks; 413 as soon as the declared or the received length passes the cap."""
    declared = declared_length(request)
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(max_bytes)
        if on_chunk is not None:
            on_chunk(len(chunk))
        yield chunk


def content_kind(request: Request) -> str:
    """'json' or 'multipart'; anything else is a 415."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return "json"
    if kind == "multipart/form-data":
        return "multipart"
    if kind == "application/x-www-form-urlencoded":
        return "form"
    raise UnsupportedMediaType(
        f"Unsupported Content-Type '{kind or 'none'}': send application/json, "
        "multipart/form-data or application/x-www-form-urlencoded.",
        code="unsupported_content_type",
    )


async def read_multipart(
    request: Request,
    *,
    max_file_bytes: int,
    max_parts: int,
    max_total_bytes: int,
    on_chunk: OnChunk | None = None,
) -> Multipart:
    """Parse a multipart body incrementally, capping each part, the part count and the
    whole body."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("Missing boundary in multipart/form-data body.", code="invalid_body")
    state = _PartCollector(max_file_bytes, max_parts)
    parser = MultipartParser(boundary, state.callbacks())
    try:
        async for chunk in _capped_stream(request, max_total_bytes, on_chunk):
            parser.write(chunk)
            if state.error is not None:
                raise state.error
        parser.finalize()
    except FormParserError as exc:
        raise InvalidRequest("Malformed multipart/form-data body.", code="invalid_body") from exc
    if state.error is not None:
        raise state.error
    return state.result


class _PartCollector:
    """python-multipart callbacks that gather parts into memory under caps."""

    def __init__(self, max_file_bytes: int, max_parts: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_parts = max_parts
        self.result = Multipart()
        self.error: Exception | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._buffer = bytearray()
        self._name = ""
        self._filename: str | None = None
        self._content_type = ""
        self._count = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._count += 1
        if self._count > self.max_parts and self.error is None:
            self.error = InvalidRequest(
                f"Too many multipart fields (limit {self.max_parts}).", code="too_many_fields"
            )
        self._headers = {}
        self._buffer = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None
        self._content_type = self._headers.get(b"content-type", b"").decode("latin-1")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        limit = self.max_file_bytes if self._filename is not None else _MAX_TEXT_FIELD
        if len(self._buffer) + (end - start) > limit:
            field_name = _base_name(self._name) or "field"
            self.error = PayloadTooLarge(
                f"The '{field_name}' part is larger than {limit / MB:g} MB.", param=field_name
            )
            return
        self._buffer += data[start:end]

    def on_part_end(self) -> None:
        if self.error is not None:
            return
        data = bytes(self._buffer)
        self._buffer = bytearray()
        if self._filename is not None:
            self.result.files.append(FilePart(self._name, self._filename, self._content_type, data))
        else:
            self.result.fields.append((self._name, data.decode("utf-8", "replace")))


def _base_name(name: str) -> str:
    return name.split("[", 1)[0]


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {limit / MB:g} MB.")
