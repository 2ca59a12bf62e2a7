"""Adapter for xAI's Grok Imagine image API.

Wire protocol (docs.x.ai "Image Generation" / "Imagine overview" and "Debugging Errors";
the request enums match the official SDK xai-org/xai-sdk-python
``src/xai_sdk/types/image.py``; the REST edit body matches Vercel's ``@ai-sdk/xai``
``packages/xai/src/xai-image-model.ts``): ``Authorization: Bearer``, JSON only.

* ``POST /v1/images/generations`` ``{model, prompt, n (1-10), response_format: "url" |
  "b64_json", aspect_ratio, resolution: "1k" | "2k", user}``.
* ``POST /v1/images/edits`` the same plus ``image: {"type": "image_url", "url"}`` (a URL or
  a base64 data URI) or ``images: [...]`` for up to 3 sources. xAI documents no mask.
* Reply ``{"data": [{"b64_json" | "url", "mime_type"?, "revised_prompt"?}]}``; an image
  withheld by moderation has ``respect_moderation: false`` and no bytes.
* Errors come as ``{"code": "<status text>", "error": "<message>"}`` (what the API sends
  today) or OpenAI-style ``{"error": {"message", "code"}}``; both are read. Per the
  debugging page a wrong API key is a *400* whose message says so: it is treated as 401.
  A 404 means the model in the body was not found (our paths are fixed): the model is
  gone. Exhausted credits come as 429 or 403 "... used all available credits or reached
  its monthly spending limit": ours, failed over at once, never waited out.

Normalisation: xAI takes no ``size``. A sized request maps to the nearest documented
``aspect_ratio`` (compared in log space) and to ``resolution`` "2k" when it asks for more
than 2 megapixels (the log-space midpoint of 1k and 2k), else "1k"; ``size: auto`` sends
neither and lets xAI choose. A single-image edit keeps its input's aspect ratio (xAI's
rule), so only multi-image edits send ``aspect_ratio``. The gateway reports the size the
image really has. Output is JPEG; other formats are re-encoded by the gateway. ``seed``
is not supported by xAI.
"""

from __future__ import annotations

from typing import Any

import httpx

from imagegate.core.errors import UpstreamError
from imagegate.core.size import Size
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult
from imagegate.providers._shared.answers import (
    error_json,
    failure,
    item_image,
    post_for_data,
    refusal,
)
from imagegate.providers._shared.common import (
    bad_upstream,
    data_url,
    nearest_aspect_ratio,
)
from imagegate.providers._shared.inputs import limit_images, refuse_mask
from imagegate.providers.base import Provider, generate_and_edit

DEFAULT_BASE_URL = "https://api.x.ai/v1"
MAX_N = 10
MAX_INPUT_IMAGES = 3
ASPECT_RATIOS = (
    "1:1",
    "3:4",
    "4:3",
    "9:16",
    "16:9",
    "2:3",
    "3:2",
    "9:19.5",
    "19.5:9",
    "9:20",
    "20:9",
    "1:2",
    "2:1",
)
TWO_K_ABOVE_PIXELS = 2 * 1024 * 1024
_POLICY_WORDS = ("moderation", "content policy", "safety", "violat")
# Exhausted credits come as 429 or 403 with this wording (docs/providers.md cites the
# reports): about our account, so failed over at once and never waited out.
_CREDIT_WORDS = ("used all available credits", "spending limit")


class XAIProvider(Provider):
    type_name = "xai"
    default_base_url = DEFAULT_BASE_URL
    capabilities = generate_and_edit(
        MAX_INPUT_IMAGES, MAX_N, "jpeg", supports_mask=False, supports_seed=False
    )

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        body = self._body(request, upstream_model, aspect=True)
        return await self._collect("/images/generations", body, request.n, upstream_model)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        refuse_mask(
            request,
            f"Provider '{self.id}' does not accept a mask: xAI edits follow the prompt "
            "over the whole image.",
        )
        limit_images(
            request,
            MAX_INPUT_IMAGES,
            f"Provider '{self.id}' accepts at most {MAX_INPUT_IMAGES} input images for "
            f"edits; got {len(request.images)}.",
        )
        sources = [
            {"type": "image_url", "url": data_url(img.data, img.mime_type)}
            for img in request.images
        ]
        body = self._body(request, upstream_model, aspect=len(sources) > 1)
        if len(sources) == 1:
            body["image"] = sources[0]
        else:
            body["images"] = sources
        return await self._collect("/images/edits", body, request.n, upstream_model)

    def _body(self, request: ImageRequest, upstream_model: str, *, aspect: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": upstream_model,
            "prompt": request.prompt,
            "response_format": self.config.options.get("response_format", "b64_json"),
        }
        if request.size != "auto":
            if aspect:
                body["aspect_ratio"] = nearest_aspect_ratio(
                    request.width, request.height, ASPECT_RATIOS
                )
            pixels = Size(request.width, request.height).pixels
            body["resolution"] = "2k" if pixels > TWO_K_ABOVE_PIXELS else "1k"
        if request.user:
            body["user"] = request.user
        return body

    async def _collect(
        self, path: str, body: dict[str, Any], n: int, upstream_model: str
    ) -> ImageResult:
        """Ask for ``n`` images; if fewer come back, ask once more for the rest."""
        images = await self._post(path, {**body, "n": n})
        if 0 < len(images) < n:
            images += await self._post(path, {**body, "n": n - len(images)})
        if len(images) < n:
            raise bad_upstream(self.id, f"returned {len(images)} of {n} images")
        return ImageResult(images=images[:n], upstream_model=upstream_model)

    async def _post(self, path: str, payload: dict[str, Any]) -> list[GeneratedImage]:
        items = await post_for_data(self, f"{self.base_url}{path}", payload, self._error)
        return [await self._image(item) for item in items]

    async def _image(self, item: object) -> GeneratedImage:
        return await item_image(self.id, self.context.fetch_url, item, self._missing)

    def _missing(self, item: dict[str, Any]) -> UpstreamError:
        if item.get("respect_moderation") is False:
            return refusal(self.id, "the image was withheld by xAI's moderation")
        return bad_upstream(self.id, "returned an image with neither b64_json nor url")

    def _error(self, response: httpx.Response) -> UpstreamError:
        message, code = _error_fields(response)
        message = (message or response.reason_phrase or "error")[:500]
        status = response.status_code
        lowered = message.lower()
        if status == 400 and "api key" in lowered:
            status = 401  # xAI answers a wrong key with 400; it is ours, not the caller's
        policy = status in (400, 403, 422) and any(w in lowered for w in _POLICY_WORDS)
        if status == 404 and code is None:
            # "A model specified in a POST request body was not found" (docs.x.ai
            # "Debugging Errors"); our paths are fixed, so the model is what is gone.
            code = "model_not_found"
        error = failure(
            self.id,
            response,
            message,
            status=status,
            code=code,
            content_policy=policy,
            ours=any(w in lowered for w in _CREDIT_WORDS),
        )
        error.status = response.status_code  # classified as 401, reported as sent
        return error


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` from either error shape xAI uses; the code only if it is a
    machine-readable token (the flat shape's ``code`` is a sentence)."""
    body = error_json(response)
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
    else:
        message, code = error, body.get("code")
    message = message if isinstance(message, str) else None
    code = code if isinstance(code, str) and code.isidentifier() else None
    return message, code
