"""Canonical request and result shapes, declared once and used by every layer."""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any, Literal

from imagegate.core.errors import UpstreamError

Operation = Literal["generate", "edit", "variation"]
OutputFormat = Literal["png", "jpeg", "webp"]
OPERATIONS: tuple[Operation, ...] = ("generate", "edit", "variation")
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
MIME_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(slots=True)
class InputImage:
    """An image supplied by the caller, already sniffed and size-checked.

    ``data`` holds the encoded bytes as received; ``format`` is the sniffed type
    (png, jpeg, webp) and ``width``/``height`` come from the header, never from
    the caller.
    """

    data: bytes
    format: OutputFormat
    width: int
    height: int
    filename: str = "image"

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]


@dataclass(slots=True)
class RoutingPreferences:
    """The request's ``provider`` object."""

    order: list[str] | None = None
    only: list[str] | None = None
    ignore: list[str] | None = None
    include_alpha: bool = False
    allow_fallbacks: bool = True
    sort: str | None = None
    max_price: float | None = None
    require_parameters: bool = False


ResponseFormat = Literal["b64_json", "url"]


@dataclass(slots=True)
class RequestFields:
    """What the caller asked for, parsed and coerced (``api.fields``), not yet checked.

    Enough to look up the model and count the inputs before any is fetched; the model's
    rules and the fetched inputs complete it into an :class:`ImageRequest`
    (``catalog.rules.resolve_request``). ``response_format`` is None when the caller left
    it to the model; ``extra`` keeps fields the gateway does not know, for adapters that
    accept them.
    """

    operation: Operation
    model: str
    prompt: str | None = None
    n: int = 1
    size: str = "auto"
    quality: str | None = None
    style: str | None = None
    response_format: ResponseFormat | None = None
    output_format: OutputFormat | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    stream: bool = False
    partial_images: int | None = None
    user: str | None = None
    seed: int | None = None
    input_fidelity: str | None = None
    provider: RoutingPreferences = field(default_factory=RoutingPreferences)
    meta: bool = False
    usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class ImageRequest(RequestFields):
    """One complete request, whatever endpoint and encoding it arrived by: checked against
    its model, its inputs fetched. Only ``catalog.rules.resolve_request`` makes one from a
    caller's request, and nothing after it changes what the caller asked for.

    ``size`` is the caller's string ("auto" or "WxH"); ``width``/``height`` are the
    resolved pixel size the output must have, ``response_format`` the caller's or the
    model's default.
    """

    width: int
    height: int
    response_format: ResponseFormat
    images: list[InputImage] = field(default_factory=list)
    mask: InputImage | None = None


class GeneratedImage:
    """One output image, with the format its bytes are actually in.

    It holds the encoded bytes, the base64 text of them, or both, and makes the other on
    first use: an upstream's ``b64_json`` is passed through to a ``b64_json`` response
    without ever being decoded (``from_b64``), and bytes are base64-encoded once however
    many times ``b64`` is read. ``format``/``width``/``height`` are always known up front
    (probed by whoever built it). Base64 that turns out invalid when ``data`` first decodes
    it is the upstream's fault: a retryable 502 ``UpstreamError``, as when it is probed.
    """

    __slots__ = ("_b64", "_data", "_source", "format", "height", "revised_prompt", "width")

    def __init__(
        self,
        data: bytes | None,
        format: OutputFormat,
        width: int,
        height: int,
        revised_prompt: str | None = None,
        b64: str | None = None,
        *,
        source: str = "upstream",
    ) -> None:
        """``b64``, when given with ``data``, must be its standard base64 (no line breaks);
        ``source`` names who produced it in errors (a provider id)."""
        if data is None and b64 is None:
            raise ValueError("a GeneratedImage needs its bytes or their base64")
        self._data, self._b64, self._source = data, b64, source  # what it holds, from whom
        self.format, self.width, self.height = format, width, height  # what it is
        self.revised_prompt = revised_prompt

    @classmethod
    def from_b64(
        cls,
        b64: str,
        format: OutputFormat,
        width: int,
        height: int,
        *,
        revised_prompt: str | None = None,
        source: str = "upstream",
    ) -> GeneratedImage:
        """An image known by its base64 only; decoded when ``data`` is first read."""
        return cls(None, format, width, height, revised_prompt, b64, source=source)

    @property
    def data(self) -> bytes:
        """The encoded image bytes (decoded from ``b64`` once, on first use)."""
        if self._data is None:
            assert self._b64 is not None
            try:
                # Exactly ``base64.b64decode(validate=True)``, minus its str -> bytes copy.
                self._data = binascii.a2b_base64(self._b64, strict_mode=True)
            except (binascii.Error, ValueError) as exc:
                raise UpstreamError(
                    f"{self._source} returned invalid base64", status=502, retryable=True
                ) from exc
        return self._data

    @property
    def b64(self) -> str:
        """Standard base64 of ``data``: the upstream's own text when it sent base64."""
        if self._b64 is None:
            assert self._data is not None
            self._b64 = binascii.b2a_base64(self._data, newline=False).decode("ascii")
        return self._b64

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GeneratedImage):
            return NotImplemented
        return (self.format, self.width, self.height, self.revised_prompt) == (
            other.format,
            other.width,
            other.height,
            other.revised_prompt,
        ) and self.data == other.data

    def __repr__(self) -> str:
        held = "bytes" if self._data is not None else "base64"
        return (
            f"GeneratedImage(format={self.format!r}, width={self.width}, "
            f"height={self.height}, held={held})"
        )


@dataclass(slots=True)
class TokenUsage:
    """Upstream token usage as reported (GPT image models bill by token)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, int] | None = None


@dataclass(slots=True)
class ImageResult:
    """What a provider adapter returns: images as bytes plus what it knows of usage."""

    images: list[GeneratedImage]
    usage: TokenUsage | None = None
    upstream_model: str | None = None
    quality: str | None = None
    background: str | None = None


@dataclass(slots=True)
class PartialImage:
    """A preview of output image ``index`` while it forms (``stream: true``).

    ``partial_index`` counts from 0 per output image, as OpenAI's ``partial_image_index``.
    """

    index: int
    partial_index: int
    image: GeneratedImage


# What Provider.stream yields: any number of partial images, then exactly one result.
StreamEvent = PartialImage | ImageResult
