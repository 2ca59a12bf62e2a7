"""A loopback fake of fal.ai's model APIs (queue and synchronous), for the ``fal`` adapter.

Follows fal's documentation ("Asynchronous Inference" (queue), "Synchronous Requests",
"Model Errors" at fal.ai/docs) and its official Python client (fal-ai/fal:
``projects/fal_client/src/fal_client/client.py``: ``submit``/``run``, the request handle's
``status``/``get``/``cancel``, ``_raise_for_status``), plus the endpoints' input/output schemas
(fal.ai model API pages; the generated schemas in carlosdp/fal-rs ``src/endpoints/fal_ai``):

* ``Authorization: Key <key>``; a bad key is a 401 ``{"detail": ...}``.
* queue: ``POST {queue}/{model_id}`` -> ``{request_id, response_url, status_url, cancel_url,
  queue_position}`` with the request URLs under ``{queue}/{owner}/{alias}/requests/{id}``;
  ``GET .../status`` -> ``{"status": "IN_QUEUE", "queue_position"}`` (202), then
  ``IN_PROGRESS`` (202), then ``COMPLETED`` (200); ``GET .../{id}`` -> the output (or the
  model's error); ``PUT .../cancel`` -> 202 ``{"status": "CANCELLATION_REQUESTED"}``.
* sync: ``POST {run}/{model_id}`` -> the output.
* output ``{"images": [{"url", "width", "height", "content_type"}], "timings", "seed",
  "has_nsfw_concepts", "prompt"}``; images are real and served by the fake (as fal.media does).
* errors: 422 ``{"detail": [{"loc", "msg", "type", "url"?, "ctx"?}]}``; content checker
  rejections are ``type: content_policy_violation`` and, through the queue, arrive when the
  result is fetched (the request itself COMPLETES).
* the ``X-Fal-Error-Type`` header it sends with them is documented: "the response includes
  an ``error_type`` field and ``X-Fal-Error-Type`` header" (fal.ai/docs/documentation/
  serverless/reliability/retries, checked 2026-11-29). ``http_error`` may carry any headers,
  e.g. ``X-Fal-Retryable: true`` (named by issue 13; not found in the fal pages searched).
* requests must be JSON (``Content-Type: application/json``, as fal's client sends): any
  other body is a 422 (the fake's wording).

Re-audit 2026-11-30: the ``num_inference_steps`` cap of 1-12 is FLUX.1 [schnell]'s and
is now checked on that endpoint only (it was applied to every endpoint, rejecting the
[dev] endpoints' own default of 28 steps).

Prompts: ``forbidden...`` trips the content checker; ``nsfw...`` flags every image in
``has_nsfw_concepts`` (blacked out, as fal returns them); ``half-nsfw...`` flags the first.
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
from fakes.files import stored_file
from fakes.state import reset_fake

PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
KONTEXT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
# endpoint -> (size input, required file inputs)
ENDPOINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fal-ai/flux/schnell": ("image_size", ()),
    "fal-ai/flux-pro/v1.1": ("image_size", ()),
    "fal-ai/flux-pro/kontext": ("aspect_ratio", ("image_url",)),
    "fal-ai/flux-pro/kontext/text-to-image": ("aspect_ratio", ()),
    "fal-ai/flux/dev/image-to-image": ("input", ("image_url",)),
    "fal-ai/flux-lora/inpainting": ("image_size", ("image_url", "mask_url")),
}
CONTENT_POLICY = {
    "loc": ["body", "prompt"],
    "msg": "The content could not be processed because it contained material flagged by a "
    "content checker.",
    "type": "content_policy_violation",
    "url": "https://docs.fal.ai/errors#content_policy_violation",
}


@dataclass
class Call:
    method: str
    path: str
    auth: str | None
    body: dict[str, Any]


@dataclass
class FakeFal:
    key: str = "fal-fake"
    polls_in_queue: int = 1  # status polls answered IN_QUEUE, then as many IN_PROGRESS
    never_complete: bool = False
    http_error: tuple[int, Any, dict[str, str]] | None = None  # status, detail, headers
    image_too_large: bool = False
    foreign_output: bool = False
    calls: list[Call] = field(default_factory=list)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    url: str = ""

    def reset(self) -> None:
        reset_fake(self, "url")

    def app(self) -> Starlette:
        base = "/queue/{owner}/{alias}/requests/{rid}"
        return Starlette(
            routes=[
                Route(f"{base}/status", self._status, methods=["GET"]),
                Route(f"{base}/cancel", self._cancel, methods=["PUT"]),
                Route(base, self._result, methods=["GET"]),
                Route("/queue/{endpoint:path}", self._submit, methods=["POST"]),
                Route("/run/{endpoint:path}", self._run, methods=["POST"]),
                Route("/cdn/{name}", self._file, methods=["GET"]),
            ]
        )

    @property
    def submissions(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST"]

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return [c.body for c in self.submissions]

    # -- endpoints ----------------------------------------------------------------------

    async def _submit(self, request: Request) -> Response:
        accepted = await self._accepted(request)
        if isinstance(accepted, Response):
            return accepted
        endpoint, body = accepted
        owner, alias = endpoint.split("/")[:2]
        rid = str(uuid.uuid4())
        base = f"{self.url}/queue/{owner}/{alias}/requests/{rid}"
        self.requests[rid] = {"endpoint": endpoint, "input": body, "polls": 0}
        return JSONResponse(
            {
                "status": "IN_QUEUE",
                "request_id": rid,
                "response_url": base,
                "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel",
                "queue_position": 0,
            }
        )

    async def _accepted(self, request: Request) -> tuple[str, dict[str, Any]] | Response:
        """A queue submission's or a synchronous run's endpoint and input, or the refusal."""
        call = await self._record(request)
        if (denied := self._gate(call)) is not None:
            return denied
        endpoint = request.path_params["endpoint"]
        if (invalid := self._validate(endpoint, call.body)) is not None:
            return invalid
        return endpoint, call.body

    async def _queued(self, request: Request) -> dict[str, Any] | Response:
        """The queued request a status, result or cancel call names, or the refusal."""
        call = await self._record(request)
        if (denied := self._auth(call)) is not None:
            return denied
        entry = self.requests.get(request.path_params["rid"])
        if entry is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        return entry

    async def _status(self, request: Request) -> Response:
        entry = await self._queued(request)
        if isinstance(entry, Response):
            return entry
        entry["polls"] += 1
        polls = entry["polls"]
        response_url = str(request.url).removesuffix("/status")
        if self.never_complete or entry.get("cancelled") or polls <= self.polls_in_queue:
            body = {"status": "IN_QUEUE", "queue_position": 0, "response_url": response_url}
            return JSONResponse(body, status_code=202)
        if polls <= 2 * self.polls_in_queue:
            body = {"status": "IN_PROGRESS", "logs": None, "response_url": response_url}
            return JSONResponse(body, status_code=202)
        body = {
            "status": "COMPLETED",
            "logs": None,
            "metrics": {"inference_time": 0.1},
            "response_url": response_url,
        }
        return JSONResponse(body)

    async def _result(self, request: Request) -> Response:
        entry = await self._queued(request)
        if isinstance(entry, Response):
            return entry
        return self._output(entry["endpoint"], entry["input"])

    async def _cancel(self, request: Request) -> Response:
        entry = await self._queued(request)
        if isinstance(entry, Response):
            return entry
        entry["cancelled"] = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def _run(self, request: Request) -> Response:
        accepted = await self._accepted(request)
        if isinstance(accepted, Response):
            return accepted
        endpoint, body = accepted
        return self._output(endpoint, body)

    async def _file(self, request: Request) -> Response:
        return stored_file(self.files, request, "application/octet-stream")

    # -- behaviour ----------------------------------------------------------------------

    async def _record(self, request: Request) -> Call:
        if request.method == "POST" and not request.headers.get("content-type", "").startswith(
            "application/json"
        ):  # fal's client always sends JSON; anything else fails validation (wording ours)
            body: dict[str, Any] = {"_not_json": True}
        else:
            body = await request.json() if request.method == "POST" else {}
        call = Call(request.method, request.url.path, request.headers.get("authorization"), body)
        self.calls.append(call)
        return call

    def _auth(self, call: Call) -> Response | None:
        if call.auth != f"Key {self.key}":
            return JSONResponse({"detail": "Invalid key authorization header"}, status_code=401)
        return None

    def _gate(self, call: Call) -> Response | None:
        if (denied := self._auth(call)) is not None:
            return denied
        if call.body.get("_not_json"):
            return JSONResponse({"detail": "Expected a JSON body"}, status_code=422)
        if self.http_error is not None:
            status, detail, headers = self.http_error
            return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        return None

    def _validate(self, endpoint: str, body: dict[str, Any]) -> Response | None:
        spec = ENDPOINTS.get(endpoint)
        if spec is None:
            return JSONResponse({"detail": "Application not found"}, status_code=404)
        size_input, files = spec
        errors: list[dict[str, Any]] = []
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            errors.append(_error("prompt", "field required", "missing"))
        for name in files:
            if not str(body.get(name, "")).startswith(("data:image/", "http")):
                errors.append(_error(name, "field required", "missing"))
        if size_input == "image_size" and "image_size" in body:
            size = body["image_size"]
            preset = isinstance(size, str) and size in PRESETS
            if not (preset or (isinstance(size, dict) and set(size) == {"width", "height"})):
                errors.append(_error("image_size", "invalid image size", "value_error"))
        if size_input != "image_size" and "image_size" in body:
            errors.append(_error("image_size", "extra fields not permitted", "extra_forbidden"))
        if "aspect_ratio" in body and body["aspect_ratio"] not in KONTEXT_RATIOS:
            errors.append(_error("aspect_ratio", "unexpected value", "literal_error"))
        if (
            not isinstance(body.get("num_images", 1), int)
            or not 1 <= body.get("num_images", 1) <= 4
        ):
            errors.append(
                _error("num_images", "Input should be less than or equal to 4", "less_than_equal")
            )
        if body.get("output_format", "jpeg") not in ("jpeg", "png"):
            errors.append(
                _error("output_format", "Input should be 'jpeg' or 'png'", "literal_error")
            )
        # FLUX.1 [schnell]'s own range (1-12, its fal model page); the [dev] endpoints
        # take more (28 by default), so the cap is not applied to them.
        steps_cap = 12 if endpoint == "fal-ai/flux/schnell" else None
        steps = body.get("num_inference_steps", 4)
        if steps_cap is not None and not 1 <= steps <= steps_cap:
            errors.append(
                _error(
                    "num_inference_steps",
                    "Input should be less than or equal to 12",
                    "less_than_equal",
                )
            )
        if self.image_too_large and "image_url" in body:
            errors.append(
                _error(
                    "image_url",
                    "Image dimensions are too large. Maximum allowed: 1024x1024 pixels.",
                    "image_too_large",
                    ctx={"max_height": 1024, "max_width": 1024},
                )
            )
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        return None

    def _output(self, endpoint: str, body: dict[str, Any]) -> Response:
        prompt = str(body["prompt"])
        if prompt.startswith("forbidden"):
            return JSONResponse(
                {"detail": [CONTENT_POLICY]},
                status_code=422,
                headers={"X-Fal-Error-Type": "content_policy_violation"},
            )
        width, height = _output_size(ENDPOINTS[endpoint][0], body)
        fmt = body.get("output_format", "jpeg")
        images, flags = [], []
        for i in range(int(body.get("num_images", 1))):
            flagged = prompt.startswith("nsfw") or (prompt.startswith("half-nsfw") and i == 0)
            name = f"{uuid.uuid4().hex}.{'jpg' if fmt == 'jpeg' else 'png'}"
            self.files[name] = _image(width, height, fmt, 0 if flagged else 40 + 30 * i)
            host = "https://elsewhere.invalid" if self.foreign_output else self.url
            images.append(
                {
                    "url": f"{host}/cdn/{name}",
                    "width": width,
                    "height": height,
                    "content_type": f"image/{fmt}",
                }
            )
            flags.append(flagged)
        return JSONResponse(
            {
                "images": images,
                "timings": {"inference": 0.1},
                "seed": body.get("seed", 1234),
                "has_nsfw_concepts": flags,
                "prompt": prompt,
            }
        )


def _error(field_name: str, msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"loc": ["body", field_name], "msg": msg, "type": kind, **extra}


def _output_size(size_input: str, body: dict[str, Any]) -> tuple[int, int]:
    if size_input == "image_size":
        size = body.get("image_size", "landscape_4_3")
        return PRESETS[size] if isinstance(size, str) else (size["width"], size["height"])
    if (size_input == "aspect_ratio" and "aspect_ratio" in body) or "image_url" not in body:
        a, b = (int(x) for x in str(body.get("aspect_ratio", "1:1")).split(":"))
        return (round(1024 * math.sqrt(a / b) / 16) * 16, round(1024 * math.sqrt(b / a) / 16) * 16)
    with Image.open(io.BytesIO(decode_data_url(body["image_url"]))) as img:
        return img.size


def decode_data_url(url: str) -> bytes:
    assert url.startswith("data:"), url[:40]
    header, _, data = url.partition(",")
    assert header.endswith(";base64"), header
    return base64.b64decode(data)


def _image(width: int, height: int, fmt: str, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, shade, shade)).save(buffer, fmt.upper())
    return buffer.getvalue()


@contextmanager
def serve_fake(fake: FakeFal) -> Iterator[FakeFal]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
