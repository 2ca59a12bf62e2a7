"""A loopback fake of OpenAI's Images API, for the ``openai_compatible`` adapter.

Follows the OpenAI API reference, "Images" (platform.openai.com/docs/api-reference/images):
``POST /v1/images/generations`` (JSON), ``/v1/images/edits`` and ``/v1/images/variations``
(multipart/form-data; several edit inputs as repeated ``image[]`` parts), ``Authorization:
Bearer <key>``; a success is ``{"created", "data": [{"b64_json" | "url",
"revised_prompt"?}], "usage"?}``; failures are ``{"error": {"message", "type", "param",
"code"}}`` with the HTTP status. Images it returns are real PNGs of the requested size.

``fail_status`` makes every call fail with that status (the failover tests);
``account`` fails every call with an account-level error as OpenAI words it
(``billing_hard_limit_reached``: 400; ``insufficient_quota``: 429, type
``insufficient_quota``; developers.openai.com/api/docs/guides/error-codes, checked
2026-11-29); a model in ``retired`` answers 404 ``model_not_found``, as OpenAI does for a
shut-down model (developers.openai.com/api/docs/deprecations);
``response_format='url'`` returns URLs served by the fake itself, as dall-e models do.

``stream: true`` answers ``text/event-stream`` as OpenAI documents image streaming
(openai-python ``types/image_gen_partial_image_event.py``, ``image_gen_completed_event.py``,
``image_edit_partial_image_event.py``, ``image_edit_completed_event.py``): ``partial_images``
``<prefix>.partial_image`` events, then one ``<prefix>.completed`` with ``usage``, where the
prefix is ``image_generation`` or ``image_edit``; each is ``event: <type>`` plus one
``data: <json>`` line. ``stream_delay_s`` waits before every event after the first,
``stream_drop_after`` drops the connection after that many events, and
``streams_started`` / ``streams_completed`` / ``streams_cancelled`` count what happened
(cancelled: the client went away mid-stream).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fakes.asgi import serve_app
from fakes.files import stored_file


@dataclass
class Call:
    path: str
    auth: str | None
    fields: dict[str, Any]
    files: dict[str, list[bytes]]


@dataclass
class FakeOpenAI:
    api_key: str = "sk-fake"
    fail_status: int | None = None
    fail_first: int = 0  # fail only the first N calls (with fail_status)
    account: str | None = None  # "billing_hard_limit_reached" | "insufficient_quota"
    retired: set[str] = field(default_factory=set)
    dead_urls: bool = False  # answer URLs that 404 (an expired or broken result link)
    retry_after: str | None = None  # Retry-After header sent with failures
    delay_s: float = 0.0
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    stream_delay_s: float = 0.0
    stream_drop_after: int | None = None
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    _png_store: dict[str, bytes] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/images/generations", self._generations, methods=["POST"]),
                Route("/v1/images/edits", self._edits, methods=["POST"]),
                Route("/v1/images/variations", self._variations, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _generations(self, request: Request) -> Response:
        body = await request.json()
        response = self._answer(request, "/v1/images/generations", body, {})
        if self.delay_s:  # the call is recorded before the delay
            await asyncio.sleep(self.delay_s)
        return response

    async def _edits(self, request: Request) -> Response:
        fields, files = await _form(request)
        return self._answer(request, "/v1/images/edits", fields, files)

    async def _variations(self, request: Request) -> Response:
        fields, files = await _form(request)
        return self._answer(request, "/v1/images/variations", fields, files)

    async def _file(self, request: Request) -> Response:
        return stored_file(self._png_store, request, "image/png")

    def _answer(
        self, request: Request, path: str, fields: dict[str, Any], files: dict[str, list[bytes]]
    ) -> Response:
        auth = request.headers.get("authorization")
        self.calls.append(Call(path, auth, fields, files))
        if auth != f"Bearer {self.api_key}":
            return _error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        if fields.get("model") in self.retired:
            return _error(
                404,
                f"The model `{fields.get('model')}` does not exist or you do not have access "
                "to it.",
                "invalid_request_error",
                "model_not_found",
            )
        if self.account == "billing_hard_limit_reached":
            return _error(
                400, "Billing hard limit has been reached", "invalid_request_error", self.account
            )
        if self.account == "insufficient_quota":
            message = "You exceeded your current quota, please check your plan and billing details."
            return _error(429, message, "insufficient_quota", self.account)
        failing = self.fail_status is not None and (
            not self.fail_first or len(self.calls) <= self.fail_first
        )
        if failing:
            response = _error(
                self.fail_status or 500,
                "The server had an error processing your request.",
                "server_error",
                None,
            )
            if self.retry_after is not None:
                response.headers["Retry-After"] = self.retry_after
            return response
        if str(fields.get("prompt", "")).startswith("forbidden"):
            return _error(
                400,
                "Your request was rejected by the safety system.",
                "invalid_request_error",
                "content_policy_violation",
            )
        size = str(fields.get("size") or "1024x1024")
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        if str(fields.get("stream", "")).lower() == "true":
            return self._stream(path, fields, width, height)
        data = []
        for i in range(int(fields.get("n") or 1)):
            png = _png(width, height, i)
            if fields.get("response_format") == "url":
                name = f"img{len(self._png_store)}.png"
                if not self.dead_urls:
                    self._png_store[name] = png
                data.append({"url": f"{self.url}/files/{name}"})
            else:
                data.append(
                    {
                        "b64_json": base64.b64encode(png).decode(),
                        "revised_prompt": f"revised: {fields.get('prompt')}",
                    }
                )
        body = {
            "created": int(time.time()),
            "data": data,
            "usage": {
                "input_tokens": 10,
                "output_tokens": 20,
                "total_tokens": 30,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
            },
        }
        return JSONResponse(body)

    def _stream(self, path: str, fields: dict[str, Any], width: int, height: int) -> Response:
        prefix = "image_edit" if path.endswith("/edits") else "image_generation"
        common = {
            "size": f"{width}x{height}",
            "quality": fields.get("quality") or "high",
            "background": fields.get("background") or "opaque",
            "output_format": fields.get("output_format") or "png",
        }
        events: list[dict[str, Any]] = [
            {
                "type": f"{prefix}.partial_image",
                "b64_json": base64.b64encode(_png(width, height, 3 + k)).decode(),
                "created_at": int(time.time()),
                "partial_image_index": k,
                **common,
            }
            for k in range(int(fields.get("partial_images") or 0))
        ]
        events.append(
            {
                "type": f"{prefix}.completed",
                "b64_json": base64.b64encode(_png(width, height, 0)).decode(),
                "created_at": int(time.time()),
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 20,
                    "total_tokens": 30,
                    "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                },
                **common,
            }
        )

        async def body() -> Any:
            self.streams_started += 1
            outcome = "cancelled"
            try:
                for sent, event in enumerate(events):
                    if sent and self.stream_delay_s:
                        await asyncio.sleep(self.stream_delay_s)
                    if self.stream_drop_after is not None and sent >= self.stream_drop_after:
                        outcome = "dropped"
                        raise ConnectionAbortedError("fake: dropping the stream")
                    data = json.dumps(event)
                    yield f"event: {event['type']}\ndata: {data}\n\n".encode()
                outcome = "completed"
            finally:
                if outcome == "completed":
                    self.streams_completed += 1
                elif outcome == "cancelled":
                    self.streams_cancelled += 1

        return StreamingResponse(body(), media_type="text/event-stream")


async def _form(request: Request) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    form = await request.form()
    fields: dict[str, Any] = {}
    files: dict[str, list[bytes]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields[key] = value
        else:
            files.setdefault(key, []).append(await value.read())
    return fields, files


def _error(status: int, message: str, kind: str, code: str | None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
    )


def _png(width: int, height: int, index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40 * index % 255, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@contextmanager
def serve_fake(fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """Run ``fake`` on a free loopback port in a background thread."""
    with serve_app(fake.app()) as url:
        fake.url = url
        yield fake
