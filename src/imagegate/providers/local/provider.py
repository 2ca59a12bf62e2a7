"""Provider type ``local``: diffusers pipelines on this machine, behind dynamic batching.

``upstream_model`` is a diffusers model directory or hub id. Generations run text-to-image;
variations and edits without an edit region run image-to-image; edits with a region (the
mask's transparent pixels, OpenAI's convention, or else the image's own transparent
pixels) run inpainting with that region as a white-means-repaint mask, and the pixels
outside it are copied back from the input so only the edit region changes.

Image ``i`` of ``n`` uses ``seed + i`` (a random base seed when none is given). Besides the
provider options (see ``settings``), a request may pass the diffusers parameters
``num_inference_steps``, ``guidance_scale``, ``strength`` and ``negative_prompt`` as extra
fields. ``stream()`` sends previews decoded from intermediate latents through the VAE.
Needs ``pip install imagegate[local]``; without torch and diffusers the provider reports
itself unavailable and the gateway runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import anyio.to_thread
from PIL import Image

from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import (
    GeneratedImage,
    ImageRequest,
    ImageResult,
    PartialImage,
    StreamEvent,
)
from imagegate.media.images import decode, encode
from imagegate.media.mask import edit_region, edit_region_from_image_alpha
from imagegate.providers.base import Capabilities, Provider, ProviderContext
from imagegate.providers.local.pipelines import (
    BatchKey,
    Engine,
    Mode,
    ModelLoadError,
    UnsupportedMode,
    Work,
    partial_steps,
)
from imagegate.providers.local.scheduler import BatchScheduler, PartialSink
from imagegate.providers.local.settings import parse_options

_EXECUTORS: dict[str, ThreadPoolExecutor] = {}  # one worker thread per device


def device_executor(device: str) -> ThreadPoolExecutor:
    executor = _EXECUTORS.get(device)
    if executor is None:
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"imagegate-local-{device}")
        _EXECUTORS[device] = executor
    return executor


def engine_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers"))


class LocalProvider(Provider):
    """Diffusers pipelines on a local device; needs no credentials."""

    type_name: ClassVar[str] = "local"
    requires_credentials: ClassVar[bool] = False
    # The defaults (every operation and format) but one input image and no transparency.
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_input_images=1, transparent_background=False, native_compression=True
    )

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.options = parse_options(config.id, config.options)
        self._installed = engine_installed()
        self._engine: Engine | None = None
        self._scheduler: BatchScheduler | None = None
        self._starting = asyncio.Lock()

    @property
    def available(self) -> bool:
        return self._installed

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        return await self._produce(request, upstream_model, None)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        return await self._produce(request, upstream_model, None)

    async def variation(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        return await self._produce(request, upstream_model, None)

    async def stream(
        self, request: ImageRequest, upstream_model: str
    ) -> AsyncIterator[StreamEvent]:
        """Previews as the worker thread decodes them, then the result."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[PartialImage] = asyncio.Queue()
        fmt = request.output_format or "png"

        def sink(index: int, partial_index: int, preview: Image.Image) -> None:
            data = encode(preview, fmt, request.output_compression)
            image = GeneratedImage(data, fmt, preview.width, preview.height)
            loop.call_soon_threadsafe(events.put_nowait, PartialImage(index, partial_index, image))

        wants = bool(request.partial_images)
        task = asyncio.create_task(self._produce(request, upstream_model, sink if wants else None))
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not events.empty():
                    yield events.get_nowait()
                yield task.result()
                return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def aclose(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.aclose()

    def stats(self) -> dict[str, Any]:
        engine = self._engine
        figures: dict[str, Any] = {"device": engine.device if engine else None}
        figures["queue"] = self._scheduler.snapshot() if self._scheduler else None
        return figures

    # -- internals -----------------------------------------------------------------------

    async def _produce(
        self, request: ImageRequest, upstream_model: str, sink: PartialSink | None
    ) -> ImageResult:
        key, work = await anyio.to_thread.run_sync(self._prepare, request, upstream_model)
        scheduler = await self._ready(upstream_model)
        try:
            images = await scheduler.submit(key, request.n, work, sink)
        except UnsupportedMode as exc:
            raise UpstreamError(
                str(exc),
                retryable=False,
                client_error=InvalidRequest(
                    f"Model '{upstream_model}' on provider '{self.id}' cannot do "
                    f"{request.operation}s.",
                    param="model",
                    code="unsupported_operation",
                ),
            ) from exc
        except (RuntimeError, ValueError) as exc:
            raise UpstreamError(
                f"local pipeline failed: {exc}", status=500, retryable=True
            ) from exc
        return await anyio.to_thread.run_sync(_finish, request, upstream_model, key, work, images)

    async def _ready(self, upstream_model: str) -> BatchScheduler:
        """Import torch, pick the device and load the model, all off the event loop."""
        async with self._starting:
            if self._engine is None or self._scheduler is None:
                self._engine = await anyio.to_thread.run_sync(Engine, self.options)
                self._scheduler = BatchScheduler(
                    self._engine.run,
                    device_executor(self._engine.device),
                    name=self.id,
                    max_batch_size=self.options.max_batch_size,
                    max_wait_s=self.options.max_wait_ms / 1000,
                    max_queue=self.options.max_queue,
                )
            if not self._engine.loaded(upstream_model):
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(
                        self._scheduler.executor, self._engine.load, upstream_model
                    )
                except ModelLoadError as exc:
                    raise UpstreamError(str(exc), status=503, retryable=True) from exc
        return self._scheduler

    def _prepare(self, request: ImageRequest, upstream_model: str) -> tuple[BatchKey, Work]:
        """Validate and decode inputs (in a worker thread); the batch key and payload."""
        defaults = self.options.for_model(upstream_model)
        width, height = request.width, request.height
        if width % 8 or height % 8:
            raise InvalidRequest(
                f"Invalid size '{width}x{height}' for a local diffusion model: width and height "
                "must be multiples of 8.",
                param="size",
                code="invalid_size",
            )
        steps = int(_extra_number(request, "num_inference_steps", defaults.steps, 1, 500))
        guidance = _extra_number(request, "guidance_scale", defaults.guidance_scale, 0, 100)
        negative = request.extra.get("negative_prompt")
        if negative is not None and not isinstance(negative, str):
            raise InvalidRequest("'negative_prompt' must be a string.", param="negative_prompt")
        first = request.seed if request.seed is not None else secrets.randbelow(2**31)
        work = Work(
            prompt=request.prompt or "",
            seeds=[first + i for i in range(request.n)],
            negative_prompt=negative or None,
        )
        mode: Mode = "text2img"
        strength = 1.0
        if request.operation != "generate":
            if not request.images:
                raise InvalidRequest(f"A {request.operation} needs an 'image'.", param="image")
            source = decode(request.images[0], param="image")
            region = None
            if request.operation == "edit":
                if request.mask is not None:
                    region = edit_region(decode(request.mask, param="mask"), (width, height))
                else:
                    region = edit_region_from_image_alpha(source)
            work.image = _rgb(source).resize((width, height), Image.Resampling.LANCZOS)
            if region is not None:
                mode = "inpaint"
                work.mask = region.resize((width, height), Image.Resampling.NEAREST)
            else:
                mode = "img2img"
            default_strength = 1.0 if mode == "inpaint" else defaults.strength
            strength = _extra_number(request, "strength", default_strength, 0, 1)
        loop_steps = steps if mode == "text2img" else min(int(steps * strength), steps)
        if loop_steps < 1:
            raise InvalidRequest(
                f"'strength' {strength:g} with {steps} steps leaves no denoising step; "
                "raise 'strength' or 'num_inference_steps'.",
                param="strength",
            )
        work.partial_steps = partial_steps(loop_steps, request.partial_images or 0)
        key = BatchKey(upstream_model, mode, width, height, steps, guidance, strength)
        return key, work


def _finish(
    request: ImageRequest, upstream_model: str, key: BatchKey, work: Work, images: list[Any]
) -> ImageResult:
    """Copy back the pixels outside an edit region, then encode (in a worker thread)."""
    fmt = request.output_format or "png"
    out: list[GeneratedImage] = []
    for image in images:
        if key.mode == "inpaint" and work.image is not None and work.mask is not None:
            image = Image.composite(image.convert("RGB"), work.image, work.mask)
        data = encode(image, fmt, request.output_compression)
        out.append(GeneratedImage(data, fmt, image.width, image.height))
    return ImageResult(
        images=out, upstream_model=upstream_model, quality=request.quality, background="opaque"
    )


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _extra_number(
    request: ImageRequest, name: str, default: float, low: float, high: float
) -> float:
    value = request.extra.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number from {low:g} to {high:g}.", param=name)
    return float(value)
