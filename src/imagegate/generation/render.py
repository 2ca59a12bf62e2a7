"""The response shapes, built once for JSON and SSE: OpenAI's ``ImagesResponse`` body and
its ``image_generation.completed`` / ``image_edit.completed`` event share the image fields,
``usage`` and the gateway's ``meta``."""

from __future__ import annotations

import time
from typing import Any, Protocol

from imagegate.catalog.spec import EndpointSpec
from imagegate.core.size import Size
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, TokenUsage
from imagegate.providers.base import Provider
from imagegate.routing.plan import Attempt


class RouteFacts(Protocol):
    """What a routed request (JSON or stream) reports about where it went."""

    provider: Provider
    endpoint: EndpointSpec
    attempts: list[Attempt]


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


def image_fields(image: GeneratedImage, result: ImageResult, req: ImageRequest) -> dict[str, Any]:
    """``background``, ``output_format``, ``quality``, ``size``: as delivered."""
    return {
        "background": result.background or req.background or "opaque",
        "output_format": image.format,
        "quality": result.quality or req.quality or "auto",
        "size": str(Size(image.width, image.height)),
    }


def meta(
    routed: RouteFacts, *, model_id: str, generation_id: str, cost_usd: float, latency_ms: float
) -> dict[str, Any]:
    """The gateway's ``meta`` (asked for with ``meta: true``)."""
    return {
        "generation_id": generation_id,
        "model": model_id,
        "provider": routed.provider.id,
        "upstream_model": routed.endpoint.upstream_model,
        "attempts": [a.to_dict() for a in routed.attempts],
        "latency_ms": round(latency_ms, 1),
        "cost_usd": cost_usd,
    }


def response_body(
    req: ImageRequest,
    routed: RouteFacts,
    result: ImageResult,
    urls: list[str | None],
    *,
    model_id: str,
    generation_id: str,
    cost_usd: float,
    latency_ms: float,
) -> dict[str, Any]:
    """The JSON ``ImagesResponse`` of ``result`` (its images conformed)."""
    images = result.images
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [image_entry(img, url) for img, url in zip(images, urls, strict=True)],
        **image_fields(images[0], result, req),
    }
    usage = usage_block(result.usage, req, len(images), cost_usd)
    if usage is not None:
        body["usage"] = usage
    if req.meta:
        body["meta"] = meta(
            routed,
            model_id=model_id,
            generation_id=generation_id,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
        )
    return body


def completed_event(
    kind: str,
    image: GeneratedImage,
    result: ImageResult,
    req: ImageRequest,
    usage: dict[str, Any],
    meta_block: dict[str, Any] | None,
) -> dict[str, Any]:
    """A stream's completed event for one image (``usage`` from :func:`usage_block`)."""
    data: dict[str, Any] = {
        "type": kind,
        "b64_json": image.b64,
        "created_at": int(time.time()),
        **image_fields(image, result, req),
        "usage": usage,
    }
    if meta_block is not None:
        data["meta"] = meta_block
    return data


def usage_block(
    tokens: TokenUsage | None,
    req: ImageRequest,
    images: int,
    cost_usd: float,
    *,
    event: bool = False,
) -> dict[str, Any] | None:
    """OpenAI's ``usage`` plus the gateway's ``images`` and ``cost_usd`` when the request
    asked for ``usage``. A JSON body has it only with tokens or ``usage: true``; a completed
    event always (zero tokens when the upstream bills per image), as OpenAI sends it."""
    usage: dict[str, Any] = {}
    if event:
        usage = {
            "input_tokens": tokens.input_tokens if tokens else 0,
            "output_tokens": tokens.output_tokens if tokens else 0,
            "total_tokens": tokens.total_tokens if tokens else 0,
            "input_tokens_details": (tokens.input_tokens_details if tokens else None)
            or {"image_tokens": 0, "text_tokens": 0},
        }
    elif tokens is None and not req.usage:
        return None
    elif tokens is not None:
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
