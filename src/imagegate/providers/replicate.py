"""Adapter for Replicate's predictions API (official models such as the FLUX family).

Wire protocol, as documented by Replicate's HTTP API reference (``models.predictions.create``,
``predictions.create``, ``predictions.get``, ``predictions.cancel``), the guide
replicate.com/docs/topics/predictions/create-a-prediction, and the official Python client
(replicate/replicate-python: ``replicate/prediction.py``, ``replicate/run.py``,
``replicate/exceptions.py``):

* ``POST {base}/models/{owner}/{name}/predictions`` with ``Authorization: Bearer <token>`` and
  ``{"input": {...}}``; a pinned version ``owner/name:version`` goes to ``POST
  {base}/predictions`` with ``{"version": ..., "input": ...}``.
* ``Prefer: wait`` (``wait=N``, 1-60 s) holds the request open; an unfinished prediction
  comes back ``starting``/``processing`` and is polled at ``urls.get`` until ``succeeded``,
  ``failed`` or ``canceled``. As the official client does, a waited-for prediction that is
  ``processing`` but already carries its output is done (Replicate answers as soon as the
  files exist). On our own poll timeout the prediction is cancelled (``urls.cancel``).
* ``output`` is a URL or a list of URLs, fetched at once (they expire); errors are RFC 7807
  problem details ``{"title", "detail", "status"}``.

Normalisation (per model, see ``_MODELS``; ``options["models"]`` adds or overrides entries):

* size: models with ``aspect_ratio="custom"`` (FLUX 1.1 pro) get the exact size, rounded to
  Replicate's multiple of 32 and clamped to 256-1440; the others get the nearest supported
  aspect ratio (log-ratio distance). Edits with ``size="auto"`` ask for
  ``match_input_image`` where the model has it. The produced size is read from the image.
* ``n``: ``num_outputs`` up to the model's limit per prediction, parallel predictions beyond;
  with a seed, prediction ``i`` uses ``seed + i`` so the images differ but stay reproducible.
* masks (OpenAI: transparent = edit) become white = edit PNGs sized to the image; a masked
  model given no mask edits where the image is transparent, else everywhere.
* inputs travel as data URLs; more images than the model takes is a 400 naming the limit.
* output_format maps to ``png``/``jpg``/``webp`` when the model offers it; otherwise the model's
  first format is used and the gateway re-encodes.
* safety: a prediction that fails with an NSFW / sensitive-content error is a 400
  ``content_policy_violation``. FLUX schnell drops flagged outputs itself, so a response can
  hold fewer images than asked; it is billed for what it holds.

Options (``config.options``): ``wait_s`` (``Prefer: wait`` seconds, default 60; 0 creates
asynchronously), ``poll_interval_s`` (1.0), ``poll_timeout_s`` (default: what is left of
``timeout_s``), ``result_hosts`` (hosts output URLs may live on; default ``replicate.delivery``
and its subdomains, plus the API host), ``models``.
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
from imagegate.providers._shared import answers, inputs
from imagegate.providers._shared.common import (
    bad_upstream,
    caller_fields,
    nearest_aspect_ratio,
)
from imagegate.providers._shared.tasks import poll_task
from imagegate.providers.base import Capabilities, Provider, generate_and_edit

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
DEFAULT_RESULT_HOSTS = ("replicate.delivery", "*.replicate.delivery")
_TERMINAL = frozenset({"succeeded", "failed", "canceled"})
_NSFW_MARKERS = ("nsfw", "sensitive", "content moderation", "safety filter", "e005")
_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


@dataclass(frozen=True, slots=True)
class ReplicateModel:
    """What one Replicate model's input schema accepts (from its API page)."""

    aspect_ratios: tuple[str, ...] = _FLUX_RATIOS
    custom_size: bool = False  # aspect_ratio="custom" with width/height
    max_outputs: int = 1  # >1: the model takes ``num_outputs``
    formats: tuple[str, ...] = ("webp", "jpg", "png")
    quality: bool = True  # takes ``output_quality`` (jpg/webp)
    image_field: str | None = None  # edit input, e.g. "input_image"
    mask_field: str | None = None
    match_input: bool = False  # aspect_ratio="match_input_image"


