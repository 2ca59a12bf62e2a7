"""Build the OpenAI ``ImagesResponse`` body from what the router produced."""

from __future__ import annotations

import time
from typing import Any

from imagegate.core.types import GeneratedImage, ImageRequest, TokenUsage
from imagegate.routing.plan import Routed


def image_entry(image: GeneratedImage, url: str | None) -> dict[str, Any]:
    """One ``data`` item: exactly one of ``url`` or ``b64_json``, never a null beside it."""
    entry: dict[str, Any] = {}
    if url is not None:
        entry["url"] = url
    else:
        entry["b64_json"] = image.b64  # the upstream's own text when it sent base64
    if image.revised_prompt:
        entry["revised_prompt"] = image.revised_prompt
    return entry


def response_body(
    req: ImageRequest,
    routed: Routed,
    images: list[GeneratedImage],
    urls: list[str | None],
    *,
    model_id: str,
    generation_id: str,
    cost_usd: float,
    latency_ms: float,
) -> dict[str, Any]:
    result = routed.result
    first = images[0]
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [image_entry(img, url) for img, url in zip(images, urls, strict=True)],
        "background": result.background or req.background or "opaque",
        "output_format": first.format,
        "quality": result.quality or req.quality or "auto",
        "size": f"{first.width}x{first.height}",
    }
    usage = _usage(result.usage, req, len(images), cost_usd)
    if usage is not None:
        body["usage"] = usage
    if req.meta:
        body["meta"] = {
            "generation_id": generation_id,
            "model": model_id,
            "provider": routed.provider.id,
            "upstream_model": routed.endpoint.upstream_model,
            "attempts": [a.to_dict() for a in routed.attempts],
            "latency_ms": round(latency_ms, 1),
            "cost_usd": cost_usd,
        }
    return body


def _usage(
    tokens: TokenUsage | None, req: ImageRequest, images: int, cost_usd: float
) -> dict[str, Any] | None:
    if tokens is None and not req.usage:
        return None
    usage: dict[str, Any] = {}
    if tokens is not None:
        usage = {
            "input_tokens": tokens.input_tokens,
            "output_tokens": tokens.output_tokens,
            "total_tokens": tokens.total_tokens,
        }
        if tokens.input_tokens_details is not None:
            usage["input_tokens_details"] = tokens.input_tokens_details
    if req.usage:
        usage["images"] = images
        usage["cost_usd"] = cost_usd
    return usage
