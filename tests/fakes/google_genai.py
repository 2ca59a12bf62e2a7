"""A loopback fake of the Gemini API (generativelanguage.googleapis.com) image endpoints.

Follows:

* Gemini API reference, ``models.generateContent`` and the image generation guide
  (ai.google.dev/gemini-api/docs/image-generation): ``POST /v1beta/models/{model}:
  generateContent``, ``x-goog-api-key`` header, ``contents[].parts[]`` of ``text`` and
  ``inlineData {mimeType, data}``, ``generationConfig {responseModalities, imageConfig
  {aspectRatio, imageSize}, seed}``; answers ``{candidates: [{content: {role, parts},
  finishReason}], promptFeedback?, usageMetadata}`` where thinking models send interim
  parts marked ``thought: true`` before the final image.
* Imagen on the Gemini API (ai.google.dev/gemini-api/docs/imagen): ``POST /v1beta/models/
  {model}:predict`` with ``{instances: [{prompt}], parameters: {sampleCount (1-4),
  aspectRatio, sampleImageSize, personGeneration, includeRaiReason}}``; answers
  ``{predictions: [{bytesBase64Encoded, mimeType} | {raiFilteredReason}]}``.
* The official Python SDK, googleapis/python-genai: ``google/genai/_api_client.py``
  (base URL, ``v1beta``, ``x-goog-api-key``), ``google/genai/models.py``
  (``_GenerateContentConfig_to_mldev``, ``_GenerateImagesConfig_to_mldev`` — imageSize is
  ``parameters.sampleImageSize`` and seed is refused for Imagen on this API —
  ``_GeneratedImage_from_mldev``), ``google/genai/types.py`` (``FinishReason``,
  ``BlockedReason``, ``ImageConfig``, usage metadata fields), ``google/genai/errors.py``.
* Errors as ai.google.dev/gemini-api/docs/generate-content/api-errors documents them:
  ``{"error": {"code", "message", "status", "details"}}``; a bad key is 400
  INVALID_ARGUMENT with an ``ErrorInfo`` reason ``API_KEY_INVALID``; 429
  RESOURCE_EXHAUSTED carries a ``google.rpc.RetryInfo`` ``retryDelay``.

* Depleted prepay credits are 402 with status ``RESOURCE_EXHAUSTED`` (no longer 429), as
  Google announced at https://discuss.ai.google.dev/t/api-update-depleted-prepay-credits-now-return-http-402-instead-of-429/183654
  (checked 2026-11-30): the ``prepay_depleted`` knob.

Prompts steer the unhappy paths: "blocked..." (promptFeedback.blockReason), "unsafe..."
(finishReason IMAGE_SAFETY), "chatty..." (text only, no image), "forbidden..." (Imagen:
every image filtered). ``fail_status`` makes every call fail with Google's error body.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.asgi import serve_app
from fakes.state import reset_fake

GEMINI_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
EXTREME_RATIOS = {"1:4", "4:1", "1:8", "8:1"}
IMAGEN_RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9"}
IMAGE_SIZES = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
# "512" is Gemini 3.1 Flash Image's 0.5K tier (747 output tokens; Gemini 3.1 Flash Image
# model page, docs.cloud.google.com/gemini-enterprise-agent-platform/models/gemini/
# 3-1-flash-image-preview, checked 2026-11-29); Pro Image starts at 1K.
SMALL_TIER_MODELS = ("gemini-3.1-flash-image",)
KNOWN_MODELS = {
    "gemini-3.1-flash-image",
    "gemini-3-pro-image",
    "gemini-2.5-flash-image",
    "gemini-3.1-flash-lite-image",
    "imagen-4.0-generate-001",
    "imagen-4.0-fast-generate-001",
    "imagen-4.0-ultra-generate-001",
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class Call:
    model: str
    method: str
    api_key: str | None
    body: dict[str, Any]


@dataclass
class FakeGoogle:
    api_key: str = "gk-fake"
    fail_status: int | None = None
    fail_status_name: str | None = None  # e.g. FAILED_PRECONDITION with 400
    retry_delay: str | None = None  # RetryInfo.retryDelay on failures, e.g. "7s"
    retry_after: str | None = None  # a Retry-After header on failures
    thinking: bool = False  # send interim "thought" parts before the final image
    prepay_depleted: bool = False  # 402 RESOURCE_EXHAUSTED, see the module docstring
    calls: list[Call] = field(default_factory=list)
    url: str = ""

    def reset(self) -> None:
        reset_fake(self, "url")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1beta/models/{target}", self._models, methods=["POST"])])

    async def _models(self, request: Request) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Invalid JSON payload received.")
        key = request.headers.get("x-goog-api-key")
        self.calls.append(Call(model, method, key, body if isinstance(body, dict) else {}))
        if key != self.api_key:
            return self._error(
                400,
                "API key not valid. Please pass a valid API key.",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )
        if self.fail_status is not None:
            return self._failure()
        if self.prepay_depleted:
            return self._error(
                402,
                "Your prepayment credits are depleted. Please go to AI Studio at "
                "https://ai.studio/projects to manage your project and billing.",
                status_name="RESOURCE_EXHAUSTED",
            )
        if model not in KNOWN_MODELS or method not in ("generateContent", "predict"):
            return self._error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported "
                f"for {method}.",
            )
        if method == "predict":
            return self._predict(model, body)
        return self._generate_content(model, body)

    def _failure(self) -> Response:
        status = self.fail_status or 500
        details: list[dict[str, Any]] = []
        if self.retry_delay:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": self.retry_delay,
                }
            )
        messages = {
            429: "You exceeded your current quota, please check your plan and billing details.",
            403: "Method doesn't allow unregistered callers.",
            500: "An internal error has occurred. Please retry or report.",
            503: "The model is overloaded. Please try again later.",
        }
        message = messages.get(status, "Request contains an invalid argument.")
        if self.fail_status_name == "FAILED_PRECONDITION":
            message = "User location is not supported for the API use."
        response = self._error(status, message, details=details, status_name=self.fail_status_name)
        if self.retry_after:
            response.headers["Retry-After"] = self.retry_after
        return response

    # --- generateContent ------------------------------------------------------------------

    def _generate_content(self, model: str, body: Any) -> Response:
        problem, prompt, images = _read_contents(body)
        if problem:
            return self._error(400, problem)
        config = body.get("generationConfig") or {}
        modalities = config.get("responseModalities") or ["TEXT", "IMAGE"]
        if not set(modalities) <= {"TEXT", "IMAGE"} or "IMAGE" not in modalities:
            return self._error(400, "* GenerateContentRequest.generation_config: bad modalities")
        image_config = config.get("imageConfig") or {}
        ratios = GEMINI_RATIOS | (
            EXTREME_RATIOS if model.startswith("gemini-3.1-flash-i") else set()
        )
        ratio = image_config.get("aspectRatio")
        if ratio is not None and ratio not in ratios:
            return self._error(400, f"Unsupported aspect ratio: {ratio}")
        tier = image_config.get("imageSize", "1K")
        if tier not in IMAGE_SIZES or (tier == "512" and not model.startswith(SMALL_TIER_MODELS)):
            return self._error(400, f"Unsupported image size: {tier}")
        if prompt.startswith("blocked"):
            return JSONResponse(
                {
                    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                    "usageMetadata": _usage(prompt, images, 0),
                }
            )
        if prompt.startswith("unsafe"):
            return JSONResponse(
                {
                    "candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}],
                    "usageMetadata": _usage(prompt, images, 0),
                }
            )
        if prompt.startswith("chatty"):
            parts: list[dict[str, Any]] = [{"text": "I would rather describe it in words."}]
            return JSONResponse(_candidate(parts, _usage(prompt, images, 0)))
        if ratio is None and images:
            width, height = dims_for(f"{images[0][0]}:{images[0][1]}", IMAGE_SIZES[tier])
        else:
            width, height = dims_for(ratio or "1:1", IMAGE_SIZES[tier])
        parts = []
        if self.thinking:
            parts.append({"text": "**Composing** the scene", "thought": True})
            parts.append(
                {
                    "inlineData": {"mimeType": "image/png", "data": _b64_png(64, 64, 9)},
                    "thought": True,
                }
            )
        if "TEXT" in modalities:
            parts.append({"text": f"Here is your image: {prompt}"})
        seed = config.get("seed")
        parts.append(
            {
                "inlineData": {
                    "mimeType": "image/png",
                    "data": _b64_png(width, height, int(seed or 0)),
                },
                "thoughtSignature": "c2lnbmF0dXJl",
            }
        )
        return JSONResponse(_candidate(parts, _usage(prompt, images, 1290, thoughts=self.thinking)))

    # --- predict (Imagen) -----------------------------------------------------------------

    def _predict(self, model: str, body: Any) -> Response:
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list) or len(instances) != 1:
            return self._error(400, "instances must hold exactly one instance")
        prompt = instances[0].get("prompt") if isinstance(instances[0], dict) else None
        if not isinstance(prompt, str) or not prompt:
            return self._error(400, "The prompt is required.")
        params = body.get("parameters") or {}
        count = params.get("sampleCount", 4)
        if not isinstance(count, int) or not 1 <= count <= 4:
            return self._error(400, "sampleCount must be between 1 and 4.")
        ratio = params.get("aspectRatio", "1:1")
        if ratio not in IMAGEN_RATIOS:
            return self._error(400, f"Unsupported aspect ratio: {ratio}")
        tier = params.get("sampleImageSize", "1K")
        if tier not in ("1K", "2K") or ("fast" in model and "sampleImageSize" in params):
            return self._error(400, f"sampleImageSize {tier} is not supported for {model}")
        if "seed" in params:
            return self._error(400, "seed is not supported in Gemini API.")
        if prompt.startswith("forbidden"):
            reason = "Your current safety filter threshold filtered out 1 generated images."
            return JSONResponse({"predictions": [{"raiFilteredReason": reason}]})
        width, height = _IMAGEN_SIZES[ratio]
        scale = 2 if tier == "2K" else 1
        predictions = [
            {
                "mimeType": "image/png",
                "bytesBase64Encoded": _b64_png(width * scale, height * scale, i),
            }
            for i in range(count)
        ]
        return JSONResponse({"predictions": predictions})

    def _error(
        self,
        status: int,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        status_name: str | None = None,
    ) -> Response:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": status_name or _STATUS_NAMES.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        return JSONResponse({"error": error}, status_code=status)


_IMAGEN_SIZES = {
    "1:1": (1024, 1024),
    "3:4": (896, 1280),
    "4:3": (1280, 896),
    "9:16": (768, 1408),
    "16:9": (1408, 768),
}


def _read_contents(body: Any) -> tuple[str | None, str, list[tuple[int, int]]]:
    """Validate ``contents``; return (problem, prompt text, input image sizes)."""
    contents = body.get("contents") if isinstance(body, dict) else None
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified", "", []
    texts: list[str] = []
    images: list[tuple[int, int]] = []
    for content in contents:
        for part in content.get("parts") or []:
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(inline, dict):
                mime = inline.get("mimeType") or inline.get("mime_type")
                if mime not in (
                    "image/png",
                    "image/jpeg",
                    "image/webp",
                    "image/heic",
                    "image/heif",
                ):
                    return f"Unsupported MIME type: {mime}", "", []
                try:
                    data = base64.b64decode(inline.get("data") or "", validate=True)
                    with Image.open(io.BytesIO(data)) as img:
                        images.append(img.size)
                except (binascii.Error, ValueError, OSError):
                    return "Unable to process input image.", "", []
            else:
                return "* GenerateContentRequest.contents.parts: unknown part", "", []
    return None, " ".join(texts), images


def dims_for(ratio: str, tier: float) -> tuple[int, int]:
    """About (1024 * tier)^2 pixels at ``ratio``, sides multiples of 16."""
    w, h = (float(x) for x in ratio.split(":"))
    side = 1024 * tier

    def snap(v: float) -> int:
        return max(16, round(v / 16) * 16)

    return snap(side * math.sqrt(w / h)), snap(side * math.sqrt(h / w))


def _candidate(parts: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": usage,
        "modelVersion": "fake",
    }


def _usage(
    prompt: str, images: list[tuple[int, int]], out: int, *, thoughts: bool = False
) -> dict[str, Any]:
    text_tokens = max(1, len(prompt.split()))
    image_tokens = 258 * len(images)
    usage: dict[str, Any] = {
        "promptTokenCount": text_tokens + image_tokens,
        "candidatesTokenCount": out,
        "totalTokenCount": text_tokens + image_tokens + out + (100 if thoughts else 0),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}]
        + ([{"modality": "IMAGE", "tokenCount": image_tokens}] if images else []),
    }
    if thoughts:
        usage["thoughtsTokenCount"] = 100
    return usage


def _b64_png(width: int, height: int, index: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (37 * index % 255, 90, 160)).save(
        buffer, "PNG", compress_level=1
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@contextmanager
def serve_fake(fake: FakeGoogle) -> Iterator[FakeGoogle]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
