"""Typed request and response models, named as in the reference SDKs.

Requests serialise to the gateway's JSON (``None`` fields are left out, ``extra`` is merged
in so fields this SDK does not know yet still reach the upstream); responses keep the raw
dict in ``raw`` for the same reason.
"""

from __future__ import annotations

import base64
import builtins
import io
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import httpx

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# What an edit or variation accepts as an image: a path, raw bytes, an open binary file,
# or a string that is an http(s) URL, a data URL or a path.
ImageInput = str | Path | bytes | bytearray | IO[bytes]


@dataclass
class ProviderRoutingOptions:
    """The gateway's ``provider`` routing object."""

    order: list[str] | None = None
    only: list[str] | None = None
    ignore: list[str] | None = None
    include_alpha: bool | None = None
    allow_fallbacks: bool | None = None
    sort: str | None = None
    max_price: float | None = None
    require_parameters: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(kw_only=True)
class _Request:
    """Fields every Images request shares, and the JSON they become."""

    model: str | None = None
    n: int | None = None
    size: str | None = None
    response_format: str | None = None
    user: str | None = None
    provider: ProviderRoutingOptions | dict[str, Any] | None = None
    meta: bool | None = None
    usage: bool | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _FILE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON fields except the image inputs (which travel as files or URLs)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("extra", *self._FILE_FIELDS) or f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, ProviderRoutingOptions):
                value = value.to_dict()
            if value is not None:
                out[f.name] = value
        out.update(self.extra)
        return out

    @property
    def streaming(self) -> bool:
        return bool(getattr(self, "stream", False) or self.extra.get("stream"))


@dataclass(kw_only=True)
class ImageGenerationRequest(_Request):
    """``POST /images/generations``."""

    prompt: str = ""
    quality: str | None = None
    style: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    stream: bool | None = None
    partial_images: int | None = None


@dataclass(kw_only=True)
class ImagesEditRequest(_Request):
    """``POST /images/edits``: ``image`` is one input or a list of them (up to 16)."""

    image: ImageInput | list[ImageInput] | None = None
    prompt: str = ""
    mask: ImageInput | None = None
    quality: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    input_fidelity: str | None = None
    stream: bool | None = None
    partial_images: int | None = None

    _FILE_FIELDS: ClassVar[tuple[str, ...]] = ("image", "mask")


@dataclass(kw_only=True)
class ImageVariationRequest(_Request):
    """``POST /images/variations``."""

    image: ImageInput | None = None

    _FILE_FIELDS: ClassVar[tuple[str, ...]] = ("image",)


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
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None


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
