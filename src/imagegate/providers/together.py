"""Adapter for Together AI's image endpoint.

Wire protocol (Together API reference, "Create image", docs.together.ai/reference/
post-images-generations; official SDK togethercomputer/together-py
``src/together/types/image_generate_params.py``): one synchronous ``POST
/v1/images/generations`` with ``Authorization: Bearer``, a JSON body ``{model, prompt,
width, height, n, seed, steps, negative_prompt, response_format: "base64" | "url",
output_format: "jpeg" | "png", image_url, ...}`` and a reply ``{"id", "model",
"object": "list", "data": [{"index", "b64_json" | "url"}]}``. Failures are
``{"error": {"message", "type", "param", "code"}}`` (together-python
``types/error.py``); statuses per docs.together.ai/docs/error-codes.

Normalisation:

* Size: Together takes any ``width``/``height``. The requested size is scaled down (aspect
  kept) until both sides fit ``[min_side, max_side]`` (256..1920 by default, options
  ``min_side``/``max_side``), then each side is rounded to the nearest multiple of
  ``size_multiple`` (16). The gateway reports the size the image really has.
* ``n``: at most ``max_n_per_call`` (4) per request; more fan out in parallel, and call
  ``k`` gets ``seed + <index of its first image>`` so batches never repeat each other. A
  reply with fewer images than asked is topped up once.
* Edits: Kontext models take the single input image as ``image_url`` (sent as a data
  URL). Masks are not supported; more than one image is refused naming the limit.
* Output: ``jpeg``/``png`` are passed as ``output_format``; webp is re-encoded by the
  gateway. Result URLs are fetched through the gateway's guarded fetcher.
* Errors: 402 (the account's spending limit) fails over like 401; a 4xx whose message
  names NSFW/unsafe content becomes ``content_policy_violation`` (Together documents no
  code for it, so the message is the only signal).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import httpx

from imagegate.core.errors import UpstreamError
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult
from imagegate.providers._shared.answers import OpenAIStyleError, item_image, post_for_data
from imagegate.providers._shared.common import (
    bad_upstream,
    caller_fields,
    data_url,
    fan_out,
)
from imagegate.providers._shared.inputs import limit_images, refuse_mask
from imagegate.providers.base import Provider, generate_and_edit

DEFAULT_BASE_URL = "https://api.together.xyz/v1"
MAX_N_PER_CALL = 4
MAX_INPUT_IMAGES = 1
# Caller fields Together understands, forwarded from ``ImageRequest.extra`` as given
# (``options.pass_through`` replaces this list; ``disable_safety_checker`` is operator-only
# unless listed there).
_EXTRA_FIELDS = (
    "steps",
    "negative_prompt",
    "guidance_scale",
    "guidance",
    "image_loras",
    "prompt_upsampling",
)
_POLICY_WORDS = ("nsfw", "unsafe content", "content policy", "safety filter", "moderation")


class TogetherProvider(Provider):
    type_name = "together"
    default_base_url = DEFAULT_BASE_URL
    capabilities = generate_and_edit(
        MAX_INPUT_IMAGES, MAX_N_PER_CALL, "png jpeg", supports_mask=False
    )

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        body = self._body(request, upstream_model)
        return await self._run(request, body, upstream_model)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        refuse_mask(
            request,
            f"Provider '{self.id}' does not accept a mask: Kontext edits follow the "
            "prompt over the whole image.",
        )
        limit_images(
            request,
            MAX_INPUT_IMAGES,
            f"Provider '{self.id}' accepts at most {MAX_INPUT_IMAGES} input image for "
            f"edits; got {len(request.images)}.",
        )
        body = self._body(request, upstream_model)
        body["image_url"] = data_url(request.images[0].data, request.images[0].mime_type)
        return await self._run(request, body, upstream_model)

    def _body(self, request: ImageRequest, upstream_model: str) -> dict[str, Any]:
        width, height = self._dimensions(request.width, request.height)
        body: dict[str, Any] = {
            "model": upstream_model,
            "prompt": request.prompt,
            "width": width,
            "height": height,
            "response_format": self.config.options.get("response_format", "base64"),
        }
        if request.output_format in ("png", "jpeg"):
            body["output_format"] = request.output_format
        body.update(caller_fields(self.config.options, request.extra, _EXTRA_FIELDS))
        return body

    def _dimensions(self, width: int, height: int) -> tuple[int, int]:
        """Fit ``width`` x ``height`` into Together's bounds (see the module docstring)."""
        options = self.config.options
        low = int(options.get("min_side", 256))
        high = int(options.get("max_side", 1920))
        step = int(options.get("size_multiple", 16))
        scale = min(1.0, high / max(width, height))
        if min(width, height) * scale < low:  # too small (or too thin): grow the short side
            scale = low / min(width, height)

        def fit(side: int) -> int:
            rounded = int(side * scale / step + 0.5) * step  # half up, not to even
            return min(max(rounded, low), high)

        return fit(width), fit(height)

    async def _run(
        self, request: ImageRequest, body: dict[str, Any], upstream_model: str
    ) -> ImageResult:
        per_call = int(self.config.options.get("max_n_per_call", MAX_N_PER_CALL))
        first = [0]  # index of the next batch's first image

        def batch(k: int) -> Awaitable[list[GeneratedImage]]:
            # fan_out calls this in order as it creates the calls, so every batch gets
            # its own seeds before any of them runs.
            offset, first[0] = first[0], first[0] + k
            return self._batch(body, k, request.seed, offset)

        images = await fan_out(request.n, per_call, batch)
        if len(images) < request.n:  # some models make fewer than asked: top up once
            missing = request.n - len(images)
            images += await fan_out(missing, per_call, batch)
        if len(images) < request.n:
            raise bad_upstream(self.id, f"returned {len(images)} of {request.n} images")
        return ImageResult(images=images[: request.n], upstream_model=upstream_model)

    async def _batch(
        self, body: dict[str, Any], n: int, seed: int | None, offset: int
    ) -> list[GeneratedImage]:
        payload = {**body, "n": n}
        if seed is not None:
            payload["seed"] = seed + offset
        return await self._post(payload)

    async def _post(self, payload: dict[str, Any]) -> list[GeneratedImage]:
        url = f"{self.base_url}/images/generations"
        items = await post_for_data(self, url, payload, self._error)
        return [await item_image(self.id, self.context.fetch_url, item) for item in items]

    def _error(self, response: httpx.Response) -> UpstreamError:
        error = OpenAIStyleError.read(response, flat=True)
        status = response.status_code
        policy = 400 <= status < 500 and any(w in error.message.lower() for w in _POLICY_WORDS)
        return error.upstream(self.id, response, content_policy=policy)
