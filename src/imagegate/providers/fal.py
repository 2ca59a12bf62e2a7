"""Adapter for fal.ai model APIs: the queue (submit, status, result) and synchronous runs.

Wire protocol, as documented by fal ("Asynchronous Inference" / queue, "Synchronous
Requests", "Model Errors" at fal.ai/docs) and its official Python client
(fal-ai/fal: ``projects/fal_client/src/fal_client/client.py``):

* ``Authorization: Key <FAL_KEY>``; the input schema's fields as the JSON body.
* queue (default): ``POST https://queue.fal.run/{model_id}`` answers ``{request_id,
  status_url, response_url, cancel_url}``; ``GET status_url`` gives ``{"status": "IN_QUEUE" |
  "IN_PROGRESS" | "COMPLETED", ...}``; then ``GET response_url`` gives the model output (or
  the model's error). On our own poll timeout the request is cancelled (``PUT cancel_url``).
* sync (``options["mode"] = "sync"``): ``POST https://fal.run/{model_id}`` answers the output.
* output ``{"images": [{"url", "width", "height", "content_type"}], "seed",
  "has_nsfw_concepts": [...]}``; result URLs live on fal's CDN and are fetched at once.
* errors ``{"detail": "..."}`` or ``{"detail": [{"loc", "msg", "type", "url", "ctx"}]}``
  (422 for validation and ``content_policy_violation``), type also in ``X-Fal-Error-Type``.

Normalisation (per model, see ``_MODELS``; ``options["models"]`` adds or overrides entries):

* size: FLUX toolkit models take ``image_size``: fal's preset name when the size is exactly
  one (``square_hd`` = 1024x1024, ``landscape_4_3`` = 1024x768, ...), else ``{width, height}``;
  Kontext takes the nearest ``aspect_ratio`` (edits with ``size="auto"`` keep the input's);
  image-to-image models follow the input image. The produced size is read from the image.
* ``n``: ``num_images`` up to the model's limit per request, parallel requests beyond; with a
  seed, request ``i`` uses ``seed + i``.
* masks (OpenAI: transparent = edit) become white = edit PNGs sized to the image, sent as
  data URLs like the images (fal accepts data URLs wherever it takes a file URL); a masked
  model given no mask edits where the image is transparent, else everywhere.
* output_format: ``png``/``jpeg`` are passed; anything else asks for PNG and the gateway
  re-encodes.
* safety: images fal flags in ``has_nsfw_concepts`` (returned blacked out) are dropped; when
  every image of a request is flagged, or fal rejects the input as
  ``content_policy_violation``, the caller gets a 400 ``content_policy_violation``.

Options (``config.options``): ``mode`` (``queue`` | ``sync``), ``run_url`` (sync base;
default ``https://fal.run``; ``config.base_url`` is the queue base), ``poll_interval_s`` (0.5),
``poll_timeout_s`` (default: what is left of ``timeout_s``), ``result_hosts`` (default
``fal.media`` and its subdomains, plus the API hosts), ``models``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import orjson

from imagegate.core.errors import UpstreamError
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult
from imagegate.providers._shared.answers import (
    error_json,
    failure,
    hosted_output,
    json_object,
    refusal,
)
from imagegate.providers._shared.common import (
    bad_upstream,
    caller_fields,
    nearest_aspect_ratio,
)
from imagegate.providers._shared.inputs import (
    auth_headers,
    edit_fields,
    fan_out_numbered,
    with_overrides,
)
from imagegate.providers._shared.tasks import poll_task
from imagegate.providers.base import Capabilities, Provider, generate_and_edit

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_RUN_URL = "https://fal.run"
DEFAULT_RESULT_HOSTS = ("fal.media", "*.fal.media")
_PRESETS = {
    (1024, 1024): "square_hd",
    (512, 512): "square",
    (768, 1024): "portrait_4_3",
    (576, 1024): "portrait_16_9",
    (1024, 768): "landscape_4_3",
    (1024, 576): "landscape_16_9",
}
_KONTEXT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
# Upstream input fields named in fal's validation errors -> the OpenAI request field.
_PARAMS = {"image_url": "image", "mask_url": "mask", "image_size": "size", "num_images": "n"}


@dataclass(frozen=True, slots=True)
class FalModel:
    """What one fal endpoint's input schema accepts (from its API page)."""

    size: str = "image_size"  # "image_size" | "aspect_ratio" | "input" (follows the image)
    aspect_ratios: tuple[str, ...] = ()
    max_images: int = 4  # num_images per request
    formats: tuple[str, ...] = ("jpeg", "png")
    image_field: str | None = None  # e.g. "image_url"
    mask_field: str | None = None  # e.g. "mask_url"
    generate_endpoint: str | None = None  # text-to-image sibling of an edit endpoint


