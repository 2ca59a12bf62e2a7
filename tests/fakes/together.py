"""A loopback fake of Together AI's image endpoint, for the ``together`` adapter.

Follows the Together API reference "Create image" (docs.together.ai/reference/
post-images-generations) and the official SDK togethercomputer/together-py
``src/together/types/image_generate_params.py``: ``POST /v1/images/generations`` with
``Authorization: Bearer <key>`` and a JSON body ``{model, prompt, width, height, n,
seed, steps, response_format: "base64" | "url", output_format: "jpeg" | "png",
image_url, ...}``. A success is ``{"id", "model", "object": "list", "data": [{"index",
"b64_json" | "url", "type"}]}`` (response shape from togethercomputer/skills
``skills/together-images/references/api-reference.md``); failures are ``{"error":
{"message", "type", "param", "code"}}`` (together-python ``src/together/types/error.py``)
with the statuses of docs.together.ai/docs/error-codes (401, 402, 429, 500, 503...).

What it enforces (so adapter mistakes show up as failures): a JSON body
(``Content-Type: application/json``, as the SDK sends), the bearer key, ``model`` and
``prompt`` present, ``n`` a positive integer, integer width/height and the
``response_format`` enum (the reference's types). Not enforced, because the reference
does not say Together rejects them (re-audited 2026-11-30): sizes that are not multiples
of 16 or outside a range (that rounding is the adapter's own choice), unknown fields
(``KNOWN_FIELDS`` lists the SDK's; tests assert the adapter sends only those), a cap on
``n`` (``max_n`` sets one for a test; the adapter's 4 per call is its own choice), and
``image_url`` on a model that is not Kontext. Images are real JPEGs (PNGs when asked) of
the requested size.

Account-level failures (statuses from docs.together.ai/docs/error-codes; the wording is
the fake's own): ``account="spending_limit"`` answers 402, ``account="bad_key"`` 401; a
model in ``retired`` answers 404 ``model_not_found``. ``fail`` makes every call answer
that ``(status, message, code)``; ``short_by`` makes a call return fewer images than
asked; ``break_urls`` hands out result URLs that answer 404.
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
from fakes.files import stored_file
from fakes.state import reset_fake

KNOWN_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "width",
        "height",
        "n",
        "seed",
        "steps",
        "negative_prompt",
        "response_format",
        "output_format",
        "image_url",
        "guidance_scale",
        "guidance",
        "disable_safety_checker",
        "image_loras",
        "prompt_upsampling",
        "reference_images",
    }
)


@dataclass
class Call:
    auth: str | None
    body: dict[str, Any]


@dataclass
class FakeTogether:
    api_key: str = "together-test-key"
    max_n: int | None = None
    fail: tuple[int, str, str | None] | None = None
    retry_after: str | None = None
    short_by: int = 0
    break_urls: bool = False  # result URLs that answer 404
    account: str | None = None  # "spending_limit" | "bad_key"
    retired: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _files: dict[str, bytes] = field(default_factory=dict)

    def reset(self) -> None:
        reset_fake(self, "url")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._generations, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _file(self, request: Request) -> Response:
        return stored_file(self._files, request, "image/jpeg")

    async def _generations(self, request: Request) -> Response:
        auth = request.headers.get("authorization")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _error(400, "Request body must be JSON.", "invalid_request_error", None)
        body = await request.json()
        self.calls.append(Call(auth, body))
        if auth != f"Bearer {self.api_key}" or self.account == "bad_key":
            return _error(
                401, "Invalid API key provided.", "invalid_request_error", "invalid_api_key"
            )
        if self.account == "spending_limit":
            message = "Credit limit exceeded: your account has reached its spending limit."
            return _error(402, message, "invalid_request_error", None)
        if body.get("model") in self.retired:
            message = f"Unable to access model {body.get('model')}."
            return _error(404, message, "invalid_request_error", "model_not_found")
        if self.fail is not None:
            status, message, code = self.fail
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return _error(status, message, "invalid_request_error", code, headers)
        problem = _problem(body, self.max_n)
        if problem:
            return _error(400, problem, "invalid_request_error", None)
        fmt = "PNG" if body.get("output_format") == "png" else "JPEG"
        count = max(1, int(body.get("n", 1)) - self.short_by)
        data = []
        for index in range(count):
            image = _image(int(body["width"]), int(body["height"]), index, fmt)
            if body.get("response_format") == "url":
                name = f"img{len(self._files)}"
                if not self.break_urls:
                    self._files[name] = image
                data.append({"index": index, "url": f"{self.url}/files/{name}", "type": "url"})
            else:
                encoded = base64.b64encode(image).decode()
                data.append({"index": index, "b64_json": encoded, "type": "b64_json"})
        return JSONResponse(
            {"id": f"img-{len(self.calls)}", "model": body["model"], "object": "list", "data": data}
        )


def _problem(body: dict[str, Any], max_n: int | None) -> str | None:
    if not body.get("model") or not body.get("prompt"):
        return "model and prompt are required"
    n = body.get("n", 1)
    if not isinstance(n, int) or n < 1 or (max_n is not None and n > max_n):
        return f"n must be between 1 and {max_n}"
    for side in ("width", "height"):
        if not isinstance(body.get(side), int):
            return f"{side} must be an integer"
    if body.get("response_format") not in (None, "base64", "url"):
        return "response_format must be base64 or url"
    return None


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
        headers=headers,
    )


def _image(width: int, height: int, index: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30 * index % 255, 90, 160)).save(buffer, fmt)
    return buffer.getvalue()


@contextmanager
def serve_fake(fake: FakeTogether) -> Iterator[FakeTogether]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
