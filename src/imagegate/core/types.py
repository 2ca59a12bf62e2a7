"""Canonical request and result shapes, declared once and used by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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


@dataclass(slots=True)
class ImageRequest:
    """One validated request, whatever endpoint and encoding it arrived by.

    ``size`` is the caller's string ("auto" or "WxH"); ``width``/``height`` are the
    resolved pixel size the output must have. ``extra`` keeps fields the gateway does
    not know, for adapters that accept them.
    """

    operation: Operation
    model: str
    prompt: str | None = None
    n: int = 1
    size: str = "auto"
    width: int = 1024
    height: int = 1024
    quality: str | None = None
    style: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: OutputFormat | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    stream: bool = False
    partial_images: int | None = None
    user: str | None = None
    seed: int | None = None
    input_fidelity: str | None = None
    images: list[InputImage] = field(default_factory=list)
    mask: InputImage | None = None
    provider: RoutingPreferences = field(default_factory=RoutingPreferences)
    meta: bool = False
    usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class GeneratedImage:
    """One output image as bytes, with the format the bytes are actually in."""

    data: bytes
    format: OutputFormat
    width: int
    height: int
    revised_prompt: str | None = None
    b64: str | None = None  # the upstream's own base64 of ``data``, reused to skip re-encoding


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
