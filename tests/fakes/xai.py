"""A loopback fake of xAI's Grok Imagine image API, for the ``xai`` adapter.

Follows docs.x.ai "Image Generation" / "Imagine overview" (``POST /v1/images/generations``
and ``POST /v1/images/edits``, JSON only, ``Authorization: Bearer <key>``; ``n`` 1-10;
``response_format`` ``url`` | ``b64_json``; ``aspect_ratio`` and ``resolution`` 1k/2k; edits
take ``image: {"type": "image_url", "url"}`` or ``images: [...]``, up to 3 sources, a
public URL or a base64 data URI), the enums of the official SDK xai-org/xai-sdk-python
``src/xai_sdk/types/image.py``, and the REST edit body of Vercel's ``@ai-sdk/xai``
``packages/xai/src/xai-image-model.ts``. A success is ``{"data": [{"b64_json" | "url",
"mime_type", "revised_prompt"}]}``; output is JPEG.

Errors follow docs.x.ai "Debugging Errors": 400 for an invalid argument *and* for an
incorrect API key, 401 without a valid authorization header, 415 without a JSON body,
422 for a malformed field, 429 rate limits. The body is the flat ``{"code": "<status
text>", "error": "<message>"}`` the API sends (as quoted in beeai-framework issue #447:
``{'code': 'Client specified an invalid argument', 'error': 'Incorrect API key
provided: ...'}``); ``error_shape="nested"`` answers the OpenAI-style ``{"error":
{"message", "type", "code"}}`` that Vercel's ``packages/xai/src/xai-error.ts`` parses.
``size``, ``quality`` and ``style`` are refused with "Argument not supported" as
third-party xAI guides report.

Sizes produced: the long side is 1024 (1k) or 2048 (2k) and the short side follows the
aspect ratio; a single-image edit keeps its input's aspect ratio. ``fail`` makes every call
answer ``(status, message)``; ``withhold`` marks every image ``respect_moderation: false``
with no bytes; ``short_by`` returns fewer images than asked; ``break_urls`` hands out result
URLs that answer 404.
"""

from __future__ import annotations

import base64
import io
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

ASPECT_RATIOS = frozenset(
    {"1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "9:19.5", "19.5:9", "9:20", "20:9"}
    | {"1:2", "2:1", "auto"}
)
COMMON = frozenset(
    {"model", "prompt", "n", "response_format", "aspect_ratio", "resolution", "user"}
)
UNSUPPORTED = ("size", "quality", "style")
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
    retry_after: str | None = None
    withhold: bool = False
    short_by: int = 0
    error_shape: str = "flat"
    break_urls: bool = False  # result URLs that answer 404
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _files: dict[str, bytes] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._generations, methods=["POST"]),
                Route("/v1/images/edits", self._edits, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _file(self, request: Request) -> Response:
        data = self._files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg")

    async def _generations(self, request: Request) -> Response:
        return await self._answer(request, "/v1/images/generations", COMMON)

    async def _edits(self, request: Request) -> Response:
        return await self._answer(request, "/v1/images/edits", COMMON | {"image", "images"})

    async def _answer(self, request: Request, path: str, known: frozenset[str]) -> Response:
        auth = request.headers.get("authorization")
        if not auth or not auth.startswith("Bearer "):
            return _error(401, "No authorization header or an invalid token was provided.")
        if "application/json" not in request.headers.get("content-type", ""):
            return _error(415, "Expected a JSON body.")
        body = await request.json()
        self.calls.append(Call(path, auth, body))
        if auth != f"Bearer {self.api_key}":
            return _error(
                400,
                "Incorrect API key provided: xa***ey. You can obtain an API key from "
                "https://console.x.ai.",
            )
        if self.fail is not None:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return _error(*self.fail, headers=headers, nested=self.error_shape == "nested")
        problem = _problem(body, known)
        if problem:
            return _error(422 if problem.startswith("Invalid value") else 400, problem)
        return JSONResponse({"data": [self._item(body, i) for i in range(_count(body, self))]})

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


def _problem(body: dict[str, Any], known: frozenset[str]) -> str | None:
    for name in UNSUPPORTED:
        if name in body:
            return f"Argument not supported: {name}"
    unknown = set(body) - known
    if unknown:
        return f"Argument not supported: {', '.join(sorted(unknown))}"
    if not body.get("model") or not body.get("prompt"):
        return "model and prompt are required"
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
