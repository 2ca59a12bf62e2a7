"""``stream: true`` through a gateway process, read with the official openai SDK."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from books import assert_books_balance, gateway_database
from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway
from imagegate.core.errors import UpstreamError
from imagegate.core.types import ImageResult, PartialImage
from imagegate.providers.openai.stream import image_stream_events
from imagegate.providers.openai.wire import _usage

CONFIG = """
providers:
  - {{id: oa, type: openai, base_url: "{good}/v1", api_key: sk-fake}}
  - {{id: oa-down, type: openai, base_url: "{down}/v1", api_key: sk-fake}}
  - {{id: oa-slow, type: openai, base_url: "{slow}/v1", api_key: sk-fake}}
  - {{id: oa-drop, type: openai, base_url: "{drop}/v1", api_key: sk-fake}}
models:
  - id: test/stream
    operations: [generate, edit]
    sizes: [256x256]
    endpoints:
      - {{provider: oa, upstream_model: gpt-image-2, pricing: {{per_image: 0.04}}}}
  - id: test/stream-dalle
    sizes: [256x256]
    endpoints:
      - {{provider: oa, upstream_model: dall-e-2, pricing: {{per_image: 0.02}}}}
  - id: test/stream-failover
    operations: [generate, edit]
    sizes: [256x256]
    endpoints:
      - {{provider: oa-down, upstream_model: gpt-image-2, pricing: {{per_image: 0.04}}}}
      - {{provider: oa, upstream_model: gpt-image-2, pricing: {{per_image: 0.04}}}}
  - id: test/stream-down
    sizes: [256x256]
    endpoints:
      - {{provider: oa-down, upstream_model: gpt-image-2, pricing: {{per_image: 0.04}}}}
  - id: test/stream-slow
    sizes: [256x256]
    endpoints:
      - {{provider: oa-slow, upstream_model: gpt-image-2, pricing: {{per_image: 0.04}}}}
  - id: test/stream-drop
    sizes: [256x256]
    endpoints:
      - {{provider: oa-drop, upstream_model: gpt-image-2, pricing: {{per_image: 0.04}}}}
