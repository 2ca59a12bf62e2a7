"""Adapter for OpenAI's Images API: gpt-image-2 / 1.5 / 1 / 1-mini, dall-e-3 and dall-e-2.

Wire protocol, from the OpenAI API reference "Images"
(platform.openai.com/docs/api-reference/images) and the official SDK (openai/openai-python:
``src/openai/resources/images.py``, ``src/openai/types/image_generate_params.py``,
``image_edit_params.py``, ``image_create_variation_params.py``, ``images_response.py``):
``POST /images/generations`` (JSON), ``/images/edits`` and ``/images/variations``
(multipart/form-data; several edit inputs as repeated ``image[]`` parts, as the SDK sends a
list), ``Authorization: Bearer <key>``; success is ``{"created", "data": [{"b64_json" |
"url", "revised_prompt"?}], "usage"?, "quality"?, "background"?}``; failures are
``{"error": {"message", "type", "param", "code"}}``.

Quirks handled here, by model family (read from ``upstream_model``):

* gpt-image-*: always answer base64, so ``response_format`` is never sent. ``quality``,
  ``background``, ``output_format``, ``output_compression`` (only with jpeg/webp) and
  ``input_fidelity`` (edits; not on gpt-image-1-mini, which does not take it) pass through;
  ``moderation`` (generations) is the operator's ``options.moderation``, or the caller's
  only where ``options.pass_through`` lists it (a safety setting); token usage
  comes back in ``usage``. Up to 16 input images; the mask applies to the first.
* dall-e-3: generations only, one image per call, so ``n`` fans out in parallel;
  ``quality`` (standard/hd) and ``style``. ``response_format=b64_json`` is always sent, so no
  result URL has to be fetched (one is fetched if it comes anyway).
* dall-e-2: generations, edits (one square PNG) and variations; ``response_format=b64_json``.

Size rule: gpt-image models get ``auto`` when the caller sent ``auto``; gpt-image-2 takes the
resolved ``WIDTHxHEIGHT`` as is (the catalog checks its limits); gpt-image-1.x and dall-e-3
get the listed size nearest in aspect ratio (compared in log space); dall-e-2 gets the square
size nearest in pixel count. The gateway reports the size actually produced.

Streaming (``stream``): gpt-image generations and edits with ``n`` 1 are sent with
``stream: true`` and ``partial_images``, and the upstream's events are passed through
(``providers/openai/stream.py``); other models send only the finished result.

Masks are rewritten to OpenAI's convention (fully transparent = edit, same size as the first
image), so callers may also send white-means-edit masks. OpenAI has no ``seed``: it is not
sent (``supports_seed=False``). Unknown caller fields are not forwarded, since OpenAI rejects
unrecognised arguments and that would turn a portable request into a 400.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

import anyio.to_thread
import httpx
import orjson
from PIL import Image, ImageOps

from imagegate.core.errors import GatewayError, InvalidRequest, UpstreamError
from imagegate.core.size import Size
from imagegate.core.types import (
    OPERATIONS,
    OUTPUT_FORMATS,
    GeneratedImage,
    ImageRequest,
    ImageResult,
    InputImage,
    Operation,
    StreamEvent,
)
from imagegate.media.images import decode, encode
from imagegate.media.mask import edit_region
from imagegate.providers._shared.answers import OpenAIStyleError
from imagegate.providers._shared.common import (
    bad_upstream,
    fan_out,
    image_from_b64,
    image_from_bytes,
    json_reply,
    nearest_aspect_ratio,
)
from imagegate.providers._shared.inputs import post_body
from imagegate.providers.base import Capabilities, Provider
from imagegate.providers.openai.stream import image_stream_events
from imagegate.providers.openai.wire import (
    _file,
    _form_value,
    _json,
    _retry_after,
    _str,
    _unsupported,
    _usage,
    merge_results,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
GPT_IMAGE_SIZES = (Size(1024, 1024), Size(1536, 1024), Size(1024, 1536))
DALLE3_SIZES = (Size(1024, 1024), Size(1792, 1024), Size(1024, 1792))
DALLE2_SIDES = (256, 512, 1024)
MAX_GPT_IMAGE_INPUTS = 16
MAX_N_PER_CALL = 10

Family = Literal["gpt-image", "dall-e-3", "dall-e-2"]
FilePart = tuple[str, tuple[str, bytes, str]]


def model_family(model: str) -> Family:
    """dall-e models by name; everything else (gpt-image-*, chatgpt-image-*) is GPT image."""
    name = model.lower()
    if name.startswith("dall-e-3"):
        return "dall-e-3"
    if name.startswith("dall-e-2"):
        return "dall-e-2"
    return "gpt-image"


def upstream_size(model: str, request: ImageRequest) -> str:
    """The ``size`` to send for ``model`` (see the module docstring for the rule)."""
    family = model_family(model)
    wanted = Size(request.width, request.height)
    if family == "gpt-image":
        if request.size == "auto":
            return "auto"
        if model.lower().startswith("gpt-image-2"):
            return str(wanted)
        return str(_nearest_shape(GPT_IMAGE_SIZES, wanted))
    if family == "dall-e-3":
        return str(_nearest_shape(DALLE3_SIZES, wanted))
    target = math.sqrt(wanted.pixels)
    side = min(DALLE2_SIDES, key=lambda s: abs(math.log(s / target)))
    return str(Size(side, side))


def _nearest_shape(sizes: Sequence[Size], wanted: Size) -> Size:
    """The listed size nearest to ``wanted`` in aspect ratio (compared in log space)."""
    by_ratio = {f"{size.width}:{size.height}": size for size in sizes}
    return by_ratio[nearest_aspect_ratio(wanted.width, wanted.height, list(by_ratio))]


def openai_mask(mask: InputImage, image: InputImage) -> bytes:
    """The caller's mask (either convention) as a PNG whose transparent pixels mark the
    edit region, at the first image's size."""
    region = edit_region(decode(mask, param="mask"), (image.width, image.height))
    rgba = Image.new("RGBA", region.size, (0, 0, 0, 0))
    rgba.putalpha(ImageOps.invert(region))  # edit (255) -> alpha 0
    return encode(rgba, "png")


