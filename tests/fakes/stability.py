"""A loopback fake of Stability AI's v2beta Stable Image API, for the ``stability`` adapter.

Pages it follows (every rule below names its source; checked 2026-11-30):

* [REF] Stability's API reference, https://platform.stability.ai/docs/api-reference
  ("Generate": Stable Image Ultra / Core, Stable Diffusion 3.5; "Edit": Inpaint), whose
  operations are generated from Stability's OpenAPI (a generated copy:
  https://glama.ai/mcp/servers/arwjcxkkhg/blob/main/src/stabilityAi/types.ts):
  ``POST /v2beta/stable-image/generate/{core,ultra,sd3}`` and ``/edit/inpaint``; required
  headers ``authorization`` (``Bearer <key>``) and ``content-type: multipart/form-data``;
  ``accept`` is ``image/*`` (the default: image bytes with ``finish-reason`` and ``seed``
  headers) or ``application/json`` (``{"image": <base64>, "finish_reason": "SUCCESS" |
  "CONTENT_FILTERED", "seed"}``). Fields: ``prompt`` (1-10000 characters), ``aspect_ratio``
  (16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21), ``output_format`` (sd3: png/jpeg; the others
  png/jpeg/webp), ``seed`` (0..4294967294), ``negative_prompt``, ``style_preset``; sd3
  adds ``model`` (an enum) and ``mode`` (image-to-image needs ``image`` and ``strength``);
  ultra takes ``image`` + ``strength``; inpaint needs ``image``, ``mask`` optional.
  Responses: 400 invalid parameters, errors as ``{"id", "name", "errors": ["<field>:
  <problem>"]}``; 403 flagged by content moderation (``name: content_moderation``); 413
  a request larger than 10 MiB; 422 well-formed but rejected; 429 more than 150 requests
  in 10 seconds; 500 internal error.
* [SIZES] output pixel sizes per aspect ratio as labelled in Stability's official ComfyUI
  nodes, https://github.com/Stability-AI/ComfyUI-SAI_API (``stability_api.py``).
* [CREDITS] an account out of credits is answered 402 ``name: payment_required``, "You
  lack sufficient credits to make this request. ..." (secondary: a captured response in
  https://github.com/Asadrammy/body-swap/blob/HEAD/STABILITY_AI_CREDITS_ISSUE.md); a bad
  key is 401 (secondary: https://prismix.dev/guides/stability-ai-not-working).

Not enforced, because no page says Stability rejects it: unknown form fields, and an
``image`` sent to Core (the adapter refuses Core edits itself).

Test triggers: a prompt starting with "forbidden" is refused 403 ``content_moderation``.
Knobs: ``fail_status``/``fail_name`` fail every call, ``retry_after`` sets that header,
``filter_output`` answers 200 with ``finish_reason: CONTENT_FILTERED`` (a blurred image),
``out_of_credits`` answers [CREDITS], ``retired`` removes sd3 model ids from the enum (a
400 naming ``model``, what [REF]'s enum validation answers for an id it no longer has).
"""

from __future__ import annotations

import base64
import io
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

MAX_REQUEST_BYTES = 10 * 1024 * 1024  # [REF] 413
ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
# [REF]'s ``model`` enum (as in the generated copy cited above; "sd3.5-flash", listed here
# before, was not found on any page read and was removed on the 2026-11-30 re-audit).
SD3_MODELS = (
    "sd3.5-large",
    "sd3.5-large-turbo",
    "sd3.5-medium",
    "sd3-large",
    "sd3-large-turbo",
    "sd3-medium",
)
# Output sizes per aspect ratio, as labelled in Stability's ComfyUI nodes.
_ONE_MP = {"1:1": (1024, 1024), "5:4": (1088, 896), "3:2": (1216, 832), "16:9": (1344, 768)}
_ONE_MP["21:9"] = (1536, 640)
_CORE = {"1:1": (1536, 1536), "5:4": (1632, 1344), "3:2": (1824, 1248), "16:9": (2016, 1152)}
_CORE["21:9"] = (2304, 960)
for _table in (_ONE_MP, _CORE):
    for _ratio, (_w, _h) in list(_table.items()):
        _a, _b = _ratio.split(":")
        _table[f"{_b}:{_a}"] = (_h, _w)
SIZES = {"core": _CORE, "ultra": _ONE_MP, "sd3": _ONE_MP}


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    fields: dict[str, str]
    files: dict[str, bytes]