"""


@dataclass
class Env:
    gateway: RunningGateway
    good: FakeOpenAI
    down: FakeOpenAI
    slow: FakeOpenAI
    drop: FakeOpenAI

    def client(self) -> OpenAI:
        return OpenAI(base_url=self.gateway.v1, api_key=self.gateway.admin_key, max_retries=0)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.gateway.admin_key}"}
        return httpx.post(f"{self.gateway.v1}{path}", headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("stream")
    with (
        serve_fake(FakeOpenAI()) as good,
        serve_fake(FakeOpenAI(fail_status=500)) as down,
        serve_fake(FakeOpenAI(stream_delay_s=120)) as slow,
        serve_fake(FakeOpenAI(stream_drop_after=1)) as drop,
    ):
        config = CONFIG.format(good=good.url, down=down.url, slow=slow.url, drop=drop.url)
        with run_gateway(tmp, config) as gateway:
            yield Env(gateway, good, down, slow, drop)


def png(width: int, height: int, colour: tuple[int, int, int] = (30, 90, 160)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def decoded(b64_json: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


# -- sandbox: progressive renders ---------------------------------------------------------


def test_sandbox_generation_streams_partials_then_the_same_final_image(env: Env) -> None:
    client = env.client()
    params: dict[str, Any] = {
        "model": "imagegate/sandbox",
        "prompt": "a lighthouse at dusk",
        "size": "320x192",
        "extra_body": {"seed": 5},
    }
    events = list(client.images.generate(**params, stream=True, partial_images=2))

    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partials, completed = events[:2], events[2]
    assert [p.partial_image_index for p in partials] == [0, 1]
    images = [decoded(e.b64_json) for e in events]
    assert all(img.size == (320, 192) and img.format == "PNG" for img in images)
    assert completed.size == "320x192" and completed.output_format == "png"
    assert completed.usage is not None
    # The previews are real renders that get sharper, not copies of the final image.
    final = images[2].convert("RGB")
    assert len({e.b64_json for e in events}) == 3
    assert _distance(images[0], final) > _distance(images[1], final) > 0
    # The completed image is the deterministic sandbox render a normal request returns.
    unstreamed = client.images.generate(**params)
    assert unstreamed.data[0].b64_json == completed.b64_json


def test_sandbox_edit_streams_image_edit_events_of_the_input_size(env: Env) -> None:
    client = env.client()
    source = png(96, 64)
    params: dict[str, Any] = {"model": "imagegate/sandbox", "prompt": "add a hat"}
    events = list(
        client.images.edit(
            image=("in.png", source, "image/png"), **params, stream=True, partial_images=1
        )
    )

    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert all(decoded(e.b64_json).size == (96, 64) for e in events)
    unstreamed = client.images.edit(image=("in.png", source, "image/png"), **params)
    assert unstreamed.data[0].b64_json == events[-1].b64_json
    assert events[0].b64_json != events[-1].b64_json


def test_output_format_applies_to_partials_and_zero_partials_sends_only_the_result(
    env: Env,
) -> None:
    client = env.client()
    webp = list(
        client.images.generate(
            model="sandbox",
            prompt="fox",
            size="128x128",
            output_format="webp",
            stream=True,
            partial_images=1,
        )
    )
    assert [decoded(e.b64_json).format for e in webp] == ["WEBP", "WEBP"]
    assert all(e.output_format == "webp" for e in webp)

    only = list(
        client.images.generate(
            model="sandbox", prompt="fox", size="128x128", stream=True, partial_images=0
        )
    )
    assert [e.type for e in only] == ["image_generation.completed"]


def test_wire_format_is_event_and_data_lines_per_event(env: Env) -> None:
    body = {
        "model": "sandbox",
        "prompt": "wire",
        "size": "64x64",
        "stream": True,
        "partial_images": 1,
        "usage": True,
    }
    response = env.post("/images/generations", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-imagegate-provider"] == "sandbox"
    blocks = [b for b in response.text.split("\n\n") if b]
    assert len(blocks) == 2
    parsed = []
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = httpx.Response(200, content=data_line.removeprefix("data: ")).json()
        assert data["type"] == event_line.removeprefix("event: ")
        parsed.append(data)
    assert set(parsed[0]) == {
        "type",
        "b64_json",
        "created_at",
        "size",
        "quality",
        "background",
        "output_format",
        "partial_image_index",
    }
    completed = parsed[1]
    assert completed["usage"]["images"] == 1 and completed["usage"]["cost_usd"] == 0
    assert {"input_tokens", "output_tokens", "total_tokens"} <= set(completed["usage"])


# -- OpenAI passthrough ---------------------------------------------------------------------


def test_openai_stream_passes_through_partials_and_usage(env: Env) -> None:
    before = len(env.good.calls)
    events = list(
        env.client().images.generate(
            model="test/stream",
            prompt="a red fox",
            size="256x256",
            quality="low",
            stream=True,
            partial_images=2,
        )
    )
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    call = env.good.calls[before]
    assert call.path == "/v1/images/generations"
    assert call.fields["stream"] is True and call.fields["partial_images"] == 2
    completed = events[-1]
    assert completed.usage.input_tokens == 10 and completed.usage.total_tokens == 30  # type: ignore[union-attr]
    assert completed.quality == "low"
    assert all(decoded(e.b64_json).size == (256, 256) for e in events)
    # The fake's partials are distinct images from its final one: nothing was re-rendered.
    assert len({e.b64_json for e in events}) == 3


def test_openai_edit_stream_sends_multipart_stream_fields(env: Env) -> None:
    before = len(env.good.calls)
    events = list(
        env.client().images.edit(
            model="test/stream",
            image=("in.png", png(256, 256), "image/png"),
            prompt="make it blue",
            size="256x256",
            stream=True,
            partial_images=1,
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    call = env.good.calls[before]
    assert call.path == "/v1/images/edits"
    assert call.fields["stream"] == "true" and call.fields["partial_images"] == "1"
    assert call.files["image"]


def test_models_that_cannot_stream_send_only_the_completed_event(env: Env) -> None:
    before = len(env.good.calls)
    events = list(
        env.client().images.generate(
            model="test/stream-dalle", prompt="old", size="256x256", stream=True, partial_images=2
        )
    )
    assert [e.type for e in events] == ["image_generation.completed"]
    assert decoded(events[0].b64_json).size == (256, 256)
    call = env.good.calls[before]
    assert "stream" not in call.fields and call.fields["response_format"] == "b64_json"


def test_failover_happens_before_the_first_event(env: Env) -> None:
    down_before, good_before = len(env.down.calls), len(env.good.calls)
    events = list(
        env.client().images.generate(
            model="test/stream-failover",
            prompt="failover",
            size="256x256",
            stream=True,
            partial_images=1,
            extra_body={"meta": True},
        )
    )
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert len(env.down.calls) == down_before + 1
    assert len(env.good.calls) == good_before + 1
    meta = events[-1].to_dict()["meta"]
    assert isinstance(meta, dict) and meta["provider"] == "oa"
    assert [a["provider"] for a in meta["attempts"]] == ["oa-down", "oa"]
    assert meta["attempts"][0]["status"] == 500


def test_failure_before_the_first_event_is_a_json_error(env: Env) -> None:
    body = {"model": "test/stream-down", "prompt": "x", "size": "256x256", "stream": True}
    response = env.post("/images/generations", json=body)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "upstream_failed"


def test_failure_after_the_first_event_ends_with_an_error_event(env: Env) -> None:
    stream = env.client().images.generate(
        model="test/stream-drop", prompt="x", size="256x256", stream=True, partial_images=2
    )
    iterator = iter(stream)
    assert next(iterator).type == "image_generation.partial_image"
    with pytest.raises(openai.APIError, match="stream"):
        next(iterator)


def test_client_disconnect_cancels_the_upstream_stream(env: Env) -> None:
    stream = env.client().images.generate(
        model="test/stream-slow", prompt="slow", size="256x256", stream=True, partial_images=2
    )
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    assert env.slow.streams_started == 1
    stream.close()  # the client goes away while the upstream waits to send its next event
    wait_until(lambda: env.slow.streams_cancelled == 1, "the upstream stream to be cancelled")
    assert env.slow.streams_completed == 0


def test_disconnect_releases_the_credit_hold(env: Env) -> None:
    admin = {"Authorization": f"Bearer {env.gateway.admin_key}"}
    created = httpx.post(
        f"{env.gateway.v1}/admin/keys", json={"name": "streamer", "credits": 1}, headers=admin
    ).json()
    client = OpenAI(base_url=env.gateway.v1, api_key=created["key"], max_retries=0)
    stream = client.images.generate(
        model="test/stream-slow", prompt="slow", size="256x256", stream=True, partial_images=2
    )
    assert next(iter(stream)).type == "image_generation.partial_image"

    def ledger() -> list[dict[str, Any]]:
        url = f"{env.gateway.v1}/admin/keys/{created['id']}/ledger"
        return list(httpx.get(url, headers=admin).json()["data"])

    assert [e["kind"] for e in ledger()] == ["open", "hold"]  # held while it streams
    stream.close()
    wait_until(lambda: len(ledger()) == 3, "the hold to be released")
    assert [e["kind"] for e in ledger()] == ["open", "hold", "release"]
    assert ledger()[-1]["balance_usd"] == 1.0
    usage = httpx.get(
        f"{env.gateway.v1}/usage", headers={"Authorization": f"Bearer {created['key']}"}
    ).json()
    assert usage["totals"] == {"requests": 1, "succeeded": 0, "images": 0, "cost_usd": 0.0}
    assert_books_balance(gateway_database(env.gateway))


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"response_format": "url"}, "response_format"),
        ({"partial_images": 4}, "partial_images"),
        ({"partial_images": -1}, "partial_images"),
    ],
)
def test_invalid_stream_requests_are_400_naming_the_field(
    env: Env, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "sandbox", "prompt": "x", "size": "64x64", "stream": True, **extra}
    response = env.post("/images/generations", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"]


def test_variations_cannot_stream(env: Env) -> None:
    response = env.post(
        "/images/variations",
        data={"model": "sandbox", "stream": "true"},
        files={"image": ("in.png", png(64, 64), "image/png")},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"


def test_sdk_raises_the_validation_error_before_streaming(env: Env) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        env.client().images.generate(model="sandbox", prompt="x", n=3, stream=True)
    assert caught.value.status_code == 400
    assert "n must be 1" in caught.value.message


def _distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255."""
    pa, pb = a.convert("RGB").tobytes(), b.convert("RGB").tobytes()
    return sum(abs(x - y) for x, y in zip(pa, pb, strict=True)) / len(pa)