class OpenAIProvider(Provider):
    """OpenAI's own Images API. ``options``: ``organization`` and ``project`` (sent as the
    ``OpenAI-Organization`` / ``OpenAI-Project`` headers, as the SDK does)."""

    type_name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL
    capabilities: ClassVar[Capabilities] = Capabilities(
        operations=frozenset(OPERATIONS),
        max_input_images=MAX_GPT_IMAGE_INPUTS,
        supports_mask=True,
        output_formats=frozenset(OUTPUT_FORMATS),
        transparent_background=True,
        supports_seed=False,
        max_n_per_call=MAX_N_PER_CALL,
        native_compression=True,
    )
    # Output formats for which ``output_compression`` is documented.
    compression_formats: ClassVar[frozenset[str]] = frozenset({"jpeg", "webp"})
    edit_families: ClassVar[frozenset[str]] = frozenset({"gpt-image", "dall-e-2"})
    # Pass gpt-image streams through (``stream``); off where that was never verified.
    stream_passthrough: ClassVar[bool] = True

    # -- operations -------------------------------------------------------------------

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        fields = self._fields(request, upstream_model, "generate")
        fields["prompt"] = request.prompt
        return await self._fan_out(request.n, upstream_model, "generations", fields)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        fields, files = await self._edit_parts(request, upstream_model)
        return await self._fan_out(request.n, upstream_model, "edits", fields, files)

    async def _edit_parts(
        self, request: ImageRequest, model: str
    ) -> tuple[dict[str, Any], list[FilePart]]:
        """Check an edit against the model family and build its form fields and files."""
        family = model_family(model)
        if family not in self.edit_families:
            raise _unsupported(self.id, model, "edits")
        limit = MAX_GPT_IMAGE_INPUTS if family == "gpt-image" else 1
        if not request.images:
            raise InvalidRequest(
                "An edit needs at least one 'image'.",
                param="image",
                code="missing_required_parameter",
            )
        if len(request.images) > limit:
            raise InvalidRequest(
                f"Model '{model}' on provider '{self.id}' accepts at most {limit} input "
                f"image(s); got {len(request.images)}.",
                param="image",
                code="too_many_images",
            )
        fields = self._fields(request, model, "edit")
        fields["prompt"] = request.prompt
        key = "image[]" if len(request.images) > 1 else "image"
        files: list[FilePart] = [(key, _file(img)) for img in request.images]
        if request.mask is not None:
            mask = await anyio.to_thread.run_sync(openai_mask, request.mask, request.images[0])
            files.append(("mask", ("mask.png", mask, "image/png")))
        return fields, files

    async def variation(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        model = upstream_model
        if model_family(model) != "dall-e-2":
            raise _unsupported(self.id, model, "variations")
        fields = self._fields(request, model, "variation")
        files = [("image", _file(request.images[0]))]
        return await self._fan_out(request.n, model, "variations", fields, files)

    async def stream(
        self, request: ImageRequest, upstream_model: str
    ) -> AsyncIterator[StreamEvent]:
        """gpt-image generations and edits stream upstream (``stream: true`` and
        ``partial_images`` are sent) and OpenAI's events pass through; other models, and
        subclasses with ``stream_passthrough`` off, send only the finished result."""
        model = upstream_model
        native = (
            self.stream_passthrough
            and model_family(model) == "gpt-image"
            and request.operation in ("generate", "edit")
            and request.n == 1
        )
        if not native:
            yield await self.run(request, upstream_model)
            return
        files: list[FilePart] | None = None
        if request.operation == "generate":
            fields = self._fields(request, model, "generate")
            fields["prompt"] = request.prompt
        else:
            fields, files = await self._edit_parts(request, model)
        fields.update(n=1, stream=True)
        if request.partial_images is not None:
            fields["partial_images"] = request.partial_images
        operation = "generations" if files is None else "edits"
        url, params = self.url(operation, upstream_model)
        headers = {"Accept": "text/event-stream", **self.auth_headers()}
        body: dict[str, Any]
        if files is None:
            headers["Content-Type"] = "application/json"
            body = {"content": orjson.dumps(fields)}
        else:
            body = {"data": {k: _form_value(v) for k, v in fields.items()}, "files": files}
        async with self.context.http.stream(
            "POST", url, params=params, headers=headers, timeout=self.config.timeout_s, **body
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise self._error(response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                yield await self._result(await _json(self.id, response), upstream_model)
                return
            async for event in image_stream_events(self.id, response, upstream_model, _usage):
                yield event

    # -- hooks the Azure adapter overrides ----------------------------------------------

    def url(self, operation: str, upstream_model: str) -> tuple[str, dict[str, str]]:
        """The URL and query parameters of ``/images/<operation>``."""
        return f"{self.base_url}/images/{operation}", {}

    def auth_headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.config.resolved_api_key() or ''}"}
        for option, header in (
            ("organization", "OpenAI-Organization"),
            ("project", "OpenAI-Project"),
        ):
            value = self.config.options.get(option)
            if value:
                headers[header] = str(value)
        return headers

    def is_content_policy(self, error: dict[str, Any]) -> bool:
        """``content_policy_violation`` (dall-e) and ``moderation_blocked`` (gpt-image) are
        recognised by ``upstream_error`` itself."""
        return False

    def output_format(self, requested: str | None) -> str | None:
        """The ``output_format`` to send; None lets the upstream default (png) stand and
        leaves conversion to the gateway."""
        return requested if requested in self.capabilities.output_formats else None

    # -- request building -----------------------------------------------------------------

    def _fields(self, request: ImageRequest, model: str, operation: Operation) -> dict[str, Any]:
        family = model_family(model)
        fields: dict[str, Any] = {"model": model, "size": upstream_size(model, request)}
        if request.user:
            fields["user"] = request.user
        if family == "gpt-image":
            fmt = self.output_format(request.output_format)
            if fmt is not None:
                fields["output_format"] = fmt
                if request.output_compression is not None and fmt in self.compression_formats:
                    fields["output_compression"] = request.output_compression
            for name in ("quality", "background"):
                if getattr(request, name) is not None:
                    fields[name] = getattr(request, name)
            moderation = self._moderation(request)
            if operation == "generate" and moderation is not None:
                fields["moderation"] = moderation
            if (
                operation == "edit"
                and request.input_fidelity is not None
                and not model.lower().startswith("gpt-image-1-mini")  # unsupported there
            ):
                fields["input_fidelity"] = request.input_fidelity
            return fields
        fields["response_format"] = "b64_json"
        if operation != "variation" and request.quality is not None:
            fields["quality"] = request.quality
        if family == "dall-e-3" and request.style is not None:
            fields["style"] = request.style
        return fields

    def _moderation(self, request: ImageRequest) -> str | None:
        """The operator's ``options.moderation`` wins; a caller's ``moderation`` is sent
        only where the operator lists it in ``options.pass_through`` (it can lower
        OpenAI's filtering, a safety setting that is the operator's to choose)."""
        operator = self.config.options.get("moderation")
        if operator is not None:
            return str(operator)
        allowed = self.config.options.get("pass_through")
        if isinstance(allowed, list | tuple) and "moderation" in allowed:
            return request.moderation
        return None

    async def _fan_out(
        self,
        n: int,
        model: str,
        operation: str,
        fields: dict[str, Any],
        files: list[FilePart] | None = None,
    ) -> ImageResult:
        """``n`` images from calls of at most ``max_n_per_call`` (one for dall-e-3)."""
        per_call = 1 if model_family(model) == "dall-e-3" else self.capabilities.max_n_per_call

        async def call(k: int) -> list[ImageResult]:
            return [await self._send(operation, model, {**fields, "n": k}, files)]

        return merge_results(await fan_out(n, per_call, call))

    async def _send(
        self,
        operation: str,
        upstream_model: str,
        fields: dict[str, Any],
        files: list[FilePart] | None,
    ) -> ImageResult:
        """One call: JSON fields, or (with ``files``) a multipart form."""
        url, params = self.url(operation, upstream_model)
        headers = {"Accept": "application/json", **self.auth_headers()}
        response = await post_body(
            self.context.http,
            url,
            params=params,
            headers=headers,
            timeout_s=self.config.timeout_s,
            json_body=fields if files is None else None,
            form=None if files is None else {k: _form_value(v) for k, v in fields.items()},
            files=files,
        )
        if response.status_code >= 400:
            raise self._error(response)
        return await self._result(json_reply(self.id, response), upstream_model)

    # -- response parsing -----------------------------------------------------------------

    async def _result(self, payload: Any, upstream_model: str) -> ImageResult:
        items = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise bad_upstream(self.id, "returned no images")
        images = [await self._image(item) for item in items]
        return ImageResult(
            images=images,
            usage=_usage(payload.get("usage")),
            upstream_model=upstream_model,
            quality=_str(payload.get("quality")),
            background=_str(payload.get("background")),
        )

    async def _image(self, item: Any) -> GeneratedImage:
        if not isinstance(item, dict):
            raise bad_upstream(self.id, "returned a malformed image entry")
        revised = _str(item.get("revised_prompt"))
        if isinstance(item.get("b64_json"), str):
            return image_from_b64(self.id, item["b64_json"], revised_prompt=revised)
        if isinstance(item.get("url"), str):
            try:
                data = await self.context.fetch_url(item["url"])
            except GatewayError as exc:
                message = f"result URL could not be fetched: {exc.message}"
                raise bad_upstream(self.id, message) from exc
            return image_from_bytes(self.id, data, revised_prompt=revised)
        raise bad_upstream(self.id, "returned an image with neither b64_json nor url")

    def _error(self, response: httpx.Response) -> UpstreamError:
        error = OpenAIStyleError.read(response)
        return error.upstream(
            self.id,
            response,
            retry_after_s=_retry_after(response),
            content_policy=self.is_content_policy(error.fields),
            # OpenAI's billing errors share the type ``insufficient_quota`` whatever the
            # code (developers.openai.com/api/docs/guides/error-codes)
            ours=error.type == "insufficient_quota",
        )
