"""A loopback fake of xAI's Grok Imagine image API, for the ``xai`` adapter.

Pages it follows (every rule below names its source; checked 2026-11-30):

* [REF] xAI REST API reference, https://docs.x.ai/developers/rest-api-reference (linked
  from the debugging page), as mirrored field by field at
  https://www.withone.ai/knowledge/x-ai/conn_mod_def%3A%3AGJ8XVhsvjYc%3A%3AT3TwNw-URASa97MrOR63IQ
  (secondary copy): ``POST /v1/images/generations`` JSON ``{prompt (required), model,
  n 1-10, aspect_ratio (1:1 3:4 4:3 9:16 16:9 2:3 3:2 9:19.5 19.5:9 9:20 20:9 1:2 2:1
  auto), quality (low|medium|high), resolution (1k|2k), response_format (url|b64_json,
  default url), user}``; ``size`` and ``style`` are "(Not supported)". A success is
  ``{"data": [{"b64_json" | "url", "mime_type", "revised_prompt"}]}``.
* [IMG] docs.x.ai "Image Generation" / Imagine overview,
  https://docs.x.ai/developers/model-capabilities/images : ``POST /v1/images/edits`` takes
  ``image: {"type": "image_url", "url"}`` or ``images: [...]`` (up to 3 sources, a public
  URL or a base64 data URI); a single-image edit keeps its input's aspect ratio.
* [DBG] docs.x.ai "Debugging Errors", https://docs.x.ai/developers/debugging : 400 for an
  invalid argument *and* for an incorrect API key; 401 without a valid authorization
  header; 403 when the key or team lacks permission or is blocked; 404 when the model in
  the body is not found; 415 for an empty body or no ``Content-Type: application/json``;
  422 for a field with an invalid format; 429 for rate limits.
* [CREDITS] exhausted credits, as xAI answers them (secondary, users' reports):
  429 in https://github.com/continuedev/continue/issues/10373 and 403 in
  https://github.com/warpdotdev/warp/issues/14867, both with the message "Your team <id>
  has either used all available credits or reached its monthly spending limit. ...".
* [SHAPE] the error body is the flat ``{"code": "<status text>", "error": "<message>"}``
  (as quoted in https://github.com/i-am-bee/beeai-framework/issues/447);
  ``error_shape="nested"`` answers the OpenAI-style ``{"error": {"message", "type",
  "code"}}`` that Vercel's ``@ai-sdk/xai`` (``packages/xai/src/xai-error.ts``) parses.

Not enforced, because no page says xAI rejects it: unknown fields (tests assert instead
that the adapter sends only documented ones).

Sizes produced: the long side is 1024 (1k) or 2048 (2k) and the short side follows the
aspect ratio (our model of [IMG]; xAI does not publish pixel sizes). Knobs: ``fail``
makes every call answer ``(status, message)``; ``out_of_credits`` (429 or 403) answers
[CREDITS]; ``blocked`` answers 403; ``retired`` lists model ids answered 404;
``withhold`` marks every image ``respect_moderation: false`` with no bytes; ``short_by``
returns fewer images than asked; ``break_urls`` hands out result URLs that answer 404.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.asgi import serve_app
from fakes.files import stored_file
from fakes.state import reset_fake

ASPECT_RATIOS = frozenset(
    {"1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9"}
    | {"1:2", "2:1", "auto"}
)
MODELS = frozenset({"grok-imagine-image", "grok-imagine-image-quality"})
UNSUPPORTED = ("size", "style")  # [REF]: "(Not supported)"
QUALITIES = ("low", "medium", "high")  # [REF]
CREDITS_MESSAGE = (
    "Your team 0f2c-fake has either used all available credits or reached its monthly "
    "spending limit. To continue making API requests, please purchase more credits or "
    "raise your spending limit."
)
INVALID_ARGUMENT = "Client specified an invalid argument"


@dataclass
class Call:
    path: str
    auth: str | None
    body: dict[str, Any]


@dataclass
class FakeXAI:
    api_key: str = "xai-test-key"
    fail: tuple[int, str] | None = None
    out_of_credits: int | None = None  # 429 or 403, [CREDITS]
    blocked: bool = False
    retired: set[str] = field(default_factory=set)
    retry_after: str | None = None
    withhold: bool = False
    short_by: int = 0
    error_shape: str = "flat"
    break_urls: bool = False  # result URLs that answer 404
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _files: dict[str, bytes] = field(default_factory=dict)

    def reset(self) -> None:
        reset_fake(self, "url")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._generations, methods=["POST"]),
                Route("/v1/images/edits", self._edits, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _file(self, request: Request) -> Response:
        return stored_file(self._files, request, "image/jpeg")

    async def _generations(self, request: Request) -> Response:
        return await self._answer(request, "/v1/images/generations")

    async def _edits(self, request: Request) -> Response:
        return await self._answer(request, "/v1/images/edits")

    async def _answer(self, request: Request, path: str) -> Response:
        auth = request.headers.get("authorization")
        if not auth or not auth.startswith("Bearer "):  # [DBG] 401
            return _error(401, "No authorization header or an invalid token was provided.")
        raw = await request.body()
        if "application/json" not in request.headers.get("content-type", "") or not raw:
            return _error(415, "Expected a JSON body.")  # [DBG] 415
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(422, "The request body must be a JSON object.")
        self.calls.append(Call(path, auth, body))
        if auth != f"Bearer {self.api_key}":  # [DBG] 400 for an incorrect key
            return _error(
                400,
                "Incorrect API key provided: xa***ey. You can obtain an API key from "
                "https://console.x.ai.",
            )
        refusal = self._account_refusal(body)
        if refusal is not None:
            return refusal
        problem = _problem(body)
        if problem:
            return _error(422 if problem.startswith("Invalid value") else 400, problem)
        return JSONResponse({"data": [self._item(body, i) for i in range(_count(body, self))]})

    def _account_refusal(self, body: dict[str, Any]) -> Response | None:
        """Failures about the account or the model, checked before the arguments."""
        nested = self.error_shape == "nested"
        retry = {"Retry-After": self.retry_after} if self.retry_after else None
        if self.fail is not None:
            return _error(*self.fail, headers=retry, nested=nested)
        if self.out_of_credits is not None:  # [CREDITS]
            return _error(self.out_of_credits, CREDITS_MESSAGE, headers=retry, nested=nested)
        if self.blocked:  # [DBG] 403
            return _error(403, "Your API key or team is blocked.", nested=nested)
        model = body.get("model")
        if isinstance(model, str) and (model not in MODELS or model in self.retired):
            return _error(  # [DBG] 404: the model in the body was not found
                404,
                f"The model {model} does not exist or your team does not have access to it.",
                nested=nested,
            )
        return None

    def _item(self, body: dict[str, Any], index: int) -> dict[str, Any]:
        if self.withhold:
            return {"url": "", "mime_type": "image/jpeg", "respect_moderation": False}
        width, height = _size(body)
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (20 * index % 255, 140, 70)).save(buffer, "JPEG")
        data = buffer.getvalue()
        item: dict[str, Any] = {"mime_type": "image/jpeg", "revised_prompt": body["prompt"]}
        if body.get("response_format", "url") == "b64_json":
            item["b64_json"] = base64.b64encode(data).decode()
        else:
            name = f"img{len(self._files)}"
            if not self.break_urls:
                self._files[name] = data
            item["url"] = f"{self.url}/files/{name}"
        return item


def _count(body: dict[str, Any], fake: FakeXAI) -> int:
    return max(1, int(body.get("n", 1)) - fake.short_by)


def _problem(body: dict[str, Any]) -> str | None:
    for name in UNSUPPORTED:
        if name in body:
            return f"Argument not supported: {name}"
    if not body.get("prompt"):  # [REF]: prompt is required
        return "prompt is required"
    if body.get("quality", "medium") not in QUALITIES:
        return f"Invalid value for quality: {body['quality']}"
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 10:
        return "Invalid value for n: must be between 1 and 10"
    if body.get("aspect_ratio", "auto") not in ASPECT_RATIOS:
        return f"Invalid value for aspect_ratio: {body['aspect_ratio']}"
    if body.get("resolution", "1k") not in ("1k", "2k"):
        return f"Invalid value for resolution: {body['resolution']}"
    if body.get("response_format", "url") not in ("url", "b64_json"):
        return "Invalid value for response_format"
    sources = ([body["image"]] if "image" in body else []) + list(body.get("images", []))
    if "image" in body and "images" in body:
        return "Only one of image or images can be set"
    if len(sources) > 3:
        return "At most 3 images can be edited together"
    for source in sources:
        if not isinstance(source, dict) or source.get("type") != "image_url":
            return "Invalid value for image: expected {type: image_url, url}"
        if not str(source.get("url", "")).startswith(("https://", "data:image/")):
            return "Invalid value for image.url: expected a URL or a base64 data URI"
    return None


def _size(body: dict[str, Any]) -> tuple[int, int]:
    long_side = 2048 if body.get("resolution") == "2k" else 1024
    w: float
    h: float
    if "image" in body:  # a single-image edit keeps the input's aspect ratio
        data = base64.b64decode(body["image"]["url"].partition(",")[2])
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    else:
        ratio = body.get("aspect_ratio", "auto")
        w, h = (1.0, 1.0) if ratio == "auto" else map(float, ratio.split(":"))
    scale = long_side / max(w, h)
    return round(w * scale), round(h * scale)


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, nested: bool = False
) -> Response:
    codes = {
        400: INVALID_ARGUMENT,
        401: "The request does not have valid authentication credentials",
        403: "The caller does not have permission to execute the specified operation",
        404: "Some requested entity was not found",
        415: "Unsupported media type",
        422: "Unprocessable entity",
        429: "Resource exhausted",
    }
    code = codes.get(status, "Internal error")
    if nested:
        token = "invalid_value" if status in (400, 422) else "server_error"
        body: dict[str, Any] = {"error": {"message": message, "type": code, "code": token}}
    else:
        body = {"code": code, "error": message}
    return JSONResponse(body, status_code=status, headers=headers)


@contextmanager
def serve_fake(fake: FakeXAI) -> Iterator[FakeXAI]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
