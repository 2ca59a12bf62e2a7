"""Adapter for the Black Forest Labs API (FLUX models at api.bfl.ai).

Wire protocol (docs.bfl.ai API reference and "Errors" page; official Python SDK
black-forest-labs/blackforest, ``src/bfl/_jobs.py`` and ``_transport.py`` at commit f7ba31b
and ``_catalog.py`` at fef56d5 (files checked to exist there, 2026-11-29; older releases
keep the client in ``src/blackforest/client.py``)):
``POST /v1/<model>`` with header ``x-key`` and a JSON body answers ``{id, polling_url}``;
``GET polling_url`` (same header) answers ``{id, status, result}`` where ``status`` is
``Pending`` (keep polling), ``Ready`` (``result.sample`` is a signed URL valid about ten
minutes, so it is fetched at once), ``Request Moderated`` / ``Content Moderated`` (the
caller's content: 400 ``content_policy_violation``), ``Error`` / ``Task not found`` or
anything unknown (a failed attempt another provider may retry). HTTP errors carry
FastAPI's ``{"detail": ...}``.

Which request each upstream model gets:

* ``flux-kontext-*`` (and ``flux-pro-1.1-ultra``) take ``aspect_ratio``: the nearest of
  21:9 ... 9:21 to the resolved size. Edits send the input images as base64
  ``input_image``, ``input_image_2`` ... (at most four); an edit with ``size=auto`` sends
  no ratio, so the output keeps the input's.
* ``flux-pro-1.0-fill*`` inpaints: ``image`` plus a black/white ``mask`` (white = edit),
  converted from the OpenAI mask (transparent = edit) and resized to the image. Without a
  mask the image's own transparent pixels are the region. The output keeps the input size.
* every other model (``flux-pro-1.1``, ``flux-dev``, ``flux-pro``) generates only and takes
  ``width`` and ``height``: each side rounded to the nearest multiple of 32 within 256..1440.
  (FLUX.2 models, with other size rules, are not handled.)

One image per call, so ``n`` fans out. Output is PNG or JPEG (webp is re-encoded by the
gateway). Options: ``poll_interval_s`` (0.5), ``poll_timeout_s`` (``timeout_s``),
``safety_tolerance``, ``polling_hosts`` (hosts allowed to receive the key when polling;
default the base URL's host and ``*.bfl.ai``/``*.bfl.ml``), ``result_hosts`` (if set, the
only hosts sample URLs may come from; the gateway also lets its URL fetcher reach them).
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
import orjson

from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, InputImage
from imagegate.providers._shared.answers import (
    error_json,
    failure,
    fetch_output,
    json_object,
    refusal,
)
from imagegate.providers._shared.common import (
    bad_upstream,
    caller_fields,
    nearest_aspect_ratio,
    white_edit_mask,
)
from imagegate.providers._shared.inputs import (
    auth_headers,
    fan_out_numbered,
    limit_images,
    refuse_mask,
)
from imagegate.providers._shared.tasks import poll_task
from imagegate.providers.base import Capabilities, Provider, generate_and_edit

DEFAULT_BASE_URL = "https://api.bfl.ai"
ASPECT_RATIOS = ("21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21")
SIDE_MIN, SIDE_MAX, SIDE_STEP = 256, 1440, 32
KONTEXT_MAX_IMAGES = 4
_ASPECT_MODELS = ("flux-kontext", "flux-pro-1.1-ultra")
_FILL_MODELS = ("flux-pro-1.0-fill",)
_INPUT_KEYS = ("input_image", "input_image_2", "input_image_3", "input_image_4")
_MODERATED = frozenset({"Request Moderated", "Content Moderated"})
_DEFAULT_POLLING_HOSTS = ("*.bfl.ai", "*.bfl.ml")
# Documented request fields a caller may pass through unchanged (request.extra), unless
# the operator sets ``options.pass_through``; ``safety_tolerance`` is operator-only
# (``options.safety_tolerance``) unless the operator lists it there.
_PASSTHROUGH = ("prompt_upsampling", "steps", "guidance", "raw")


def snap_side(value: int) -> int:
    """The nearest multiple of 32 within 256..1440 (FLUX1.1 [pro] / [dev] width/height)."""
    snapped = round(value / SIDE_STEP) * SIDE_STEP
    return max(SIDE_MIN, min(SIDE_MAX, snapped))


class BFLProvider(Provider):
    """FLUX text-to-image, Kontext edits and Fill inpainting via Black Forest Labs."""

    type_name: ClassVar[str] = "bfl"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL
    capabilities: ClassVar[Capabilities] = generate_and_edit(KONTEXT_MAX_IMAGES, 1, "png jpeg")

    @property
    def result_hosts(self) -> tuple[str, ...]:
        """Hosts the signed sample URLs live on (for the gateway's fetch allow-list)."""
        return tuple(str(h) for h in self.config.options.get("result_hosts") or ())

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        if _is_fill(upstream_model):
            raise InvalidRequest(
                f"'{upstream_model}' only inpaints; send an edit with an image.",
                param="model",
                code="unsupported_operation",
            )
        body = self._common(request)
        if _is_aspect(upstream_model):
            body["aspect_ratio"] = nearest_aspect_ratio(
                request.width, request.height, ASPECT_RATIOS
            )
        else:
            body["width"], body["height"] = snap_side(request.width), snap_side(request.height)
        return await self._run(request, upstream_model, body)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        if _is_fill(upstream_model):
            body = await self._fill_body(request)
        else:
            body = self._kontext_edit_body(request, upstream_model)
        return await self._run(request, upstream_model, body)

    def _common(self, request: ImageRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": request.prompt or ""}
        body["output_format"] = "jpeg" if request.output_format == "jpeg" else "png"
        if request.seed is not None:
            body["seed"] = request.seed
        body.update(caller_fields(self.config.options, request.extra, _PASSTHROUGH))
        tolerance = self.config.options.get("safety_tolerance")
        if tolerance is not None:  # the operator's setting wins over any caller field
            body["safety_tolerance"] = tolerance
        return body

    def _kontext_edit_body(self, request: ImageRequest, upstream_model: str) -> dict[str, Any]:
        if not upstream_model.startswith("flux-kontext"):
            raise InvalidRequest(
                f"'{upstream_model}' does not edit images; use FLUX Kontext or FLUX Fill.",
                param="model",
                code="unsupported_operation",
            )
        refuse_mask(
            request,
            f"'{upstream_model}' edits by instruction and takes no mask; use a FLUX Fill "
            "model for masked edits.",
        )
        limit_images(
            request,
            KONTEXT_MAX_IMAGES,
            f"'{upstream_model}' accepts at most {KONTEXT_MAX_IMAGES} input images.",
        )
        body = self._common(request)
        for key, image in zip(_INPUT_KEYS, request.images, strict=False):
            body[key] = _b64(image)
        if request.size != "auto":
            body["aspect_ratio"] = nearest_aspect_ratio(
                request.width, request.height, ASPECT_RATIOS
            )
        return body

    async def _fill_body(self, request: ImageRequest) -> dict[str, Any]:
        if len(request.images) != 1:
            raise InvalidRequest(
                "FLUX Fill inpaints exactly one image.", param="image", code="too_many_images"
            )
        image = request.images[0]
        mask = await anyio.to_thread.run_sync(_fill_mask, image, request.mask)
        body = self._common(request)
        body["image"] = _b64(image)
        body["mask"] = base64.b64encode(mask).decode()
        return body

    async def _run(
        self, request: ImageRequest, upstream_model: str, body: dict[str, Any]
    ) -> ImageResult:

        async def one(index: int, _: int) -> list[GeneratedImage]:
            # One image per task: task i uses seed + i so n seeded images differ.
            call = {**body, "seed": body["seed"] + index} if "seed" in body else body
            return [await self._one(upstream_model, orjson.dumps(call))]

        images = await fan_out_numbered(request.n, 1, one)
        return ImageResult(images=images, upstream_model=upstream_model)

    async def _one(self, upstream_model: str, payload: bytes) -> GeneratedImage:
        response = await self.context.http.post(
            f"{self.base_url}/v1/{upstream_model}",
            content=payload,
            headers=self._headers() | {"Content-Type": "application/json"},
            timeout=self.config.timeout_s,
        )
        task = self._json(response)
        polling_url = task.get("polling_url")
        if not isinstance(polling_url, str) or not polling_url:
            raise bad_upstream(self.id, "answered a submission without a polling_url")
        self._check_polling_url(polling_url)
        result = await poll_task(self, lambda: self._check(polling_url), interval_s=0.5)
        sample = result.get("sample")
        if not isinstance(sample, str) or not sample:
            raise bad_upstream(self.id, "reported Ready without a result sample URL")
        self._check_result_url(sample)
        return await fetch_output(self.id, self.context.fetch_url, sample, what="sample")

    async def _check(self, polling_url: str) -> dict[str, Any] | None:
        """One poll: the ``result`` object when Ready, None while Pending, else raise."""
        response = await self.context.http.get(
            polling_url, headers=self._headers(), timeout=self.config.timeout_s
        )
        payload = self._json(response)
        status = payload.get("status")
        if status == "Pending":
            return None
        if status == "Ready":
            result = payload.get("result")
            if not isinstance(result, dict):
                raise bad_upstream(self.id, "reported Ready without a result")
            return result
        if status in _MODERATED:
            details = _detail_text(payload.get("details"))
            message = f"{status}: {details}" if details else str(status)
            raise refusal(self.id, message[:500])
        raise bad_upstream(self.id, f"task ended with status {status!r}")

    def _headers(self) -> dict[str, str]:
        return auth_headers(self.config.resolved_api_key(), "x-key", "", json_body=False)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        return json_object(self.id, response, self._error)

    def _error(self, response: httpx.Response) -> UpstreamError:
        body = error_json(response)
        detail = body.get("detail") if isinstance(body, dict) else None
        message = _detail_text(detail) or response.reason_phrase or "error"
        return failure(self.id, response, message)

    def _check_polling_url(self, url: str) -> None:
        """The key goes with every poll, so only to hosts we trust with it."""
        host = urlsplit(url).hostname or ""
        own = urlsplit(self.base_url).hostname or ""
        patterns = self.config.options.get("polling_hosts") or _DEFAULT_POLLING_HOSTS
        if host != own and not _host_matches(host, patterns):
            raise bad_upstream(self.id, f"returned a polling_url on an unexpected host {host!r}")

    def _check_result_url(self, url: str) -> None:
        hosts = self.result_hosts
        host = urlsplit(url).hostname or ""
        if hosts and not _host_matches(host, hosts):
            raise bad_upstream(self.id, f"returned a sample URL on an unexpected host {host!r}")


def _is_fill(upstream_model: str) -> bool:
    return upstream_model.startswith(_FILL_MODELS)


def _is_aspect(upstream_model: str) -> bool:
    return upstream_model.startswith(_ASPECT_MODELS)


def _b64(image: InputImage) -> str:
    return base64.b64encode(image.data).decode()


def _fill_mask(image: InputImage, mask: InputImage | None) -> bytes:
    """A white-means-edit PNG the size of ``image`` (FLUX Fill's convention)."""
    missing = "FLUX Fill needs a mask, or an image whose transparent pixels mark the area to edit."
    return white_edit_mask(image, mask, missing=missing)


def _host_matches(host: str, patterns: Any) -> bool:
    """``host`` equals a pattern (``host`` or ``host:port``), or ends with the suffix of a
    ``*.example`` pattern."""
    host = host.lower()
    for raw in patterns:
        pattern = str(raw).lower()
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if pattern.startswith("["):  # [v6]:port
            name = pattern[1 : pattern.find("]")]
        else:
            name = pattern.rsplit(":", 1)[0] if pattern.count(":") == 1 else pattern
        if host == name:
            return True
    return False


def _detail_text(detail: Any) -> str | None:
    """FastAPI's ``detail``: a string, or a list of ``{loc, msg}`` validation errors."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
                msg = str(item.get("msg") or "invalid")
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts) or None
    if isinstance(detail, dict):
        return orjson.dumps(detail).decode()
    return None
