"""Typed request and response models, named as in the reference SDKs.

The request models are generated from the gateway's field declaration
(``generated_models``; they serialise to the gateway's JSON through ``model_base``);
responses keep the raw dict in ``raw`` so fields this SDK does not know yet are not lost.
"""

from __future__ import annotations

import base64
import builtins
import io
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from imagegate_client.generated_models import (
    ImageGenerationRequest,
    ImagesEditRequest,
    ImageVariationRequest,
    ProviderRoutingOptions,
)
from imagegate_client.model_base import ImageInput

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "Attempt",
    "Image",
    "ImageGenerationRequest",
    "ImageGenerationResponse",
    "ImageInput",
    "ImageVariationRequest",
    "ImagesEditRequest",
    "ImagesResponse",
    "Meta",
    "ProviderRoutingOptions",
    "Usage",
]


@dataclass
class Usage:
    """Token counts from upstreams that report them; ``cost_usd``/``images`` with
    ``usage: true``."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: dict[str, Any] | None = None
    cost_usd: float | None = None
    images: int | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        return cls(**{f.name: raw.get(f.name) for f in fields(cls)})


@dataclass
class Attempt:
    """One upstream attempt the router made for a request."""

    provider: str
    status: int | str | None = None  # the upstream's HTTP status, or "error" / "cancelled"
    latency_ms: float | None = None
    error: str | None = None
    upstream_model: str | None = None
    cost_micro: int | None = None  # what the provider bills the operator for this call


@dataclass
class Meta:
    """The gateway's ``meta`` block (request it with ``meta=True``)."""

    generation_id: str | None = None
    model: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    latency_ms: float | None = None
    cost_usd: float | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Meta | None:
        if not isinstance(raw, dict):
            return None
        attempts = [
            Attempt(
                provider=str(a.get("provider")),
                status=a.get("status"),
                latency_ms=a.get("latency_ms"),
                error=a.get("error"),
                upstream_model=a.get("upstream_model"),
                cost_micro=a.get("cost_micro"),
            )
            for a in raw.get("attempts") or []
            if isinstance(a, dict)
        ]
        simple = {f.name: raw.get(f.name) for f in fields(cls) if f.name != "attempts"}
        return cls(attempts=attempts, **simple)


@dataclass
class Image:
    """One output image: ``b64_json`` or a signed ``url`` (valid for about an hour)."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    timeout: float = field(default=60.0, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], timeout: float = 60.0) -> Image:
        return cls(raw.get("b64_json"), raw.get("url"), raw.get("revised_prompt"), timeout)

    def bytes(self) -> bytes:
        """The encoded image (PNG, JPEG or WebP), downloading ``url`` images."""
        if self.b64_json is not None:
            return base64.b64decode(self.b64_json)
        if self.url is None:
            raise ValueError("this image has neither b64_json nor url")
        response = httpx.get(self.url, timeout=self.timeout, follow_redirects=True)
        response.raise_for_status()
        return response.content

    async def abytes(self) -> builtins.bytes:
        """``bytes()`` without blocking the event loop."""
        if self.b64_json is not None or self.url is None:
            return self.bytes()
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as http:
            response = await http.get(self.url)
        response.raise_for_status()
        return response.content

    def save(self, path: str | Path) -> Path:
        """Write the image to ``path`` (parents created) and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.bytes())
        return target

    def to_pil(self) -> PILImage:
        """The image as a loaded Pillow image."""
        from PIL import Image as PIL

        image = PIL.open(io.BytesIO(self.bytes()))
        image.load()
        return image


@dataclass
class ImageGenerationResponse:
    """OpenAI's ``ImagesResponse`` plus the gateway's ``usage`` and ``meta``."""

    created: int
    data: list[Image]
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    usage: Usage | None = None
    meta: Meta | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], timeout: float = 60.0) -> ImageGenerationResponse:
        return cls(
            created=int(raw.get("created") or 0),
            data=[Image.from_dict(d, timeout) for d in raw.get("data") or []],
            size=raw.get("size"),
            quality=raw.get("quality"),
            background=raw.get("background"),
            output_format=raw.get("output_format"),
            usage=Usage.from_dict(raw.get("usage")),
            meta=Meta.from_dict(raw.get("meta")),
            raw=raw,
        )


ImagesResponse = ImageGenerationResponse  # the OpenAI-spec SDKs' name