# Input schemas from each model's "API" page on replicate.com (flux-schnell, flux-dev and
# flux-1.1-pro read 2026-11; Kontext's enum beyond flux-schnell's ratios and flux-fill-pro's
# ``image``/``mask`` fields are as last known, not re-read: a 422 names any mismatch, and
# ``options["models"]`` corrects an entry without a release). Fill masks: white = inpaint
# (docs.bfl.ai, "FLUX.1 Fill").
_MODELS: dict[str, ReplicateModel] = {
    "black-forest-labs/flux-schnell": ReplicateModel(max_outputs=4),
    "black-forest-labs/flux-dev": ReplicateModel(max_outputs=4, image_field="image"),
    "black-forest-labs/flux-1.1-pro": ReplicateModel(
        aspect_ratios=("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"),
        custom_size=True,
    ),
    "black-forest-labs/flux-kontext-pro": ReplicateModel(
        aspect_ratios=(*_FLUX_RATIOS, "2:1", "1:2"),
        formats=("jpg", "png"),
        quality=False,
        image_field="input_image",
        match_input=True,
    ),
    "black-forest-labs/flux-fill-pro": ReplicateModel(
        aspect_ratios=(),
        formats=("jpg", "png"),
        quality=False,
        image_field="image",
        mask_field="mask",
    ),
}


