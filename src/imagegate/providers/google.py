"""Adapter for Google's Gemini API (generativelanguage.googleapis.com, not Vertex AI).

Two model families sit behind one API key; the upstream model id picks the wire call:

* Gemini image models ("Nano Banana": ``gemini-3.1-flash-image``, ``gemini-3-pro-image``,
  ``gemini-2.5-flash-image``, ...): ``POST {base}/v1beta/models/{model}:generateContent``
  with ``contents[].parts[]`` (the prompt as a ``text`` part, input images as
  ``inlineData {mimeType, data}`` parts) and ``generationConfig {responseModalities,
  imageConfig {aspectRatio, imageSize}, seed}``. The answer carries images as
  ``candidates[].content.parts[].inlineData``; parts marked ``thought: true`` are the
  model's interim drafts and are skipped.
* Imagen (any id starting ``imagen-``): ``POST {base}/v1beta/models/{model}:predict`` with
  ``{"instances": [{"prompt"}], "parameters": {sampleCount, aspectRatio,
  sampleImageSize, personGeneration, includeRaiReason}}``; the answer is
  ``predictions[] {bytesBase64Encoded, mimeType}`` or ``{raiFilteredReason}``. Google shut
  Imagen down on the Gemini API on 2026-08-17, so the built-in catalog no longer lists it;
  the path stays for operators pointing this adapter at a service that still serves it.

Both authenticate with ``x-goog-api-key``; failures are ``{"error": {"code", "message",
"status", "details"}}`` (ai.google.dev/gemini-api/docs/generate-content/api-errors).

Normalisation rules:

* Size: ``aspectRatio`` is the model's supported ratio nearest to the requested
  width/height (compared in log space). ``imageSize`` is the tier ("512" ~ 512x512 pixels on
  Flash Image, "1K" ~ 1024x1024, "2K" ~ 2048x2048, "4K" ~ 4096x4096) whose pixel count is
  nearest (in log space, ties
  upward) to width x height, sent only to models that take it. An edit with size "auto"
  sends no ``aspectRatio`` so the model keeps the input image's. The response reports the
  size of the image actually produced.
* ``n``: Gemini makes one image per call, Imagen up to four; calls fan out in parallel.
* Masks are not a Gemini concept (edits are instructions against the input images), so a
  mask is refused with a 400 on ``mask`` rather than silently ignored.
* ``seed`` goes to ``generationConfig.seed`` (seed + i for the i-th of ``n`` calls, so the
  images differ but stay reproducible); Imagen on the Gemini API takes no seed (the
  official SDK refuses it), so it is dropped there.
* A blocked prompt (``promptFeedback.blockReason``), a safety finish reason or an Imagen
  result whose images were all filtered is a 400 ``content_policy_violation``. A 400
  ``API_KEY_INVALID`` or ``FAILED_PRECONDITION`` (billing/region) is this gateway's
  account problem, so it fails over like a 401/403. ``RetryInfo.retryDelay`` counts as
  Retry-After.

Options (``config.options``): ``api_version`` (default "v1beta"), ``response_modalities``
(default ["IMAGE"]), ``max_input_images`` (default 14), and ``models: {<upstream id>:
{aspect_ratios: [...], image_sizes: [...]}}`` to describe a model this module does not know.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, TokenUsage
from imagegate.providers._shared.answers import error_json, failure, json_object, refusal
from imagegate.providers._shared.common import (
    bad_upstream,
    caller_fields,
    fan_out,
    image_from_b64,
    nearest_aspect_ratio,
    retry_after,
)
from imagegate.providers._shared.inputs import (
    auth_headers,
    fan_out_numbered,
    limit_images,
    refuse_mask,
)
from imagegate.providers.base import Provider, generate_and_edit

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MAX_INPUT_IMAGES = 14  # Gemini 3 image models take up to 14 reference images
IMAGEN_MAX_PER_CALL = 4

_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_EXTREME_RATIOS = ("1:4", "4:1", "1:8", "8:1")
_IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
_VERSIONED = re.compile(r"/v\d+(alpha|beta)?\d*$")

# Finish/block reasons that mean "refused for content", not "failed".
_POLICY_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a model accepts: ``aspectRatio`` values and ``imageSize`` tiers (empty: the
    model has one size and the field is not sent)."""

    ratios: tuple[str, ...]
    sizes: tuple[str, ...] = ()


