"""The provider interface every adapter implements.

An adapter turns a validated ``ImageRequest`` into upstream wire calls and returns an
``ImageResult`` with image bytes. It knows nothing of keys, credits or routing; it raises
``UpstreamError`` (retryable or not) and lets the router decide what happens next.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httpx

from imagegate.core.errors import InvalidRequest
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest, ImageResult, Operation, OutputFormat, StreamEvent

# Fetches an upstream-returned image URL (size and time capped); returns the bytes.
UrlFetcher = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter can do natively; the gateway normalises the rest or refuses."""

    operations: frozenset[Operation] = frozenset({"generate", "edit", "variation"})
    max_input_images: int = 16
    supports_mask: bool = True
    output_formats: frozenset[OutputFormat] = frozenset({"png", "jpeg", "webp"})
    transparent_background: bool = True
    supports_seed: bool = True
    max_n_per_call: int = 10
    native_compression: bool = False  # honours output_compression itself

    def unsupported(self, request: ImageRequest) -> list[str]:
        """The request's parameters this adapter cannot honour natively (for the router's
        ``require_parameters``); an empty list means it can honour them all."""
        missing: list[str] = []
        if request.operation not in self.operations:
            missing.append("operation")
        if len(request.images) > self.max_input_images:
            missing.append("image")
        if request.mask is not None and not self.supports_mask:
            missing.append("mask")
        if request.output_format is not None and request.output_format not in self.output_formats:
            missing.append("output_format")
        if request.background == "transparent" and not self.transparent_background:
            missing.append("background")
        if request.seed is not None and not self.supports_seed:
            missing.append("seed")
        if request.output_compression is not None and not self.native_compression:
            missing.append("output_compression")
        return missing


def generate_and_edit(
    max_inputs: int, max_per_call: int, formats: str = "png jpeg webp", **more: Any
) -> Capabilities:
    """Generate and edit, opaque output: the common ground of the hosted image APIs.

    ``max_inputs`` images per edit, ``max_per_call`` images per upstream call, ``formats``
    the output formats it encodes itself (space-separated); ``more`` the provider's other
    differences from the ``Capabilities`` defaults."""
    return Capabilities(
        operations=frozenset({"generate", "edit"}),
        max_input_images=max_inputs,
        max_n_per_call=max_per_call,
        output_formats=frozenset(cast(list[OutputFormat], formats.split())),
        transparent_background=False,
        **more,
    )


@dataclass(slots=True)
class ProviderContext:
    """Shared resources handed to adapters: one pooled HTTP client and a URL fetcher."""

    http: httpx.AsyncClient
    fetch_url: UrlFetcher


class Provider(ABC):
    """Base class of all adapters. Subclasses set ``type_name`` and ``capabilities``."""

    type_name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    requires_credentials: ClassVar[bool] = True
    # The upstream's public API, used where the provider entry sets no ``base_url``.
    default_base_url: ClassVar[str] = ""

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        self.config = config
        self.context = context

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def base_url(self) -> str:
        """Where the upstream's API lives, without a trailing slash."""
        return (self.config.base_url or self.default_base_url).rstrip("/")

    @property
    def available(self) -> bool:
        """True when the adapter has what it needs to call its upstream."""
        return not self.requires_credentials or self.config.resolved_api_key() is not None

    async def run(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        """Dispatch on the request's operation."""
        if request.operation not in self.capabilities.operations:
            raise InvalidRequest(
                f"Provider '{self.id}' does not support {request.operation}.",
                param="model",
                code="unsupported_operation",
            )
        if request.operation == "generate":
            return await self.generate(request, upstream_model)
        if request.operation == "edit":
            return await self.edit(request, upstream_model)
        return await self.variation(request, upstream_model)

    @abstractmethod
    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult: ...

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        raise InvalidRequest(f"Provider '{self.id}' does not support edits.", param="model")

    async def variation(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        raise InvalidRequest(f"Provider '{self.id}' does not support variations.", param="model")

    async def stream(
        self, request: ImageRequest, upstream_model: str
    ) -> AsyncIterator[StreamEvent]:
        """Partial images (at most ``request.partial_images`` per output image), then
        exactly one :class:`ImageResult`. Adapters without previews keep this default,
        which sends only the finished result."""
        yield await self.run(request, upstream_model)

    async def aclose(self) -> None:
        """Release adapter-owned resources (the shared HTTP client is closed elsewhere)."""
        return None

    def stats(self) -> dict[str, Any]:
        """Engine figures for ``/healthz`` (e.g. a local engine's queue and batch sizes)."""
        return {}