# Input schemas from fal's endpoint API pages and the schemas generated from them
# (carlosdp/fal-rs, ``src/endpoints/fal_ai``), read 2026-11; Kontext's (a newer endpoint)
# as last known from its fal page: ``image_url``, optional ``aspect_ratio``, ``num_images``.
_MODELS: dict[str, FalModel] = {
    "fal-ai/flux/schnell": FalModel(),
    "fal-ai/flux/dev": FalModel(),
    "fal-ai/flux/dev/image-to-image": FalModel(size="input", image_field="image_url"),
    "fal-ai/flux-pro/v1.1": FalModel(),
    "fal-ai/flux-pro/kontext": FalModel(
        size="aspect_ratio",
        aspect_ratios=_KONTEXT_RATIOS,
        image_field="image_url",
        generate_endpoint="fal-ai/flux-pro/kontext/text-to-image",
    ),
    "fal-ai/flux-lora/inpainting": FalModel(image_field="image_url", mask_field="mask_url"),
}


class FalProvider(Provider):
    """Runs fal endpoints through the queue (default) or synchronously."""

    type_name: ClassVar[str] = "fal"
    default_base_url: ClassVar[str] = DEFAULT_QUEUE_URL  # config.base_url: the queue base
    capabilities: ClassVar[Capabilities] = generate_and_edit(1, 4, "png jpeg")

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        spec = self.model(upstream_model)
        endpoint = spec.generate_endpoint or upstream_model
        return await self._run(request, endpoint, spec, self._input(request, spec, edit=False))

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        spec = self.model(upstream_model)
        payload = self._input(request, spec, edit=True)
        return await self._run(request, upstream_model, spec, payload)

    def model(self, upstream_model: str) -> FalModel:
        spec = _MODELS.get(upstream_model, FalModel())
        return with_overrides(spec, self.config.options.get("models"), upstream_model)

    # -- request building ---------------------------------------------------------------

    async def _run(
        self, request: ImageRequest, endpoint: str, spec: FalModel, base_input: dict[str, Any]
    ) -> ImageResult:

        async def call(index: int, k: int) -> list[GeneratedImage]:
            payload = dict(base_input, num_images=k)
            if request.seed is not None:
                payload["seed"] = request.seed + index
            return await self._request(endpoint, payload)

        images = await fan_out_numbered(request.n, max(1, spec.max_images), call)
        return ImageResult(images=images, upstream_model=endpoint)

    def _input(self, request: ImageRequest, spec: FalModel, *, edit: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {"prompt": request.prompt or ""}
        if edit:
            no_mask = "This model does not take a mask."
            fields = edit_fields(
                self.id, request, spec.image_field, spec.mask_field, no_mask=no_mask
            )
            payload.update(fields)
        if spec.size == "image_size":
            dims = (request.width, request.height)
            payload["image_size"] = _PRESETS.get(dims) or {"width": dims[0], "height": dims[1]}
        elif spec.size == "aspect_ratio" and not (edit and request.size == "auto"):
            ratios = spec.aspect_ratios or _KONTEXT_RATIOS
            payload["aspect_ratio"] = nearest_aspect_ratio(request.width, request.height, ratios)
        wanted = request.output_format or "png"
        payload["output_format"] = wanted if wanted in spec.formats else spec.formats[-1]
        for name, value in caller_fields(self.config.options, request.extra, None).items():
            payload.setdefault(name, value)
        return payload

    # -- the wire -----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return auth_headers(self.config.resolved_api_key(), scheme="Key ")

    @property
    def _run_base(self) -> str:
        return str(self.config.options.get("run_url") or DEFAULT_RUN_URL).rstrip("/")

    async def _request(self, endpoint: str, payload: dict[str, Any]) -> list[GeneratedImage]:
        body = orjson.dumps(payload)
        if self.config.options.get("mode", "queue") == "sync":
            response = await self.context.http.post(
                f"{self._run_base}/{endpoint}",
                content=body,
                headers=self._headers(),
                timeout=self.config.timeout_s,
            )
            return await self._output(self._json(response))
        started = time.monotonic()
        response = await self.context.http.post(
            f"{self.base_url}/{endpoint}",
            content=body,
            headers=self._headers(),
            timeout=self.config.timeout_s,
        )
        handle = self._json(response)
        status_url, response_url = handle.get("status_url"), handle.get("response_url")
        if not isinstance(status_url, str) or not isinstance(response_url, str):
            raise bad_upstream(self.id, "answered the submission without status/response URLs")
        cancel_url = handle.get("cancel_url")
        await self._wait(status_url, cancel_url if isinstance(cancel_url, str) else None, started)
        result = await self.context.http.get(
            response_url, headers=self._headers(), timeout=self.config.timeout_s
        )
        return await self._output(self._json(result))

    async def _wait(self, status_url: str, cancel_url: str | None, started: float) -> None:

        async def check() -> bool | None:
            response = await self.context.http.get(
                status_url, headers=self._headers(), timeout=self.config.timeout_s
            )
            status = self._json(response).get("status")
            if status == "COMPLETED":
                return True
            if status in ("IN_QUEUE", "IN_PROGRESS"):
                return None
            raise bad_upstream(self.id, f"reported an unknown queue status {status!r}")

        try:
            await poll_task(self, check, interval_s=0.5, started=started)
        except UpstreamError as exc:
            if exc.timeout and cancel_url:
                await self._cancel(cancel_url)
            raise

    async def _cancel(self, url: str) -> None:
        """Best effort: stop paying for a request nobody will read."""
        with contextlib.suppress(httpx.HTTPError):
            await self.context.http.put(url, headers=self._headers(), timeout=10.0)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        return json_object(self.id, response, self._error, what="a malformed answer")

    async def _output(self, body: dict[str, Any]) -> list[GeneratedImage]:
        items = body.get("images")
        if not isinstance(items, list) or not items:
            raise bad_upstream(self.id, "returned no images")
        flags = body.get("has_nsfw_concepts")
        flagged = flags if isinstance(flags, list) else []
        kept = [item for i, item in enumerate(items) if not (i < len(flagged) and flagged[i])]
        if not kept:
            raise refusal(self.id, "The generated image was flagged by fal's safety checker.")
        return [await self._image(item) for item in kept]

    async def _image(self, item: Any) -> GeneratedImage:
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str):
            raise bad_upstream(self.id, "returned an image without a URL")
        fetch = self.context.fetch_url
        return await hosted_output(self.id, fetch, url, self._result_hosts(), what="image")

    def _result_hosts(self) -> list[str]:
        hosts = list(self.config.options.get("result_hosts") or DEFAULT_RESULT_HOSTS)
        return [*hosts, httpx.URL(self.base_url).host, httpx.URL(self._run_base).host]

    def _error(self, response: httpx.Response) -> UpstreamError:
        body = error_json(response)
        detail = body.get("detail") if isinstance(body, dict) else None
        message, param = response.reason_phrase or "error", None
        types = {response.headers.get("x-fal-error-type")}
        if isinstance(detail, str):
            message = detail
        elif isinstance(detail, list) and detail:
            items = [d for d in detail if isinstance(d, dict)]
            message = "; ".join(str(d.get("msg")) for d in items if d.get("msg")) or message
            types |= {d.get("type") for d in items}
            loc = items[0].get("loc") if items else None
            if isinstance(loc, list) and len(loc) > 1 and isinstance(loc[1], str):
                param = _PARAMS.get(loc[1], loc[1])
        # ``X-Fal-Retryable: true`` marks a failure fal itself would retry (runner or
        # infrastructure side): another endpoint may succeed, so it is never the caller's.
        # Header per issue 13 (not found in the fal pages searched, 2026-11-29);
        # ``X-Fal-Error-Type`` is documented at fal.ai/docs/documentation/serverless/
        # reliability/retries ("error_type field and X-Fal-Error-Type header").
        retryable = response.headers.get("x-fal-retryable", "").lower() == "true"
        return failure(
            self.id,
            response,
            message,
            param=param,
            content_policy="content_policy_violation" in types and not retryable,
            ours=retryable,
        )
