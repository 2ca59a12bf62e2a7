"""Loopback fakes of OpenAI's Images API and of Azure OpenAI image deployments, for the
``openai`` and ``azure`` adapters. Stricter than ``openai_images.py``: they check the
per-model rules the real services enforce, so an adapter that sends a wrong field fails.

OpenAI, after the API reference "Images" (platform.openai.com/docs/api-reference/images)
and the official SDK (openai/openai-python ``src/openai/resources/images.py``,
``src/openai/types/image_generate_params.py``, ``image_edit_params.py``,
``image_create_variation_params.py``, ``images_response.py``, ``image.py``):

* ``POST /v1/images/generations`` (JSON), ``/v1/images/edits`` (multipart, ``image`` or
  repeated ``image[]``, ``mask``), ``/v1/images/variations`` (multipart, dall-e-2 only);
  ``Authorization: Bearer <key>``.
* gpt-image models: ``response_format`` is rejected, answers are always ``b64_json`` with
  ``usage`` (``input_tokens``, ``output_tokens``, ``total_tokens``,
  ``input_tokens_details``), ``quality``, ``background``, ``output_format``, ``size``; up to 16
  input images; sizes 1024x1024/1536x1024/1024x1536/auto (gpt-image-2: any WxH, multiples of
  16, aspect within 3:1). ``style`` is dall-e-3 only; ``output_format``, ``background``,
  ``moderation``, ``output_compression`` are gpt-image only; ``moderation`` is not an edit
  field. dall-e-3: n=1, 1024x1024/1792x1024/1024x1792, ``revised_prompt``. dall-e-2: one
  square PNG to edit, 256/512/1024 squares. dall-e answers carry ``url`` unless
  ``response_format=b64_json``.
* Errors ``{"error": {"message", "type", "param", "code"}}``; unknown fields are rejected;
  a refused prompt is 400 ``moderation_blocked`` (type ``image_generation_user_error``) on
  gpt-image models and 400 ``content_policy_violation`` on dall-e.

Azure, after Microsoft Learn "How to use Azure OpenAI image generation models"
(MicrosoftDocs/azure-ai-docs ``articles/ai-foundry/openai/how-to/dall-e.md``) and the latest
preview inference reference ("Image generations - Create/Edit", ``dalleErrorResponse``):

* ``POST /openai/deployments/{deployment}/images/generations?api-version=...`` and
  ``.../images/edits``; header ``api-key``; no variations; dall-e deployments do not edit;
  ``output_format`` png or jpeg (webp is not supported), ``output_compression`` jpeg only.
* Errors ``{"error": {"code", "message", ...}}``; a filtered prompt is 400 with ``code:
  "contentFilter"`` and ``inner_error.code: "ResponsibleAIPolicyViolation"``; a wrong key is
  401, an unknown deployment 404 ``DeploymentNotFound``.

Account-level failures, as OpenAI documents them (error codes guide,
https://developers.openai.com/api/docs/guides/error-codes, and the deprecations page,
https://developers.openai.com/api/docs/deprecations, both checked 2026-11-29): ``account``
set to ``billing_hard_limit_reached`` answers 400 with that code; ``insufficient_quota``
answers 429 with type ``insufficient_quota``; a model in ``retired`` answers 404
``model_not_found`` ("The model `x` does not exist or you do not have access to it.").
The bodies' wording is as quoted by OpenAI's community forum and Microsoft's Dev Proxy
page on OpenAI quota errors (learn.microsoft.com, secondary). Requests must be
``application/json`` (generations) or ``multipart/form-data`` (edits, variations); the SDK
sends nothing else. ``input_fidelity`` is rejected on ``gpt-image-1-mini`` (the image
generation guide lists high input fidelity for gpt-image-1 and later, not mini).

``urls_always`` makes dall-e answer URLs whatever was asked (to test URL fetching);
``failures`` scripts the next answers (status, error body, headers) before any check runs.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.asgi import serve_app
from fakes.files import stored_file
from fakes.state import reset_fake

GENERATE_FIELDS = {
    "prompt",
    "background",
    "model",
    "moderation",
    "n",
    "output_compression",
    "output_format",
    "partial_images",
    "quality",
    "response_format",
    "size",
    "stream",
    "style",
    "user",
}
EDIT_FIELDS = {
    "prompt",
    "background",
    "input_fidelity",
    "model",
    "n",
    "output_compression",
    "output_format",
    "partial_images",
    "quality",
    "response_format",
    "size",
    "stream",
    "user",
}
VARIATION_FIELDS = {"model", "n", "response_format", "size", "user"}
GPT_ONLY = {"background", "moderation", "output_compression", "output_format", "input_fidelity"}
AZURE_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)
ACCOUNT_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "billing_hard_limit_reached": (
        400,
        {
            "message": "Billing hard limit has been reached",
            "type": "invalid_request_error",
            "param": None,
            "code": "billing_hard_limit_reached",
        },
    ),
    "insufficient_quota": (
        429,
        {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        },
    ),
}
SIZES = {
    "gpt-image": {"1024x1024", "1536x1024", "1024x1536", "auto"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
}


class Rejected(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.status = status
        self.error = error


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    fields: dict[str, Any]
    files: dict[str, list[tuple[str, bytes]]]  # name -> [(content type, bytes)]


@dataclass
class Failure:
    status: int
    error: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeOpenAIPlatform:
    api_key: str = "sk-test"
    calls: list[Call] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    urls_always: bool = False  # answer dall-e with URLs even when b64_json was asked for
    account: str | None = None  # a key of ACCOUNT_ERRORS: every call fails with it
    retired: set[str] = field(default_factory=set)  # models answering 404 model_not_found
    url: str = ""
    _files: dict[str, bytes] = field(default_factory=dict)

    def reset(self) -> None:
        reset_fake(self, "api_key", "url")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/{operation}", self._openai, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _openai(self, request: Request) -> Response:
        call = await _record(request)
        self.calls.append(call)
        if self.failures:
            return _failure(self.failures.pop(0))
        if call.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key"
            )
        try:
            self.check_account(request.path_params["operation"], call)
            return self.answer(request.path_params["operation"], call, call.fields.get("model"))
        except Rejected as exc:
            return JSONResponse({"error": exc.error}, status_code=exc.status)

    def check_account(self, operation: str, call: Call) -> None:
        """What OpenAI checks before the request's own fields: content type, the
        account's standing, and whether the model still exists."""
        content_type = call.headers.get("content-type", "")
        wanted = "application/json" if operation == "generations" else "multipart/form-data"
        if not content_type.startswith(wanted):
            raise _invalid(f"Invalid Content-Type header ({content_type}).", None, None)
        if self.account is not None:
            status, error = ACCOUNT_ERRORS[self.account]
            raise Rejected(status, error)
        model = call.fields.get("model")
        if model in self.retired:
            raise Rejected(
                404,
                {
                    "message": f"The model `{model}` does not exist or you do not have access "
                    "to it.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                },
            )

    async def _file(self, request: Request) -> Response:
        return stored_file(self._files, request, "image/png")

    # -- the service's rules ---------------------------------------------------------------

    def answer(self, operation: str, call: Call, model: Any) -> Response:
        fields = call.fields
        if not isinstance(model, str):
            raise _invalid("Missing required parameter: 'model'.", "model", "missing")
        family = _family(model)
        allowed = {"generations": GENERATE_FIELDS, "edits": EDIT_FIELDS}.get(
            operation, VARIATION_FIELDS
        )
        for name in fields:
            if name not in allowed:
                raise _invalid(f"Unrecognized request argument supplied: {name}", name, None)
            if family != "gpt-image" and name in GPT_ONLY:
                raise _invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        if model.startswith("gpt-image-1-mini") and "input_fidelity" in fields:
            raise _invalid(
                "input_fidelity is not supported for gpt-image-1-mini.",
                "input_fidelity",
                "unsupported_parameter",
            )
        if family == "gpt-image" and "response_format" in fields:
            raise _invalid(
                "Unknown parameter: 'response_format'.", "response_format", "unknown_parameter"
            )
        if "style" in fields and family != "dall-e-3":
            raise _invalid("Unknown parameter: 'style'.", "style", "unknown_parameter")
        if operation == "variations" and family != "dall-e-2":
            raise _invalid("Variations are only supported for dall-e-2.", "model", None)
        if operation == "edits" and family == "dall-e-3":
            raise _invalid("Edits are not supported for dall-e-3.", "model", None)
        n = int(fields.get("n", 1))
        if family == "dall-e-3" and n != 1:
            raise _invalid("You must provide n=1 for this model.", "n", "invalid_value")
        if not 1 <= n <= 10:
            raise _invalid("n must be between 1 and 10.", "n", "invalid_value")
        width, height = self.check_size(model, family, str(fields.get("size") or "auto"))
        if operation == "edits":
            self.check_edit_inputs(family, call)
        if operation != "variations" and str(fields.get("prompt", "")).startswith("forbidden"):
            raise self.refusal(family)
        fmt = str(fields.get("output_format") or "png")
        self.check_output(fmt, fields)
        return JSONResponse(self.body(model, family, fields, n, width, height, fmt))

    def check_size(self, model: str, family: str, size: str) -> tuple[int, int]:
        if model.startswith("gpt-image-2") and size != "auto":
            width, height = (int(v) for v in size.split("x"))
            if width % 16 or height % 16 or max(width, height) / min(width, height) > 3:
                raise _invalid(f"Invalid size '{size}'.", "size", "invalid_value")
            return width, height
        if size not in SIZES[family]:
            raise _invalid(f"Invalid size '{size}' for {model}.", "size", "invalid_value")
        return (1024, 1024) if size == "auto" else tuple(int(v) for v in size.split("x"))  # type: ignore[return-value]

    def check_edit_inputs(self, family: str, call: Call) -> None:
        images = call.files.get("image", []) + call.files.get("image[]", [])
        limit = 16 if family == "gpt-image" else 1
        if not images or len(images) > limit:
            raise _invalid(f"Provide between 1 and {limit} images.", "image", "invalid_value")
        first = Image.open(io.BytesIO(images[0][1]))
        if family == "dall-e-2" and (first.format != "PNG" or first.width != first.height):
            raise _invalid("Uploaded image must be a square PNG.", "image", "invalid_image")
        for _mask_type, mask_bytes in call.files.get("mask", []):
            mask = Image.open(io.BytesIO(mask_bytes))
            if mask.format != "PNG" or mask.mode not in ("RGBA", "LA", "PA"):
                raise _invalid("Invalid mask: must be a PNG with alpha.", "mask", "invalid_mask")
            if mask.size != first.size:
                raise _invalid(
                    "Mask and image must have the same dimensions.", "mask", "invalid_mask"
                )

    def check_output(self, fmt: str, fields: dict[str, Any]) -> None:
        if fmt not in ("png", "jpeg", "webp"):
            raise _invalid(f"Invalid output_format '{fmt}'.", "output_format", "invalid_value")

    def refusal(self, family: str) -> Rejected:
        if family == "gpt-image":
            return Rejected(
                400,
                {
                    "message": "Your request was rejected by the safety system.",
                    "type": "image_generation_user_error",
                    "param": None,
                    "code": "moderation_blocked",
                },
            )
        return Rejected(
            400,
            {
                "message": "Your request was rejected as a result of our safety system.",
                "type": "invalid_request_error",
                "param": None,
                "code": "content_policy_violation",
            },
        )

    def body(
        self, model: str, family: str, fields: dict[str, Any], n: int, w: int, h: int, fmt: str
    ) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        for i in range(n):
            encoded = _image(w, h, i, fmt if family == "gpt-image" else "png")
            item: dict[str, Any] = {}
            b64 = fields.get("response_format") == "b64_json" and not self.urls_always
            if family == "gpt-image" or b64:
                item["b64_json"] = base64.b64encode(encoded).decode()
            else:
                name = f"img{len(self._files)}.png"
                self._files[name] = encoded
                item["url"] = f"{self.url}/files/{name}"
            if family == "dall-e-3":
                item["revised_prompt"] = f"revised: {fields.get('prompt')}"
            data.append(item)
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if family == "gpt-image":
            body.update(
                background="opaque",
                output_format=fmt,
                quality="medium",
                size=f"{w}x{h}",
                usage={
                    "input_tokens": 10,
                    "output_tokens": 100 * n,
                    "total_tokens": 10 + 100 * n,
                    "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                },
            )
        return body


@dataclass
class FakeAzureOpenAI(FakeOpenAIPlatform):
    """Azure: deployments map deployment names to the model they run."""

    deployments: dict[str, str] = field(default_factory=dict)
    # The versions this fake serves: the adapter's default and the GA version with images.
    api_versions: set[str] = field(
        default_factory=lambda: {"2025-04-01-preview", "2024-10-21", "2025-03-01-preview"}
    )

    def reset(self) -> None:
        reset_fake(self, "api_key", "url", "deployments")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/openai/deployments/{deployment}/images/{operation}",
                    self._azure,
                    methods=["POST"],
                ),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _azure(self, request: Request) -> Response:
        call = await _record(request)
        self.calls.append(call)
        if self.failures:
            return _failure(self.failures.pop(0))
        if call.headers.get("api-key") != self.api_key:
            error = {"code": "401", "message": AZURE_ACCESS_DENIED}
            return JSONResponse({"error": error}, status_code=401)
        model = self.deployments.get(request.path_params["deployment"])
        operation = request.path_params["operation"]
        version = call.query.get("api-version")
        if version not in self.api_versions:
            # api-version is a required query parameter of every data-plane call (Azure
            # OpenAI inference reference); the error wording here is the fake's own
            error = {
                "code": "404",
                "message": "Resource not found" if version else "Missing api-version",
            }
            return JSONResponse({"error": error}, status_code=404 if version else 400)
        if model is None or operation not in ("generations", "edits"):
            return JSONResponse(
                {
                    "error": {
                        "code": "DeploymentNotFound",
                        "message": ("The API deployment for this resource does not exist."),
                    }
                },
                status_code=404,
            )
        try:
            self.check_account(operation, call)
            return self.answer(operation, call, model)
        except Rejected as exc:
            return JSONResponse({"error": exc.error}, status_code=exc.status)

    def answer(self, operation: str, call: Call, model: Any) -> Response:
        if "moderation" in call.fields:  # not an Azure parameter
            raise _invalid("Unknown parameter: 'moderation'.", "moderation", "unknown_parameter")
        return super().answer(operation, call, model)

    def check_output(self, fmt: str, fields: dict[str, Any]) -> None:
        if fmt not in ("png", "jpeg"):
            raise _invalid(f"Invalid output_format '{fmt}'.", "output_format", "invalid_value")
        if "output_compression" in fields and fmt != "jpeg":
            raise _invalid(
                "output_compression is only supported with jpeg.",
                "output_compression",
                "invalid_value",
            )

    def refusal(self, family: str) -> Rejected:
        return Rejected(
            400,
            {
                "code": "contentFilter",
                "param": "prompt",
                "type": None,
                "message": "Your task failed as a result of our safety system.",
                "inner_error": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_results": {"violence": {"filtered": True, "severity": "high"}},
                },
            },
        )


def _family(model: str) -> str:
    if model.startswith("dall-e-3"):
        return "dall-e-3"
    if model.startswith("dall-e-2"):
        return "dall-e-2"
    return "gpt-image"


async def _record(request: Request) -> Call:
    fields: dict[str, Any] = {}
    files: dict[str, list[tuple[str, bytes]]] = {}
    if request.headers.get("content-type", "").startswith("application/json"):
        fields = await request.json()
    else:
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields[key] = value
            else:
                content_type = value.content_type or ""
                files.setdefault(key, []).append((content_type, await value.read()))
    return Call(request.url.path, dict(request.headers), dict(request.query_params), fields, files)


def _invalid(message: str, param: str | None, code: str | None) -> Rejected:
    return Rejected(
        400, {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    )


def _error(status: int, message: str, kind: str, param: str | None, code: str | None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _failure(failure: Failure) -> Response:
    return JSONResponse({"error": failure.error}, failure.status, headers=failure.headers)


def _image(width: int, height: int, index: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40 * index % 255, 120, 200)).save(buffer, fmt.upper())
    return buffer.getvalue()


F = TypeVar("F", bound=FakeOpenAIPlatform)


@contextmanager
def serve(fake: F) -> Iterator[F]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
