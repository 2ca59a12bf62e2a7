"""A loopback fake of Replicate's predictions API, for the ``replicate`` adapter.

Follows Replicate's HTTP API reference (``models.predictions.create``, ``predictions.create``,
``predictions.get``, ``predictions.cancel``), the guide
replicate.com/docs/topics/predictions/create-a-prediction (``Prefer: wait`` / ``wait=N``,
unfinished predictions returned ``starting``/``processing`` and polled at ``urls.get``), the
official client replicate/replicate-python (``replicate/prediction.py``, ``replicate/run.py``,
``replicate/exceptions.py``: RFC 7807 ``{"type", "title", "status", "detail"}`` errors), and
the models' API pages on replicate.com for their inputs and outputs:

* ``black-forest-labs/flux-schnell``: ``aspect_ratio`` enum, ``num_outputs`` 1-4,
  ``output_format`` webp/jpg/png; output is a list of URLs.
* ``black-forest-labs/flux-1.1-pro``: ``aspect_ratio`` (with ``custom`` + ``width``/``height``,
  256-1440, multiples of 32); output is one URL.
* ``black-forest-labs/flux-kontext-pro``: ``input_image``, ``aspect_ratio`` incl.
  ``match_input_image``, ``output_format`` jpg/png; output is one URL.
* ``black-forest-labs/flux-fill-pro``: ``image`` and ``mask`` (white = inpaint); output is one
  URL the size of the image.

Prompts starting with ``nsfw`` make the prediction fail with the FLUX safety checker's error,
as Replicate reports it. Output files are served by the fake itself (``/delivery/...``), as
replicate.delivery serves them for real; they are real images of the size the input implies.
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

RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
MODELS: dict[str, dict[str, Any]] = {
    "black-forest-labs/flux-schnell": {
        "ratios": RATIOS,
        "formats": ("webp", "jpg", "png"),
        "inputs": {
            "prompt",
            "aspect_ratio",
            "num_outputs",
            "seed",
            "output_format",
            "output_quality",
            "disable_safety_checker",
            "go_fast",
            "megapixels",
            "num_inference_steps",
        },
        "list_output": True,
    },
    "black-forest-labs/flux-1.1-pro": {
        "ratios": ("custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"),
        "formats": ("webp", "jpg", "png"),
        "inputs": {
            "prompt",
            "aspect_ratio",
            "width",
            "height",
            "seed",
            "output_format",
            "output_quality",
            "safety_tolerance",
            "prompt_upsampling",
            "image_prompt",
        },
    },
    "black-forest-labs/flux-kontext-pro": {
        "ratios": ("match_input_image", *RATIOS, "2:1", "1:2"),
        "formats": ("jpg", "png"),
        "inputs": {
            "prompt",
            "input_image",
            "aspect_ratio",
            "seed",
            "output_format",
            "safety_tolerance",
            "prompt_upsampling",
        },
    },
    "black-forest-labs/flux-fill-pro": {
        "ratios": (),
        "formats": ("jpg", "png"),
        "inputs": {
            "prompt",
            "image",
            "mask",
            "seed",
            "output_format",
            "safety_tolerance",
            "prompt_upsampling",
            "steps",
            "guidance",
        },
    },
}
VERSIONED = (
    "black-forest-labs/flux-schnell:"
    "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e"
)
NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."


@dataclass
class Call:
    method: str
    path: str
    auth: str | None
    prefer: str | None
    body: dict[str, Any]


@dataclass
class FakeReplicate:
    token: str = "r8_fake"
    polls_before_done: int = 0  # GETs answered "processing" before the outcome
    outcome: str = "succeeded"  # succeeded | failed | canceled | never
    fail_error: str = "CUDA out of memory"
    http_error: tuple[int, str, dict[str, str]] | None = None  # status, detail, headers
    foreign_output: bool = False  # answer with a URL on another host
    calls: list[Call] = field(default_factory=list)
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    url: str = ""

    def reset(self) -> None:
        reset_fake(self, "url")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(
                    "/v1/models/{owner}/{name}/predictions", self._create_official, methods=["POST"]
                ),
                Route("/v1/predictions", self._create_versioned, methods=["POST"]),
                Route("/v1/predictions/{pid}", self._get, methods=["GET"]),
                Route("/v1/predictions/{pid}/cancel", self._cancel, methods=["POST"]),
                Route("/delivery/{name}", self._file, methods=["GET"]),
            ]
        )

    @property
    def creations(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and not c.path.endswith("/cancel")]

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return [c.body.get("input", {}) for c in self.creations]

    # -- endpoints ----------------------------------------------------------------------

    async def _create_official(self, request: Request) -> Response:
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        return await self._create(request, model, versioned=False)

    async def _create_versioned(self, request: Request) -> Response:
        return await self._create(request, "", versioned=True)

    async def _create(self, request: Request, model: str, *, versioned: bool) -> Response:
        if not request.headers.get("content-type", "").startswith("application/json"):
            # the HTTP API takes JSON only (replicate.com/docs/reference/http); wording ours
            return _problem(415, "Content-Type must be application/json")
        body = await request.json()
        call = Call(
            "POST",
            request.url.path,
            request.headers.get("authorization"),
            request.headers.get("prefer"),
            body,
        )
        self.calls.append(call)
        if (denied := self._auth(call)) is not None:
            return denied
        if self.http_error is not None:
            status, detail, headers = self.http_error
            return _problem(status, detail, headers)
        if versioned:
            version = body.get("version")
            if version != VERSIONED:
                return _problem(422, f"Invalid version or not permitted: {version}")
            model = version.split(":", 1)[0]
        spec = MODELS.get(model)
        if spec is None:
            return _problem(404, "The requested resource could not be found.")
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return _problem(422, "input is required")
        if (invalid := _validate(spec, inputs)) is not None:
            return _problem(422, invalid)
        pid = uuid.uuid4().hex[:26]
        prediction: dict[str, Any] = {
            "id": pid,
            "model": model,
            "version": "hidden",
            "input": inputs,
            "logs": "",
            "output": None,
            "error": None,
            "status": "starting",
            "created_at": "2026-11-01T00:00:00Z",
            "urls": {
                "get": f"{self.url}/v1/predictions/{pid}",
                "cancel": f"{self.url}/v1/predictions/{pid}/cancel",
                "web": f"https://replicate.com/p/{pid}",
            },
            "_polls": 0,
            "_spec": spec,
        }
        self.predictions[pid] = prediction
        prefer = call.prefer or ""
        if prefer.startswith("wait") and self.polls_before_done == 0:
            self._finish(prediction)
        elif prefer.startswith("wait"):
            prediction["status"] = "processing"
        headers = {"Location": prediction["urls"]["get"]}
        return JSONResponse(_public(prediction), status_code=201, headers=headers)

    def _named(self, request: Request, method: str) -> dict[str, Any] | Response:
        """The prediction a get or cancel call names (the call recorded), or the refusal."""
        call = Call(method, request.url.path, request.headers.get("authorization"), None, {})
        self.calls.append(call)
        if (denied := self._auth(call)) is not None:
            return denied
        prediction = self.predictions.get(request.path_params["pid"])
        if prediction is None:
            return _problem(404, "The requested resource could not be found.")
        return prediction

    async def _get(self, request: Request) -> Response:
        prediction = self._named(request, "GET")
        if isinstance(prediction, Response):
            return prediction
        if prediction["status"] not in ("succeeded", "failed", "canceled"):
            prediction["_polls"] += 1
            if self.outcome != "never" and prediction["_polls"] > self.polls_before_done:
                self._finish(prediction)
            else:
                prediction["status"] = "processing"
        return JSONResponse(_public(prediction))

    async def _cancel(self, request: Request) -> Response:
        prediction = self._named(request, "POST")
        if isinstance(prediction, Response):
            return prediction
        prediction["status"] = "canceled"
        return JSONResponse(_public(prediction))

    async def _file(self, request: Request) -> Response:
        return stored_file(self.files, request, "application/octet-stream")

    # -- behaviour ----------------------------------------------------------------------

    def _auth(self, call: Call) -> Response | None:
        if call.auth != f"Bearer {self.token}":
            return _problem(401, "You did not pass a valid authentication token")
        return None

    def _finish(self, prediction: dict[str, Any]) -> None:
        inputs = prediction["input"]
        if str(inputs.get("prompt", "")).startswith("nsfw"):
            prediction.update(status="failed", error=NSFW_ERROR)
            return
        if self.outcome in ("failed", "canceled"):
            error = self.fail_error if self.outcome == "failed" else None
            prediction.update(status=self.outcome, error=error)
            return
        spec = prediction["_spec"]
        width, height = _output_size(inputs)
        fmt = inputs.get("output_format", spec["formats"][0])
        urls = []
        for i in range(int(inputs.get("num_outputs", 1))):
            name = f"{prediction['id']}_{i}.{fmt}"
            self.files[name] = _image(width, height, fmt, i)
            host = "http://elsewhere.invalid" if self.foreign_output else self.url
            urls.append(f"{host}/delivery/{name}")
        output: Any = urls if spec.get("list_output") else urls[0]
        prediction.update(status="succeeded", output=output, metrics={"predict_time": 0.1})


def _validate(spec: dict[str, Any], inputs: dict[str, Any]) -> str | None:
    unknown = set(inputs) - spec["inputs"]
    if unknown:
        return f"input: Additional property {sorted(unknown)[0]} is not allowed"
    if not isinstance(inputs.get("prompt"), str) or not inputs["prompt"]:
        return "input: prompt is required"
    ratio = inputs.get("aspect_ratio")
    if ratio is not None and ratio not in spec["ratios"]:
        return f"input.aspect_ratio: aspect_ratio must be one of the following: {spec['ratios']}"
    if inputs.get("output_format", spec["formats"][0]) not in spec["formats"]:
        return f"input.output_format: output_format must be one of {spec['formats']}"
    n = inputs.get("num_outputs", 1)
    if not isinstance(n, int) or not 1 <= n <= 4:
        return "input.num_outputs: Must be less than or equal to 4"
    if ratio == "custom":
        for side in ("width", "height"):
            value = inputs.get(side)
            if not isinstance(value, int) or not 256 <= value <= 1440:
                return f"input.{side}: Must be between 256 and 1440"
    for name in ("input_image", "image", "mask"):
        value = inputs.get(name)
        if value is not None and not str(value).startswith(("data:image/", "http")):
            return f"input.{name}: Does not match format 'uri'"
    if "image" in spec["inputs"] and "image" not in inputs:
        return "input: image is required"
    return None


def _output_size(inputs: dict[str, Any]) -> tuple[int, int]:
    ratio = inputs.get("aspect_ratio", "1:1")
    source = inputs.get("input_image") or inputs.get("image")
    if source and (ratio == "match_input_image" or "image" in inputs):
        with Image.open(io.BytesIO(decode_data_url(source))) as img:
            return img.size
    if ratio == "custom":
        return int(inputs["width"]), int(inputs["height"])
    if ratio == "match_input_image":
        ratio = "1:1"
    a, b = (int(x) for x in ratio.split(":"))
    width = round(1024 * math.sqrt(a / b) / 16) * 16
    height = round(1024 * math.sqrt(b / a) / 16) * 16
    return width, height


def decode_data_url(url: str) -> bytes:
    assert url.startswith("data:"), url[:40]
    header, _, data = url.partition(",")
    assert header.endswith(";base64"), header
    return base64.b64decode(data)


def _public(prediction: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prediction.items() if not k.startswith("_")}


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    titles = {
        401: "Unauthenticated",
        404: "Not found",
        422: "Input validation failed",
        429: "Request was throttled",
        500: "Internal server error",
    }
    body = {
        "type": "https://replicate.com/docs/reference/http#errors",
        "title": titles.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


def _image(width: int, height: int, fmt: str, index: int) -> bytes:
    buffer = io.BytesIO()
    pil = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    Image.new("RGB", (width, height), (30 * index % 255, 90, 160)).save(buffer, pil)
    return buffer.getvalue()


@contextmanager
def serve_fake(fake: FakeReplicate) -> Iterator[FakeReplicate]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
