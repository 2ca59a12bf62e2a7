"""The response shapes, built once for JSON and SSE (:func:`payloads`): OpenAI's
``ImagesResponse`` body and its ``image_generation.completed`` / ``image_edit.completed``
event share the image fields, ``usage`` and the gateway's ``meta``; the partial events
are :func:`partial_event`."""

from __future__ import annotations

import time
from typing import Any, Protocol

from imagegate.accounts.usage import caller_attempts
from imagegate.catalog.spec import EndpointSpec
from imagegate.core.size import Size
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, TokenUsage
from imagegate.providers.base import Provider
from imagegate.routing.plan import Attempt


class RouteFacts(Protocol):
    """What a routed request (JSON or stream) reports about where it went."""

    @property
    def provider(self) -> Provider: ...

    @property
    def endpoint(self) -> EndpointSpec: ...

    @property
    def attempts(self) -> list[Attempt]: ...


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
        "attempts": caller_attempts([a.to_dict() for a in routed.attempts]),
        "latency_ms": round(latency_ms, 1),
        "cost_usd": cost_usd,
    }


def payloads(
    req: ImageRequest,
    routed: RouteFacts,
    result: ImageResult,
    urls: list[str | None],
    *,
    model_id: str,
    generation_id: str,
    cost_usd: float,
    latency_ms: float,
) -> list[dict[str, Any]]:
    """What a completed request answers, ``usage`` and ``meta`` built once for both shapes:
    the JSON ``ImagesResponse`` (one payload), or a stream's completed events (one per
    image; ``req.stream``)."""
    usage = usage_block(result.usage, req, len(result.images), cost_usd, event=req.stream)
    block = None
    if req.meta:
        block = meta(
            routed,
            model_id=model_id,
            generation_id=generation_id,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
        )
    if not req.stream:
        return [response_body(req, result, urls, usage, block)]
    assert usage is not None  # a completed event always carries it
    kind = f"{event_prefix(req)}.completed"
    return [completed_event(kind, image, result, req, usage, block) for image in result.images]


def event_prefix(req: ImageRequest) -> str:
    """``image_generation`` or ``image_edit``: the events' type prefix."""
    return "image_generation" if req.operation == "generate" else "image_edit"


def response_body(
    req: ImageRequest,
    result: ImageResult,
    urls: list[str | None],
    usage: dict[str, Any] | None,
    meta_block: dict[str, Any] | None,
) -> dict[str, Any]:
    """The JSON ``ImagesResponse`` of ``result`` (its images conformed)."""
    images = result.images
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [image_entry(img, url) for img, url in zip(images, urls, strict=True)],
        **image_fields(images[0], result, req),
    }
    if usage is not None:
        body["usage"] = usage
    if meta_block is not None:
        body["meta"] = meta_block
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


def partial_event(image: GeneratedImage, req: ImageRequest, index: int) -> dict[str, Any]:
    """A stream's ``partial_image`` event (``index``: how many were sent before it)."""
    return {
        "type": f"{event_prefix(req)}.partial_image",
        "b64_json": image.b64,
        "created_at": int(time.time()),
        "size": str(Size(image.width, image.height)),
        "quality": req.quality or "auto",
        "background": req.background or "auto",
        "output_format": image.format,
        "partial_image_index": index,
    }


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
