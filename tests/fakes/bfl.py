"""A loopback fake of the Black Forest Labs API, for the ``bfl`` adapter.

Follows docs.bfl.ai (API reference pages "Generate an image with FLUX1.1 [pro]",
"FLUX.1 [dev]", "Edit or create an image with FLUX.1 Kontext [pro]", "Inpaint an image
with FLUX.1 Fill [pro] using an input image and mask", and "Errors") and the official
Python SDK black-forest-labs/blackforest (``src/bfl/_jobs.py`` status handling,
``src/bfl/_transport.py`` error bodies, ``src/bfl/_catalog.py`` paths,
``src/blackforest/types/inputs/generic.py`` and ``flux_pro_fill`` field rules):

* ``POST /v1/<model>`` with header ``x-key`` and a JSON body answers ``{id, polling_url,
  cost, input_mp, output_mp}``. FLUX1.1 [pro] / [dev] take ``width``/``height``
  (256..1440, multiples of 32); Kontext takes ``aspect_ratio`` ("W:H" between 21:9 and
  9:21) and base64 ``input_image`` .. ``input_image_4``; Fill takes base64 ``image`` and an
  optional black/white ``mask`` (white = inpaint) of the same dimensions.
* ``GET /v1/get_result?id=...`` (the ``polling_url``, same header) answers ``{id, status,
  result}``; ``status`` is ``Pending``, ``Ready`` (``result.sample`` is a signed URL on a
  separate delivery host), ``Request Moderated``, ``Content Moderated``, ``Error`` or
  ``Task not found``.
* Errors are FastAPI's ``{"detail": "..."}`` (422: a list of ``{loc, msg, type}``); a bad
  or missing key gets 403.

Knobs: ``outcome`` is the status after ``pending_polls`` Pending answers ("Pending" never
finishes); ``fail_status`` makes every submission fail; ``retry_after`` sets that header.
Images returned are real PNG/JPEG files of the size the model would produce.
"""

from __future__ import annotations

import base64
import io
import math
import uuid
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

SIZE_MODELS = ("flux-pro-1.1", "flux-dev", "flux-pro")
# FLUX.2 [pro]: width/height multiples of 16, at least 64 (official SDK
# black-forest-labs/blackforest src/blackforest/types/inputs/flux_pro_2.py, ec37e4f)
FLUX2_MODELS = ("flux-2-pro",)
KONTEXT_MODELS = ("flux-kontext-pro", "flux-kontext-max")
FILL_MODELS = ("flux-pro-1.0-fill",)


@dataclass
class Submission:
    model: str
    key: str | None
    body: dict[str, Any]


@dataclass
class _Task:
    model: str
    body: dict[str, Any]
    size: tuple[int, int]
    polls: int = 0


@dataclass
class FakeBFL:
    api_key: str = "bfl-fake"
    outcome: str = "Ready"
    pending_polls: int = 1
    fail_status: int | None = None
    retry_after: str | None = None
    polling_base: str | None = None  # answer with polling URLs on another host
    url: str = ""
    delivery_url: str = ""
    submissions: list[Submission] = field(default_factory=list)
    poll_keys: list[str | None] = field(default_factory=list)
    samples: dict[str, bytes] = field(default_factory=dict)
    _tasks: dict[str, _Task] = field(default_factory=dict)

    def reset(self) -> None:
        reset_fake(self, "api_key", "url", "delivery_url")  # the API and the delivery server

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/get_result", self._get_result, methods=["GET"]),
                Route("/v1/{model:path}", self._submit, methods=["POST"]),
            ]
        )

    def delivery_app(self) -> Starlette:
        """The signed-URL host (``delivery-*.bfl.ai`` in production)."""
        return Starlette(routes=[Route("/results/{name}", self._sample, methods=["GET"])])

    async def _submit(self, request: Request) -> Response:
        model = request.path_params["model"]
        key = request.headers.get("x-key")
        if not request.headers.get("content-type", "").startswith("application/json"):
            # BFL's API is FastAPI: a body that is not JSON fails validation (422)
            return JSONResponse({"detail": "Expected a JSON body"}, status_code=422)
        body = await request.json()
        self.submissions.append(Submission(model, key, body))
        if key != self.api_key:
            return JSONResponse({"detail": "Not authenticated"}, status_code=403)
        if self.fail_status is not None:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return JSONResponse(
                {"detail": f"Simulated failure {self.fail_status}"},
                status_code=self.fail_status,
                headers=headers,
            )
        if model in SIZE_MODELS:
            problem, size = _size_model(body)
        elif model in FLUX2_MODELS:
            problem, size = _flux2(body)
        elif model in KONTEXT_MODELS:
            problem, size = _kontext(body)
        elif model in FILL_MODELS:
            problem, size = _fill(body)
        else:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if problem is not None:
            return JSONResponse({"detail": [problem]}, status_code=422)
        if body.get("output_format", "jpeg") not in ("jpeg", "png"):
            return JSONResponse(
                {"detail": [_invalid("output_format", "Input should be 'jpeg' or 'png'")]},
                status_code=422,
            )
        task_id = str(uuid.uuid4())
        self._tasks[task_id] = _Task(model, body, size)
        return JSONResponse(
            {
                "id": task_id,
                "polling_url": f"{self.polling_base or self.url}/v1/get_result?id={task_id}",
                "cost": 4.0,
                "input_mp": 0,
                "output_mp": round(size[0] * size[1] / 1e6, 2),
            }
        )

    async def _get_result(self, request: Request) -> Response:
        key = request.headers.get("x-key")
        self.poll_keys.append(key)
        if key != self.api_key:
            return JSONResponse({"detail": "Not authenticated"}, status_code=403)
        task_id = request.query_params.get("id", "")
        task = self._tasks.get(task_id)
        if task is None or self.outcome == "Task not found":
            return JSONResponse({"id": task_id, "status": "Task not found"})
        task.polls += 1
        if self.outcome == "Pending" or task.polls <= self.pending_polls:
            return JSONResponse(
                {"id": task_id, "status": "Pending", "result": None, "progress": 0.5}
            )
        if self.outcome != "Ready":
            return JSONResponse({"id": task_id, "status": self.outcome, "result": None})
        fmt = task.body.get("output_format", "jpeg")
        name = f"{task_id}.{'png' if fmt == 'png' else 'jpg'}"
        self.samples[name] = _image(*task.size, fmt)
        delivery = self.delivery_url or self.url
        return JSONResponse(
            {
                "id": task_id,
                "status": "Ready",
                "result": {
                    "sample": f"{delivery}/results/{name}?se=2099-01-01&sig=fake",
                    "prompt": task.body.get("prompt"),
                    "seed": task.body.get("seed", 42),
                },
            }
        )

    async def _sample(self, request: Request) -> Response:
        data = self.samples.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        media = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        return Response(data, media_type=media)