# Matched by longest prefix, so dated or "-preview" ids share their family's shape.
_SHAPES: dict[str, _Shape] = {
    "gemini-2.5-flash-image": _Shape(_RATIOS),
    "gemini-3.1-flash-lite-image": _Shape(_RATIOS),
    # "512" (0.5K, 747 output tokens) is Flash Image's smallest tier: without it a 512x512
    # request would be made, and billed, as 1K (Gemini 3.1 Flash Image model page, Google
    # Cloud docs, checked 2026-11-29)
    "gemini-3.1-flash-image": _Shape(_RATIOS + _EXTREME_RATIOS, ("512", "1K", "2K", "4K")),
    "gemini-3-pro-image": _Shape(_RATIOS, ("1K", "2K", "4K")),
    "imagen-4.0-fast": _Shape(_IMAGEN_RATIOS),
    "imagen-": _Shape(_IMAGEN_RATIOS, ("1K", "2K")),
}
_DEFAULT_SHAPE = _Shape(_RATIOS)


class GoogleProvider(Provider):
    type_name = "google"
    default_base_url = DEFAULT_BASE_URL
    capabilities = generate_and_edit(DEFAULT_MAX_INPUT_IMAGES, 1, "png", supports_mask=False)

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        model = _model_name(upstream_model)
        if _is_imagen(model):
            return await self._imagen(request, model)
        return await self._gemini(request, model)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        model = _model_name(upstream_model)
        if _is_imagen(model):
            raise InvalidRequest(
                f"Provider '{self.id}' serves {model} for generation only; Imagen on the "
                "Gemini API has no edit endpoint.",
                param="model",
                code="unsupported_operation",
            )
        refuse_mask(
            request,
            f"Model {model} edits by instruction and takes no mask; describe the region "
            "to change in the prompt instead.",
        )
        limit = int(self.config.options.get("max_input_images", DEFAULT_MAX_INPUT_IMAGES))
        limit_images(
            request,
            limit,
            f"Model {model} accepts at most {limit} input images; got {len(request.images)}.",
        )
        return await self._gemini(request, model)

    # --- Gemini: generateContent --------------------------------------------------------

    async def _gemini(self, request: ImageRequest, model: str) -> ImageResult:
        shape = self._shape(model)
        parts: list[dict[str, Any]] = [{"text": request.prompt or ""}]
        for image in request.images:
            data = base64.b64encode(image.data).decode("ascii")
            parts.append({"inlineData": {"mimeType": image.mime_type, "data": data}})
        image_config: dict[str, Any] = {}
        if not (request.operation == "edit" and request.size == "auto"):
            image_config["aspectRatio"] = nearest_aspect_ratio(
                request.width, request.height, shape.ratios
            )
        tier = _image_size(request.width, request.height, shape.sizes)
        if tier is not None:
            image_config["imageSize"] = tier
        generation: dict[str, Any] = {
            "responseModalities": list(self.config.options.get("response_modalities", ["IMAGE"]))
        }
        if image_config:
            generation["imageConfig"] = image_config
        contents = [{"role": "user", "parts": parts}]

        def one(index: int, _: int) -> Awaitable[list[tuple[GeneratedImage, TokenUsage | None]]]:
            # One image per call; with a seed, call i uses seed + i so n images differ.
            config = dict(generation)
            if request.seed is not None:
                config["seed"] = request.seed + index
            return self._gemini_call(model, {"contents": contents, "generationConfig": config})

        results = await fan_out_numbered(request.n, 1, one)
        return ImageResult(
            images=[image for image, _ in results],
            usage=_sum_usage([usage for _, usage in results]),
            upstream_model=model,
        )

    async def _gemini_call(
        self, model: str, body: dict[str, Any]
    ) -> list[tuple[GeneratedImage, TokenUsage | None]]:
        return [self._gemini_image(await self._post(model, "generateContent", body))]

    def _gemini_image(self, payload: dict[str, Any]) -> tuple[GeneratedImage, TokenUsage | None]:
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            raise self._policy(f"the prompt was blocked ({feedback['blockReason']})")
        image: str | None = None
        texts: list[str] = []
        reasons: list[str] = []
        for candidate in _dicts(payload.get("candidates")):
            if isinstance(candidate.get("finishReason"), str):
                reasons.append(candidate["finishReason"])
            content = candidate.get("content")
            for part in _dicts(content.get("parts") if isinstance(content, dict) else None):
                if part.get("thought"):
                    continue  # an interim "thinking" draft, not the answer
                inline = part.get("inlineData") or part.get("inline_data")
                if isinstance(inline, dict) and isinstance(inline.get("data"), str):
                    image = inline["data"]  # the last final image wins
                elif isinstance(part.get("text"), str):
                    texts.append(part["text"])
            if image is not None:
                break
        text = " ".join(t.strip() for t in texts if t.strip()) or None
        if image is None:
            policy = [r for r in reasons if r in _POLICY_REASONS]
            if policy:
                raise self._policy(f"the image was blocked ({policy[0]})")
            reason = reasons[0] if reasons else "none"
            said = f": {text[:200]}" if text else ""
            raise bad_upstream(self.id, f"returned no image (finishReason {reason}){said}")
        return image_from_b64(self.id, image, revised_prompt=text), _usage(
            payload.get("usageMetadata")
        )

    # --- Imagen: predict ----------------------------------------------------------------

    async def _imagen(self, request: ImageRequest, model: str) -> ImageResult:
        shape = self._shape(model)
        parameters: dict[str, Any] = {
            "aspectRatio": nearest_aspect_ratio(request.width, request.height, shape.ratios),
            "includeRaiReason": True,
        }
        tier = _image_size(request.width, request.height, shape.sizes)
        if tier is not None:
            parameters["sampleImageSize"] = tier
        # personGeneration is a safety setting: the operator's (options.person_generation),
        # or the caller's only where the operator allows it in options.pass_through
        person = caller_fields(self.config.options, request.extra, ()).get(
            "person_generation", self.config.options.get("person_generation")
        )
        if isinstance(person, str):
            parameters["personGeneration"] = person

        async def batch(count: int) -> list[GeneratedImage]:
            body = {
                "instances": [{"prompt": request.prompt or ""}],
                "parameters": {**parameters, "sampleCount": count},
            }
            return self._imagen_images(await self._post(model, "predict", body))

        images = await fan_out(request.n, IMAGEN_MAX_PER_CALL, batch)
        if not images:
            raise self._policy("every image was filtered by the safety system")
        return ImageResult(images=images, upstream_model=model)

    def _imagen_images(self, payload: dict[str, Any]) -> list[GeneratedImage]:
        images: list[GeneratedImage] = []
        filtered: list[str] = []
        for prediction in _dicts(payload.get("predictions")):
            if isinstance(prediction.get("bytesBase64Encoded"), str):
                images.append(image_from_b64(self.id, prediction["bytesBase64Encoded"]))
            elif isinstance(prediction.get("raiFilteredReason"), str):
                filtered.append(prediction["raiFilteredReason"])
        if not images and filtered:
            raise self._policy(filtered[0])
        return images

    # --- wire -----------------------------------------------------------------------------

    def _shape(self, model: str) -> _Shape:
        custom = (self.config.options.get("models") or {}).get(model)
        if isinstance(custom, dict):
            return _Shape(
                tuple(custom.get("aspect_ratios") or _RATIOS),
                tuple(custom.get("image_sizes") or ()),
            )
        matches = [prefix for prefix in _SHAPES if model.startswith(prefix)]
        return _SHAPES[max(matches, key=len)] if matches else _DEFAULT_SHAPE

    @property
    def _base(self) -> str:
        base = self.base_url
        if _VERSIONED.search(base):
            return base
        return f"{base}/{self.config.options.get('api_version', 'v1beta')}"

    async def _post(self, model: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = auth_headers(self.config.resolved_api_key(), "x-goog-api-key", "")
        response = await self.context.http.post(
            f"{self._base}/models/{model}:{method}",
            content=orjson.dumps(body),
            headers=headers,
            timeout=self.config.timeout_s,
        )
        return json_object(self.id, response, self._error, what="a malformed response")

    def _error(self, response: httpx.Response) -> UpstreamError:
        error = _error_body(response)
        message = error.get("message") if isinstance(error.get("message"), str) else None
        status_name = error.get("status") if isinstance(error.get("status"), str) else None
        details = _dicts(error.get("details"))
        reasons = {d.get("reason") for d in details}
        status = response.status_code
        # Google answers a bad key with 400 and a billing/region block with 400
        # FAILED_PRECONDITION: both are this gateway's account, not the caller's request.
        if "API_KEY_INVALID" in reasons:
            status = 401
        elif status == 400 and status_name == "FAILED_PRECONDITION":
            status = 403
        text = message or response.reason_phrase or "error"
        return failure(
            self.id,
            response,
            f"{status_name}: {text}" if status_name else text,
            status=status,
            code=status_name.lower() if status_name else None,
            retry_after_s=retry_after(response) or _retry_delay(details),
        )

    def _policy(self, why: str) -> UpstreamError:
        return refusal(self.id, f"content policy: {why}")


def _model_name(upstream_model: str) -> str:
    return upstream_model.removeprefix("models/")


def _is_imagen(model: str) -> bool:
    return model.startswith("imagen-")


def _tier_pixels(tier: str) -> float:
    """Nominal side of an ``imageSize`` tier: "1K" is 1024, "512" is 512."""
    upper = tier.upper()
    return float(upper[:-1]) * 1024 if upper.endswith("K") else float(upper)


def _image_size(width: int, height: int, tiers: tuple[str, ...]) -> str | None:
    """The tier whose area is nearest to ``width * height`` in log space; ties go up."""
    if not tiers:
        return None
    target = math.log(width * height)
    return min(
        tiers,
        key=lambda t: (abs(2 * math.log(_tier_pixels(t)) - target), -_tier_pixels(t)),
    )


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _error_body(response: httpx.Response) -> dict[str, Any]:
    body = error_json(response)
    if isinstance(body, list) and body:  # some Google front ends wrap the error in a list
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """``google.rpc.RetryInfo.retryDelay`` ("30s", "1.5s") in seconds."""
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            try:
                return float(str(delay).removesuffix("s"))
            except ValueError:
                return None
    return None


def _usage(raw: Any) -> TokenUsage | None:
    """``usageMetadata`` as token usage; thinking tokens are billed as output."""
    if not isinstance(raw, dict):
        return None
    prompt = int(raw.get("promptTokenCount") or 0)
    output = int(raw.get("candidatesTokenCount") or 0) + int(raw.get("thoughtsTokenCount") or 0)
    details = {
        f"{str(d.get('modality', 'other')).lower()}_tokens": int(d.get("tokenCount") or 0)
        for d in _dicts(raw.get("promptTokensDetails"))
    }
    return TokenUsage(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=int(raw.get("totalTokenCount") or prompt + output),
        input_tokens_details=details or None,
    )


def _sum_usage(usages: list[TokenUsage | None]) -> TokenUsage | None:
    present = [u for u in usages if u is not None]
    if not present:
        return None
    details: dict[str, int] = {}
    for usage in present:
        for name, count in (usage.input_tokens_details or {}).items():
            details[name] = details.get(name, 0) + count
    return TokenUsage(
        input_tokens=sum(u.input_tokens for u in present),
        output_tokens=sum(u.output_tokens for u in present),
        total_tokens=sum(u.total_tokens for u in present),
        input_tokens_details=details or None,
    )