@dataclass
class FakeStability:
    api_key: str = "sk-stability-fake"
    fail_status: int | None = None
    fail_name: str = "internal_error"
    retry_after: str | None = None
    filter_output: bool = False
    out_of_credits: bool = False
    retired: set[str] = field(default_factory=set)
    url: str = ""
    calls: list[Call] = field(default_factory=list)

    def reset(self) -> None:
        reset_fake(self, "api_key", "url")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2beta/stable-image/generate/{kind}", self._generate, methods=["POST"]),
                Route("/v2beta/stable-image/edit/inpaint", self._inpaint, methods=["POST"]),
            ]
        )

    async def _generate(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in SIZES:
            return _error(404, "not_found", [f"unknown endpoint generate/{kind}"])
        return await self._handle(request, kind)

    async def _inpaint(self, request: Request) -> Response:
        return await self._handle(request, "inpaint")

    async def _handle(self, request: Request, kind: str) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if int(headers.get("content-length") or 0) > MAX_REQUEST_BYTES:  # [REF] 413
            self.calls.append(Call(request.url.path, headers, {}, {}))
            return _error(413, "payload_too_large", ["Your request was larger than 10MiB."])
        fields, files = await _form(request)
        self.calls.append(Call(request.url.path, headers, fields, files))
        if headers.get("authorization") != f"Bearer {self.api_key}":  # [CREDITS] 401
            return _error(401, "unauthorized", ["authorization: invalid or missing"])
        if self.fail_status is not None:
            extra = {"Retry-After": self.retry_after} if self.retry_after else None
            return _error(self.fail_status, self.fail_name, ["simulated failure"], extra)
        if self.out_of_credits:  # [CREDITS] 402
            return _error(
                402,
                "payment_required",
                [
                    "You lack sufficient credits to make this request. Please purchase more "
                    "credits at https://platform.stability.ai/account/credits and try again."
                ],
            )
        accept = headers.get("accept") or "image/*"  # [REF]: image/* is the default
        problems = _check(kind, fields, files, headers, self.retired)
        if problems:
            return _error(400, "bad_request", problems)
        if fields["prompt"].startswith("forbidden"):
            return _error(
                403,
                "content_moderation",
                ["Your request was flagged by our content moderation system."],
            )
        size = _output_size(kind, fields, files)
        fmt = fields.get("output_format", "png")
        data = _image(*size, fmt)
        reason = "CONTENT_FILTERED" if self.filter_output else "SUCCESS"
        seed = int(fields.get("seed") or 1234)
        if accept.startswith("image/"):
            return Response(
                data,
                media_type=f"image/{fmt}",
                headers={"finish-reason": reason, "seed": str(seed)},
            )
        return JSONResponse(
            {"image": base64.b64encode(data).decode(), "finish_reason": reason, "seed": seed}
        )


def _check(
    kind: str,
    fields: dict[str, str],
    files: dict[str, bytes],
    headers: dict[str, str],
    retired: set[str],
) -> list[str]:
    """[REF]'s parameter rules, as ``"<field>: <problem>"`` lines."""
    problems = []
    if not headers.get("content-type", "").startswith("multipart/form-data"):
        problems.append("content-type: must be multipart/form-data")
    if (headers.get("accept") or "image/*") not in ("application/json", "image/*"):
        problems.append("accept: must be image/* or application/json")
    if not 1 <= len(fields.get("prompt", "")) <= 10000:
        problems.append("prompt: is required and at most 10000 characters")
    if "aspect_ratio" in fields and fields["aspect_ratio"] not in ASPECT_RATIOS:
        problems.append(f"aspect_ratio: must be one of {', '.join(ASPECT_RATIOS)}")
    formats = ("png", "jpeg") if kind == "sd3" else ("png", "jpeg", "webp")
    if fields.get("output_format", "png") not in formats:
        problems.append(f"output_format: must be one of {', '.join(formats)}")
    if "seed" in fields and not 0 <= int(fields["seed"]) <= 4294967294:
        problems.append("seed: must be between 0 and 4294967294")
    image_to_image = "image" in files and kind in ("ultra", "sd3")
    if kind == "sd3":
        models = [m for m in SD3_MODELS if m not in retired]
        if fields.get("model", "sd3.5-large") not in models:
            problems.append(f"model: must be one of {', '.join(models)}")
        mode = fields.get("mode", "text-to-image")
        if mode not in ("text-to-image", "image-to-image"):
            problems.append("mode: must be text-to-image or image-to-image")
        if mode == "image-to-image" and "image" not in files:
            problems.append("image: is required for image-to-image")
        image_to_image = mode == "image-to-image"
    if image_to_image and not 0 <= float(fields.get("strength", "-1")) <= 1:
        problems.append("strength: is required with image, between 0 and 1")
    if kind == "inpaint" and "image" not in files:
        problems.append("image: is required")
    for name in ("image", "mask"):
        if name in files and not _readable(files[name]):
            problems.append(f"{name}: is not a valid image")
    return problems


def _output_size(kind: str, fields: dict[str, str], files: dict[str, bytes]) -> tuple[int, int]:
    if "image" in files:
        with Image.open(io.BytesIO(files["image"])) as img:
            width, height = img.size
        if kind == "inpaint":
            return width, height
        ratio = width / height  # image-to-image keeps the input's aspect ratio
        return round((1024 * 1024 * ratio) ** 0.5 / 64) * 64, round(
            (1024 * 1024 / ratio) ** 0.5 / 64
        ) * 64
    return SIZES[kind][fields.get("aspect_ratio", "1:1")]


def _readable(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return True
    except Exception:
        return False


async def _form(request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return fields, files
    form = await request.form()
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields[key] = value
        else:
            files[key] = await value.read()
    return fields, files


def _error(
    status: int, name: str, errors: list[str], headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"id": uuid.uuid4().hex, "name": name, "errors": errors}
    return JSONResponse(body, status_code=status, headers=headers)


def _image(width: int, height: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 160, 90)).save(buffer, fmt.upper())
    return buffer.getvalue()


@contextmanager
def serve_fake(fake: FakeStability) -> Iterator[FakeStability]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
