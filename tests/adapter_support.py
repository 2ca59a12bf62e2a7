"""What the adapter tests in ``tests/providers/`` share besides fixtures (those are in
``tests/providers/conftest.py``): test images as an adapter receives them (``InputImage``),
the requests it is given, the adapter built from a config entry, and the failure it raises."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest, ImageResult, InputImage, OutputFormat
from imagegate.providers.base import Provider, ProviderContext
from imagegate.upstream.fetch import SafeFetcher
from request_support import image_request

P = TypeVar("P", bound=Provider)


def png(
    width: int,
    height: int,
    *,
    mode: str = "RGB",
    colour: tuple[int, ...] = (200, 30, 30, 255),
    hole: tuple[int, int, int, int] | None = None,
    fmt: OutputFormat = "png",
) -> InputImage:
    """A solid image (``colour`` cut to the mode's bands); ``hole`` is a box made fully
    transparent, the edit area of an OpenAI-style mask (mode ``RGBA``)."""
    img = Image.new(mode, (width, height), colour[: len(mode)])
    if hole is not None:
        img.paste((0, 0, 0, 0), hole)
    buffer = io.BytesIO()
    img.save(buffer, fmt.upper())
    return InputImage(data=buffer.getvalue(), format=fmt, width=width, height=height)


def openai_mask(width: int, height: int) -> InputImage:
    """OpenAI's convention: opaque everywhere except a transparent right half (= edit)."""
    right_half = (width // 2, 0, width, height)
    return png(width, height, mode="RGBA", colour=(0, 0, 0, 255), hole=right_half)


def white_mask(width: int, height: int, box: tuple[int, int, int, int]) -> InputImage:
    """A greyscale mask in the other convention: white inside ``box`` (edit), black
    elsewhere (keep)."""
    img = Image.new("L", (width, height), 0)
    img.paste(255, box)
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return InputImage(data=buffer.getvalue(), format="png", width=width, height=height)


def gen(prompt: str = "a red fox", **fields: Any) -> ImageRequest:
    """A generation request as the gateway hands it over (its public model id is not the
    adapter's business, so it is a placeholder)."""
    return image_request(operation="generate", model="m", prompt=prompt, **fields)


def edit(images: list[InputImage], prompt: str = "make it blue", **fields: Any) -> ImageRequest:
    return image_request(operation="edit", model="m", prompt=prompt, images=images, **fields)


def adapter(
    kind: type[P],
    context: ProviderContext,
    *,
    base_url: str | None,
    api_key: str | None,
    timeout_s: float = 120.0,
    **options: Any,
) -> P:
    """The adapter as the gateway builds it from a config entry named after its type."""
    config = ProviderConfig(
        id=kind.type_name,
        type=kind.type_name,
        base_url=base_url,
        api_key=api_key,
        timeout_s=timeout_s,
        options=options,
    )
    return kind(config, context)


@asynccontextmanager
async def fetching_context(
    http: httpx.AsyncClient, upstream_url: str
) -> AsyncIterator[ProviderContext]:
    """The ``ProviderContext`` the gateway gives an adapter: ``http`` for its calls, and a
    URL fetcher that trusts only the fake upstream at ``upstream_url``."""
    host = urlsplit(upstream_url).netloc
    async with SafeFetcher(allow_hosts=[host], max_bytes=16 << 20, timeout_s=5) as fetcher:
        yield ProviderContext(http, lambda url: fetcher.fetch(url, param="upstream"))


async def run_once(
    kind: type[Provider],
    upstream_url: str,
    request: ImageRequest,
    model: str,
    *,
    base_url: str,
    api_key: str,
    **options: Any,
) -> ImageResult:
    """One request through an adapter built for it (own client, ``fetching_context`` on the
    fake upstream at ``upstream_url``), for tests that take no ``context`` fixture."""
    async with httpx.AsyncClient() as http, fetching_context(http, upstream_url) as context:
        built = adapter(kind, context, base_url=base_url, api_key=api_key, **options)
        return await built.run(request, model)


async def default_base_url(kind: type[Provider], api_key_env: str) -> str:
    """The base URL of an adapter configured with no ``base_url`` (its provider's API)."""
    config = ProviderConfig(id=kind.type_name, type=kind.type_name, api_key_env=api_key_env)
    async with httpx.AsyncClient() as http:
        return kind(config, ProviderContext(http, no_fetch)).base_url


async def no_fetch(url: str) -> bytes:
    """The URL fetcher of an adapter that must never fetch a URL."""
    raise AssertionError(f"the adapter fetched a URL: {url}")


async def upstream_failure(provider: Provider, request: ImageRequest, model: str) -> UpstreamError:
    """What the adapter raises when the upstream (or the way to it) fails."""
    with pytest.raises(UpstreamError) as info:
        await provider.run(request, model)
    return info.value


async def refusal(provider: Provider, request: ImageRequest, model: str) -> InvalidRequest:
    """What the adapter raises for a request it cannot serve (the caller's error)."""
    with pytest.raises(InvalidRequest) as info:
        await provider.run(request, model)
    return info.value
