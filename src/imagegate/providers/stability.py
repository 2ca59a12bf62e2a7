"""Adapter for Stability AI's v2beta Stable Image API (api.stability.ai).

Wire protocol (platform.stability.ai/docs/api-reference, "Stable Image" generate and edit
sections; Stability's official ComfyUI nodes, Stability-AI/ComfyUI-SAI_API
``stability_api.py``): every call is ``POST`` ``multipart/form-data`` with
``Authorization: Bearer <key>``. We send ``Accept: application/json`` and read
``{"image": <base64>, "finish_reason": "SUCCESS" | "CONTENT_FILTERED", "seed"}``; a
``CONTENT_FILTERED`` image is blurred, so it becomes 400 ``content_policy_violation``
rather than an output. Errors are ``{"id", "name", "errors": ["<field>: <problem>"]}``
with 400, 401, 402 (``payment_required``: out of credits, ours), 403 (``name:
content_moderation`` is the caller's content), 404, 413, 422, 429, 500; a 400 naming
``model`` (an sd3 id Stability no longer has) is ours and marks the model gone.

Which endpoint each upstream model uses:

* ``core`` / ``ultra``: ``/v2beta/stable-image/generate/core|ultra``.
* ``sd3.5-large``, ``sd3.5-large-turbo``, ``sd3.5-medium``, ... (any ``sd3*``):
  ``/v2beta/stable-image/generate/sd3`` with ``model=<upstream model>``.
* ``inpaint``: ``/v2beta/stable-image/edit/inpaint`` with ``image`` and a black/white
  ``mask`` (white = edit), converted from the OpenAI mask (transparent = edit) and resized
  to the image; without a mask the image's own transparent pixels are the region.

Generations send ``aspect_ratio``: the nearest of 21:9, 16:9, 3:2, 5:4, 1:1, 4:5, 2:3,
9:16, 9:21 to the resolved size (the gateway reports the size actually produced).
Unmasked edits on ``ultra`` and ``sd3*`` are image-to-image: the input as ``image`` plus
``strength`` (0 keeps the input, 1 ignores it; ``extra.strength``, else
``options.strength``, else 0.7) and, for sd3, ``mode=image-to-image``; the output keeps
the input's aspect ratio. ``core`` has no image input. One image per call, so ``n`` fans
out. ``negative_prompt``, ``style_preset``, ``cfg_scale`` and ``grow_mask`` pass through
from the request's extra fields; ``seed`` passes through.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio.to_thread
import httpx

from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, InputImage
from imagegate.providers._shared.answers import error_json, failure, json_object, refusal
from imagegate.providers._shared.common import (
    bad_upstream,
    caller_fields,
    image_from_b64,
    nearest_aspect_ratio,
    white_edit_mask,
)
from imagegate.providers._shared.inputs import auth_headers, fan_out_numbered, refuse_mask
from imagegate.providers.base import Capabilities, Provider, generate_and_edit

DEFAULT_BASE_URL = "https://api.stability.ai"
ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
DEFAULT_STRENGTH = 0.7
_GENERATE = "/v2beta/stable-image/generate/"
_INPAINT = "/v2beta/stable-image/edit/inpaint"
_IMAGE_TO_IMAGE = ("ultra", "sd3")  # model families whose generate endpoint takes an image
_PASSTHROUGH = ("negative_prompt", "style_preset", "cfg_scale")
_Part = tuple[str, tuple[str | None, bytes | str, str | None]]


class StabilityProvider(Provider):
    """Stable Image Core / Ultra, Stable Diffusion 3.5 and inpainting via Stability AI."""

    type_name: ClassVar[str] = "stability"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL
    capabilities: ClassVar[Capabilities] = generate_and_edit(1, 1)

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        if upstream_model == "inpaint":
            raise InvalidRequest(
                "Stability inpainting only edits; send an image and a mask.",
                param="model",
                code="unsupported_operation",
            )
        fields = self._fields(request, upstream_model)
        fields["aspect_ratio"] = nearest_aspect_ratio(request.width, request.height, ASPECT_RATIOS)
        if _is_sd3(upstream_model):
            fields["mode"] = "text-to-image"
        return await self._run(request, upstream_model, self._path(upstream_model), fields, [])

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        if len(request.images) != 1:
            raise InvalidRequest(
                f"Stability '{upstream_model}' edits exactly one image.",
                param="image",
                code="too_many_images",
            )
        image = request.images[0]
        if upstream_model == "inpaint":
            mask = await anyio.to_thread.run_sync(_white_mask, image, request.mask)
            fields = self._fields(request, upstream_model)
            if "grow_mask" in request.extra:
                fields["grow_mask"] = request.extra["grow_mask"]
            files = [_file("image", image), ("mask", ("mask.png", mask, "image/png"))]
            return await self._run(request, upstream_model, _INPAINT, fields, files)
        refuse_mask(
            request,
            f"Stability '{upstream_model}' edits the whole image and takes no mask; use "
            "the inpainting model for masked edits.",
        )
        if not upstream_model.startswith(_IMAGE_TO_IMAGE):
            raise InvalidRequest(
                f"Stability '{upstream_model}' does not take input images.",
                param="model",
                code="unsupported_operation",
            )
        fields = self._fields(request, upstream_model)
        strength = request.extra.get("strength", self.config.options.get("strength"))
        fields["strength"] = DEFAULT_STRENGTH if strength is None else strength
        if _is_sd3(upstream_model):
            fields["mode"] = "image-to-image"
        files = [_file("image", image)]
        return await self._run(request, upstream_model, self._path(upstream_model), fields, files)

    def _path(self, upstream_model: str) -> str:
        return _GENERATE + ("sd3" if _is_sd3(upstream_model) else upstream_model)

    def _fields(self, request: ImageRequest, upstream_model: str) -> dict[str, Any]:
        fields: dict[str, Any] = {"prompt": request.prompt or ""}
        fmt = request.output_format or "png"
        if _is_sd3(upstream_model):
            fields["model"] = upstream_model
            fmt = "jpeg" if fmt == "jpeg" else "png"  # sd3 makes png or jpeg only
        fields["output_format"] = fmt
        if request.seed is not None:
            fields["seed"] = request.seed
        fields.update(caller_fields(self.config.options, request.extra, _PASSTHROUGH))
        return fields

    async def _run(
        self,
        request: ImageRequest,
        upstream_model: str,
        path: str,
        fields: dict[str, Any],
        files: list[_Part],
    ) -> ImageResult:

        async def one(index: int, _: int) -> list[GeneratedImage]:
            # One image per call: call i uses seed + i so n seeded images differ.
            values = {**fields, "seed": fields["seed"] + index} if "seed" in fields else fields
            parts: list[_Part] = [(k, (None, _form_value(v), None)) for k, v in values.items()]
            return [await self._one(path, parts + files)]

        images = await fan_out_numbered(request.n, 1, one)
        return ImageResult(images=images, upstream_model=upstream_model)

    async def _one(self, path: str, parts: list[_Part]) -> GeneratedImage:
        headers = auth_headers(self.config.resolved_api_key(), json_body=False)
        response = await self.context.http.post(
            f"{self.base_url}{path}", files=parts, headers=headers, timeout=self.config.timeout_s
        )
        payload = json_object(self.id, response, self._error)
        if payload.get("finish_reason") == "CONTENT_FILTERED":
            raise refusal(self.id, "the output was flagged by content moderation")
        b64 = payload.get("image")
        if not isinstance(b64, str) or not b64:
            raise bad_upstream(self.id, "returned no image")
        return image_from_b64(self.id, b64)

    def _error(self, response: httpx.Response) -> UpstreamError:
        body = error_json(response)
        body = body if isinstance(body, dict) else {}
        name = body.get("name") if isinstance(body.get("name"), str) else None
        errors = body.get("errors")
        texts = [str(e) for e in errors] if isinstance(errors, list) else []
        message = "; ".join(texts) or name or response.reason_phrase or "error"
        # Errors name their field ("model: ..."); ``model`` is the catalog's upstream id,
        # never the caller's, so a rejected one is ours and that model is gone.
        model_rejected = any(t.startswith("model:") for t in texts)
        return failure(
            self.id,
            response,
            message,
            code="model_not_found" if model_rejected else None,
            content_policy=name == "content_moderation",
            ours=model_rejected,
        )


def _is_sd3(upstream_model: str) -> bool:
    return upstream_model.startswith("sd3")


def _file(name: str, image: InputImage) -> _Part:
    return (name, (f"{image.filename or 'image'}.{image.format}", image.data, image.mime_type))


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _white_mask(image: InputImage, mask: InputImage | None) -> bytes:
    """A white-means-edit PNG the size of ``image`` (Stability's inpaint convention)."""
    missing = "Inpainting needs a mask, or an image whose transparent pixels mark the area to edit."
    return white_edit_mask(image, mask, missing=missing)