class ReplicateProvider(Provider):
    """Runs image models on Replicate, waiting synchronously and polling beyond that."""

    type_name: ClassVar[str] = "replicate"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL
    capabilities: ClassVar[Capabilities] = generate_and_edit(1, 4)

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        return await self._run(request, upstream_model, edit=False)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        return await self._run(request, upstream_model, edit=True)

    # -- request building ---------------------------------------------------------------

    def model(self, upstream_model: str) -> ReplicateModel:
        name = upstream_model.split(":", 1)[0]
        spec = _MODELS.get(name, ReplicateModel())
        return inputs.with_overrides(spec, self.config.options.get("models"), upstream_model)

    async def _run(self, request: ImageRequest, upstream_model: str, *, edit: bool) -> ImageResult:
        spec = self.model(upstream_model)
        base_input = self._input(request, spec, edit=edit)
        per_call = max(1, spec.max_outputs)

        async def call(index: int, k: int) -> list[GeneratedImage]:
            payload = dict(base_input)
            if request.seed is not None:
                payload["seed"] = request.seed + index
            if spec.max_outputs > 1:
                payload["num_outputs"] = k
            return await self._predict(upstream_model, payload)

        images = await inputs.fan_out_numbered(request.n, per_call, call)
        if not images:
            raise bad_upstream(self.id, "returned no images")
        return ImageResult(images=images, upstream_model=upstream_model)

    def _input(self, request: ImageRequest, spec: ReplicateModel, *, edit: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {"prompt": request.prompt or ""}
        if edit:
            no_mask = "This model edits by instruction and does not take a mask."
            fields = inputs.edit_fields(
                self.id, request, spec.image_field, spec.mask_field, no_mask=no_mask
            )
            payload.update(fields)
        if edit and spec.match_input and request.size == "auto":
            payload["aspect_ratio"] = "match_input_image"
        elif spec.custom_size and not edit:
            payload["aspect_ratio"] = "custom"
            payload["width"] = _multiple_of_32(request.width)
            payload["height"] = _multiple_of_32(request.height)
        elif spec.aspect_ratios:
            ratio = nearest_aspect_ratio(request.width, request.height, spec.aspect_ratios)
            payload["aspect_ratio"] = ratio
        wanted = _FORMATS.get(request.output_format or "png", "png")
        payload["output_format"] = wanted if wanted in spec.formats else spec.formats[0]
        if spec.quality and request.output_compression is not None:
            payload["output_quality"] = max(0, min(100, request.output_compression))
        for name, value in caller_fields(self.config.options, request.extra, None).items():
            payload.setdefault(name, value)
        return payload

    # -- the wire -----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return inputs.auth_headers(self.config.resolved_api_key())

    async def _predict(self, upstream_model: str, payload: dict[str, Any]) -> list[GeneratedImage]:
        started = time.monotonic()
        body: dict[str, Any] = {"input": payload}
        if ":" in upstream_model:
            url = f"{self.base_url}/predictions"
            body["version"] = upstream_model
        else:
            url = f"{self.base_url}/models/{upstream_model}/predictions"
        headers = self._headers()
        wait_s = int(self.config.options.get("wait_s", 60))
        if wait_s > 0:
            headers["Prefer"] = "wait" if wait_s >= 60 else f"wait={wait_s}"
        timeout = min(self.config.timeout_s, wait_s + 10.0)
        response = await self.context.http.post(
            url, content=orjson.dumps(body), headers=headers, timeout=timeout
        )
        prediction = self._prediction(response)
        status = prediction.get("status")
        done = status in _TERMINAL or (
            wait_s > 0 and status == "processing" and prediction.get("output")
        )
        if not done:
            prediction = await self._wait(prediction, response, started)
        return await self._outputs(prediction)

    async def _wait(
        self, prediction: dict[str, Any], created: httpx.Response, started: float
    ) -> dict[str, Any]:
        raw_urls = prediction.get("urls")
        urls: dict[str, Any] = raw_urls if isinstance(raw_urls, dict) else {}
        pid = prediction.get("id")
        get_url = urls.get("get") or created.headers.get("location")
        if not get_url and pid:
            get_url = f"{self.base_url}/predictions/{pid}"
        if not isinstance(get_url, str):
            raise bad_upstream(self.id, "returned an unfinished prediction without a URL to poll")
        cancel_url = urls.get("cancel") or (
            f"{self.base_url}/predictions/{pid}/cancel" if pid else None
        )

        async def check() -> dict[str, Any] | None:
            response = await self.context.http.get(
                get_url, headers=self._headers(), timeout=self.config.timeout_s
            )
            current = self._prediction(response)
            return current if current.get("status") in _TERMINAL else None

        try:
            return await poll_task(self, check, interval_s=1.0, started=started)
        except UpstreamError:
            await self._cancel(cancel_url)
            raise

    async def _cancel(self, url: str | None) -> None:
        """Best effort: stop paying for a prediction nobody will read."""
        if not url:
            return
        with contextlib.suppress(httpx.HTTPError):
            await self.context.http.post(url, headers=self._headers(), timeout=10.0)

    def _prediction(self, response: httpx.Response) -> dict[str, Any]:
        return answers.json_object(self.id, response, self._error, what="a malformed prediction")

    async def _outputs(self, prediction: dict[str, Any]) -> list[GeneratedImage]:
        status = prediction.get("status")
        if status == "failed":
            message = str(prediction.get("error") or "the prediction failed")[:500]
            if _is_nsfw(message):
                raise answers.refusal(self.id, message)
            raise UpstreamError(
                f"{self.id} prediction failed: {message}", status=502, retryable=True
            )
        if status == "canceled":
            raise UpstreamError(f"{self.id} prediction was canceled", status=502, retryable=True)
        output = prediction.get("output")
        urls = [output] if isinstance(output, str) else output
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise bad_upstream(self.id, "returned an output that is not a list of URLs")
        return [await self._image(url) for url in urls]

    async def _image(self, url: str) -> GeneratedImage:
        fetch = self.context.fetch_url
        return await answers.hosted_output(self.id, fetch, url, self._result_hosts(), what="output")

    def _result_hosts(self) -> list[str]:
        hosts = list(self.config.options.get("result_hosts") or DEFAULT_RESULT_HOSTS)
        return [*hosts, httpx.URL(self.base_url).host]

    def _error(self, response: httpx.Response) -> UpstreamError:
        body = answers.error_json(response)
        message = response.reason_phrase or "error"
        if isinstance(body, dict):
            detail, title = body.get("detail"), body.get("title")
            message = str(detail or title or message)
        return answers.failure(self.id, response, message, content_policy=_is_nsfw(message[:500]))


def _is_nsfw(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _NSFW_MARKERS)


def _multiple_of_32(side: int) -> int:
    return max(256, min(1440, round(side / 32) * 32))