# -- the upstream event parser --------------------------------------------------------------


async def _parse(body: bytes) -> list[Any]:
    response = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    return [e async for e in image_stream_events("oa", response, "gpt-image-1", _usage)]


def _event(kind: str, **fields: Any) -> bytes:
    data = {"type": kind, "b64_json": base64.b64encode(png(8, 8)).decode(), **fields}
    return f"event: {kind}\r\ndata: {json.dumps(data)}\r\n\r\n".encode()


async def test_parser_reads_crlf_events_and_stops_at_completed() -> None:
    body = (
        b": keep-alive\n\n"
        + _event("image_edit.partial_image", partial_image_index=0)
        + _event("image_edit.completed", usage={"input_tokens": 3, "total_tokens": 3})
        + b"data: [DONE]\n\n"
    )
    events = await _parse(body)
    assert isinstance(events[0], PartialImage) and events[0].image.width == 8
    assert isinstance(events[1], ImageResult) and events[1].usage is not None
    assert events[1].usage.input_tokens == 3 and len(events) == 2


async def test_parser_maps_error_events_and_truncated_streams() -> None:
    refused = b'event: error\ndata: {"error": {"message": "no", "code": "moderation_blocked"}}\n\n'
    with pytest.raises(UpstreamError) as policy:
        await _parse(refused)
    assert not policy.value.retryable and policy.value.client_error is not None
    with pytest.raises(UpstreamError) as cut:
        await _parse(_event("image_generation.partial_image", partial_image_index=0))
    assert cut.value.retryable and "without a completed event" in cut.value.message
