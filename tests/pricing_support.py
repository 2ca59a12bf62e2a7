"""Builders for the pricing tests: a model's pricing from its config form, a resolved
request, and an upstream result with the sizes it produced."""

from __future__ import annotations

from typing import Any

from imagegate.catalog.pricing import Pricing
from imagegate.catalog.spec import parse_model
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, TokenUsage
from request_support import image_request


def pricing(raw: Any) -> Pricing:
    spec = parse_model(
        {"id": "t/m", "endpoints": [{"provider": "p", "upstream_model": "u", "pricing": raw}]}
    )
    return spec.endpoints[0].pricing


def req(size: str = "1024x1024", *, prompt: str = "", **kw: Any) -> ImageRequest:
    """A request as it leaves the API layer (``auto`` resolved to 1024x1024); token prices
    count the prompt's bytes, so the default prompt is empty."""
    width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
    base: dict[str, Any] = {"operation": "generate", "model": "t/m", "prompt": prompt}
    return image_request(**{**base, "size": size, "width": width, "height": height, **kw})


def result(*sizes: tuple[int, int], usage: TokenUsage | None = None, **kw: Any) -> ImageResult:
    images = [GeneratedImage(data=b"", format="png", width=w, height=h) for w, h in sizes]
    return ImageResult(images=images, usage=usage, **kw)
