"""OpenAI Images API wire helpers shared by the OpenAI family's adapters: decoding an
``ImagesResponse`` (errors, usage, several calls merged) and building multipart parts."""

from __future__ import annotations

from typing import Any

import httpx

from imagegate.core.errors import InvalidRequest
from imagegate.core.types import ImageResult, InputImage, TokenUsage
from imagegate.providers._shared.common import json_reply, retry_after


def merge_results(results: list[ImageResult]) -> ImageResult:
    """One result from fanned-out calls: images in call order, token usage summed."""
    first = results[0]
    if len(results) == 1:
        return first
    usages = [r.usage for r in results if r.usage is not None]
    usage = None
    if usages:
        details: dict[str, int] = {}
        for u in usages:
            for key, value in (u.input_tokens_details or {}).items():
                details[key] = details.get(key, 0) + value
        usage = TokenUsage(
            input_tokens=sum(u.input_tokens for u in usages),
            output_tokens=sum(u.output_tokens for u in usages),
            total_tokens=sum(u.total_tokens for u in usages),
            input_tokens_details=details or None,
        )
    return ImageResult(
        images=[image for r in results for image in r.images],
        usage=usage,
        upstream_model=first.upstream_model,
        quality=first.quality,
        background=first.background,
    )


def _unsupported(provider_id: str, model: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"Model '{model}' on provider '{provider_id}' does not support {what}.",
        param="model",
        code="unsupported_operation",
    )


def _retry_after(response: httpx.Response) -> float | None:
    """``retry-after-ms`` (which OpenAI and Azure send, more precise) before ``retry-after``."""
    value = response.headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    return retry_after(response)


def _file(image: InputImage) -> tuple[str, bytes, str]:
    return (f"{image.filename or 'image'}.{image.format}", image.data, image.mime_type)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def _json(provider_id: str, response: httpx.Response) -> Any:
    """An upstream that answered a stream request with plain JSON (it ignored ``stream``)."""
    await response.aread()
    return json_reply(provider_id, response)


def _usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details")
    return TokenUsage(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        total_tokens=_int(raw.get("total_tokens")),
        input_tokens_details=(
            {k: _int(v) for k, v in details.items()} if isinstance(details, dict) else None
        ),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