def _invalid(name: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", name], "msg": msg, "type": "value_error"}


def _size_model(body: dict[str, Any]) -> tuple[dict[str, Any] | None, tuple[int, int]]:
    dims = []
    for name, default in (("width", 1024), ("height", 768)):
        value = body.get(name, default)
        if not isinstance(value, int) or not 256 <= value <= 1440 or value % 32:
            msg = "Input should be a multiple of 32 between 256 and 1440"
            return _invalid(name, msg), (0, 0)
        dims.append(value)
    if not body.get("prompt") and not body.get("image_prompt"):
        return _invalid("prompt", "Either prompt or image_prompt must be provided"), (0, 0)
    return None, (dims[0], dims[1])


def _flux2(body: dict[str, Any]) -> tuple[dict[str, Any] | None, tuple[int, int]]:
    dims = []
    for name in ("width", "height"):
        value = body.get(name, 1024)
        if not isinstance(value, int) or value < 64 or value % 16:
            return _invalid(name, "Input should be a multiple of 16, at least 64"), (0, 0)
        dims.append(value)
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return _invalid("prompt", "Field required"), (0, 0)
    return None, (dims[0], dims[1])


def _kontext(body: dict[str, Any]) -> tuple[dict[str, Any] | None, tuple[int, int]]:
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return _invalid("prompt", "Field required"), (0, 0)
    ratio = 1.0
    first = body.get("input_image")
    if first is not None:
        try:
            with Image.open(io.BytesIO(base64.b64decode(first, validate=True))) as img:
                ratio = img.width / img.height
        except Exception:
            return _invalid("input_image", "Invalid base64 image"), (0, 0)
    aspect = body.get("aspect_ratio")
    if aspect is not None:
        try:
            w, h = (int(p) for p in str(aspect).split(":"))
            ratio = w / h
        except ValueError:
            return _invalid("aspect_ratio", "Aspect ratio must be 'width:height'"), (0, 0)
        if not 9 / 21 <= ratio <= 21 / 9:
            return _invalid("aspect_ratio", "Aspect ratio must be between 21:9 and 9:21"), (0, 0)
    width = round(math.sqrt(1024 * 1024 * ratio) / 32) * 32
    height = round(math.sqrt(1024 * 1024 / ratio) / 32) * 32
    return None, (width, height)


def _fill(body: dict[str, Any]) -> tuple[dict[str, Any] | None, tuple[int, int]]:
    try:
        with Image.open(io.BytesIO(base64.b64decode(body.get("image", ""), validate=True))) as img:
            size = img.size
    except Exception:
        return _invalid("image", "A base64-encoded image is required"), (0, 0)
    mask = body.get("mask")
    if mask is not None:
        try:
            with Image.open(io.BytesIO(base64.b64decode(mask, validate=True))) as m:
                mask_size = m.size
        except Exception:
            return _invalid("mask", "Invalid base64 image"), (0, 0)
        if mask_size != size:
            return _invalid("mask", "Mask dimensions must match the image"), (0, 0)
    return None, size


def _image(width: int, height: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img = Image.new("RGB", (width, height), (90, 140, 210))
    img.save(buffer, "PNG" if fmt == "png" else "JPEG")
    return buffer.getvalue()


@contextmanager
def serve_fake(fake: FakeBFL) -> Iterator[FakeBFL]:
    """The API and a separate delivery host, both on loopback."""
    with serve_app(fake.app()) as api, serve_app(fake.delivery_app()) as delivery:
        fake.url, fake.delivery_url = api, delivery
        yield fake
