"""Upstream base64 images: probed from a prefix, passed through as sent, decoded on demand.

``image_from_b64`` reads an image's type and size from a decoded prefix of the upstream's
base64 and keeps the text; ``GeneratedImage.data`` decodes it only when bytes are needed
(``response_format: url``, a format conversion). The end-to-end cases run a gateway in
front of canned loopback upstreams.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from fakes.http_server import Reply, serve_http
from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway
from imagegate.core.errors import UpstreamError
from imagegate.core.types import GeneratedImage
from imagegate.media.images import probe_head
from imagegate.providers._shared import common
from imagegate.providers._shared.common import image_from_b64, image_from_bytes


def noise(width: int, height: int, fmt: str, seed: int = 1, **save: Any) -> bytes:
    """Random pixels: large, incompressible files (so their base64 is past the prefix)."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def corrupt(text: str, at: int) -> str:
    return text[:at] + "*" + text[at + 1 :]


def wrapped(text: str, width: int = 76) -> str:
    """MIME-style base64: lines of ``width`` characters, CRLF-separated, final newline."""
    return "\r\n".join(text[i : i + width] for i in range(0, len(text), width)) + "\n"


BIG_PNG = noise(512, 512, "PNG")  # ~790 KB
# A JPEG whose SOF comes after ~300 KB of ICC profile and 60 KB of EXIF: past the prefix.
FAT_JPEG = noise(320, 200, "JPEG", icc_profile=bytes(300_000), exif=b"Exif\0\0" + bytes(60_000))


# -- image_from_b64 -----------------------------------------------------------------------


def test_large_png_keeps_the_upstream_text_and_decodes_on_demand() -> None:
    text = b64(BIG_PNG)
    image = image_from_b64("up", text, revised_prompt="r")
    assert (image.format, image.width, image.height, image.revised_prompt) == ("png", 512, 512, "r")
    assert image.b64 is text  # passed through: not re-encoded, not copied
    assert image.data == BIG_PNG
    assert image == image_from_bytes("up", BIG_PNG, revised_prompt="r")


def test_data_url_prefix_is_stripped() -> None:
    image = image_from_b64("up", "data:image/png;base64," + b64(BIG_PNG))
    assert image.b64 == b64(BIG_PNG)
    assert image.data == BIG_PNG


@pytest.mark.parametrize("data", [BIG_PNG, noise(16, 16, "PNG")], ids=["large", "small"])
def test_wrapped_base64_is_accepted_and_unwrapped(data: bytes) -> None:
    image = image_from_b64("up", wrapped(b64(data)))
    assert image.b64 == b64(data)
    assert image.data == data
    assert image.width == Image.open(io.BytesIO(data)).width


@pytest.mark.parametrize(
    "save",
    [
        {},
        {"exif": b"Exif\0\0" + bytes(20_000)},  # SOF inside the prefix
        {"icc_profile": bytes(300_000), "exif": b"Exif\0\0" + bytes(60_000)},  # past it
    ],
    ids=["plain", "exif-in-prefix", "big-icc-and-exif"],
)
def test_jpeg_size_is_right_wherever_its_sof_is(save: dict[str, Any]) -> None:
    data = noise(640, 400, "JPEG", quality=95, **save)
    assert len(data) > 100_000  # long enough to be probed from a prefix
    image = image_from_b64("up", b64(data))
    assert (image.format, image.width, image.height) == ("jpeg", 640, 400)
    assert image.data == data


@pytest.mark.parametrize(
    ("mode", "save"),
    [("RGB", {"quality": 90}), ("RGB", {"lossless": True}), ("RGBA", {"quality": 90})],
    ids=["lossy-vp8", "lossless-vp8l", "alpha-vp8x"],
)
def test_webp_header_sizes_match_pillow(mode: str, save: dict[str, Any]) -> None:
    img = Image.frombytes(mode, (601, 357), random.Random(3).randbytes(601 * 357 * len(mode)))
    buffer = io.BytesIO()
    img.save(buffer, "WEBP", **save)
    data = buffer.getvalue()
    head = probe_head(data[:64], size=len(data), param="p", max_bytes=10**9, max_pixels=10**9)
    assert head == ("webp", 601, 357)
    image = image_from_b64("up", b64(data))
    assert (image.format, image.width, image.height) == ("webp", 601, 357)
    assert image == image_from_bytes("up", data)


@pytest.mark.parametrize(
    "text",
    [
        corrupt(b64(BIG_PNG), 40_000),  # in the prefix
        corrupt(b64(BIG_PNG), len(b64(BIG_PNG)) - 100),  # in the last 4 KB
        b64(BIG_PNG)[:-2],  # truncated: bad padding
        b64(BIG_PNG)[:80_000] + "==" + b64(BIG_PNG)[80_002:],  # padding mid-way
        b64(BIG_PNG)[:1000] + "é" + b64(BIG_PNG)[1001:],  # not ASCII
        corrupt(b64(noise(16, 16, "PNG")), 30),  # a small image
        corrupt(b64(FAT_JPEG), len(b64(FAT_JPEG)) // 2),  # decoded whole to find the SOF
    ],
    ids=["prefix", "end", "truncated", "padding", "non-ascii", "small", "jpeg-fallback"],
)
def test_invalid_base64_that_is_looked_at_fails_over(text: str) -> None:
    with pytest.raises(UpstreamError) as info:
        image_from_b64("up", text)
    assert info.value.retryable
    assert "invalid base64" in info.value.message


def test_invalid_base64_in_the_middle_fails_when_the_bytes_are_needed() -> None:
    text = corrupt(b64(BIG_PNG), len(b64(BIG_PNG)) // 2)
    image = image_from_b64("up", text)  # not decoded yet: a pass-through never is
    assert image.b64 is text
    with pytest.raises(UpstreamError) as info:
        image.data  # noqa: B018
    assert (info.value.status, info.value.retryable) == (502, True)
    assert info.value.message == "up returned invalid base64"


def test_unknown_type_and_limits_are_checked_from_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    not_an_image = b64(b"GIF89a" + bytes(200_000))
    with pytest.raises(UpstreamError, match="must be a PNG, JPEG or WebP"):
        image_from_b64("up", not_an_image)
    monkeypatch.setattr(common, "MAX_OUTPUT_BYTES", len(BIG_PNG) - 1)
    with pytest.raises(UpstreamError, match="larger than"):
        image_from_b64("up", b64(BIG_PNG))
    monkeypatch.setattr(common, "MAX_OUTPUT_BYTES", len(BIG_PNG))
    monkeypatch.setattr(common, "MAX_OUTPUT_PIXELS", 512 * 512 - 1)
    with pytest.raises(UpstreamError, match="more than"):
        image_from_b64("up", b64(BIG_PNG))


def test_generated_image_from_bytes_encodes_once() -> None:
    image = GeneratedImage(BIG_PNG, "png", 512, 512)
    assert image.b64 == b64(BIG_PNG)
    assert image.b64 is image.b64
    with pytest.raises(ValueError):
        GeneratedImage(None, "png", 1, 1)


# -- end to end ---------------------------------------------------------------------------

CONFIG = """
providers:
  - {{id: big, type: openai_compatible, base_url: "{canned}/big/v1", api_key: sk-fake}}
  - {{id: wrapped, type: openai_compatible, base_url: "{canned}/wrapped/v1", api_key: sk-fake}}
  - {{id: badhead, type: openai_compatible, base_url: "{canned}/badhead/v1", api_key: sk-fake}}
  - {{id: badtail, type: openai_compatible, base_url: "{canned}/badtail/v1", api_key: sk-fake}}
  - {{id: good, type: openai_compatible, base_url: "{good}/v1", api_key: sk-fake}}
  - {{id: cut, type: openai_compatible, base_url: "{canned}/cut/v1", api_key: sk-fake}}
  - {{id: slashes, type: openai_compatible, base_url: "{canned}/slashes/v1", api_key: sk-fake}}
  - {{id: two, type: openai_compatible, base_url: "{canned}/two/v1", api_key: sk-fake}}
  - {{id: oai, type: openai, base_url: "{canned}/big/v1", api_key: sk-fake}}
models:
  - id: test/big
    sizes: [512x512]
    endpoints: [{{provider: big, upstream_model: m, pricing: {{per_image: 0.01}}}}]
  - id: test/wrapped
    sizes: [512x512]
    endpoints: [{{provider: wrapped, upstream_model: m, pricing: {{per_image: 0.01}}}}]
  - id: test/badhead
    sizes: [512x512]
    endpoints:
      - {{provider: badhead, upstream_model: m, pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: m, pricing: {{per_image: 0.01}}}}
  - id: test/badtail
    sizes: [512x512]
    endpoints: [{{provider: badtail, upstream_model: m, pricing: {{per_image: 0.01}}}}]
  - id: test/cut
    sizes: [512x512]
    endpoints:
      - {{provider: cut, upstream_model: m, pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: m, pricing: {{per_image: 0.01}}}}
  - id: test/slashes
    sizes: [512x512]
    endpoints: [{{provider: slashes, upstream_model: m, pricing: {{per_image: 0.01}}}}]
  - id: test/two
    sizes: [512x512]
    endpoints: [{{provider: two, upstream_model: m, pricing: {{per_image: 0.01}}}}]
  - id: test/oai
    sizes: [512x512]
    endpoints: [{{provider: oai, upstream_model: dall-e-2, pricing: {{per_image: 0.01}}}}]
"""

BIG_B64 = b64(BIG_PNG)
CANNED = {
    "big": BIG_B64,
    "wrapped": wrapped(BIG_B64),
    "badhead": corrupt(BIG_B64, 50_000),
    "badtail": corrupt(BIG_B64, len(BIG_B64) // 2),
}


OTHER_PNG = noise(512, 512, "PNG", seed=2)


def images_response(*b64_json: str) -> Reply:
    body = {"created": 1, "data": [{"b64_json": t} for t in b64_json], "output_format": "png"}
    return json_reply(json.dumps(body).encode())


def json_reply(body: bytes) -> Reply:
    return Reply(body=body, headers={"Content-Type": "application/json"})


def raw_replies() -> dict[str, Reply]:
    """Bodies no JSON encoder of ours writes: cut mid-image, and JSON-escaped slashes."""
    whole = images_response(BIG_B64).body
    at = whole.index(BIG_B64.encode()) + len(BIG_B64) // 2
    return {
        "cut": json_reply(whole[:at]),
        "slashes": json_reply(whole.replace(b"/", b"\\/")),
        "two": images_response(BIG_B64, b64(OTHER_PNG)),
    }


@dataclass
class Env:
    gateway: RunningGateway

    def generate(self, model: str, **fields: Any) -> httpx.Response:
        body = {"model": model, "prompt": "noise", "size": "512x512", **fields}
        headers = {"Authorization": f"Bearer {self.gateway.admin_key}"}
        return httpx.post(
            f"{self.gateway.v1}/images/generations", json=body, headers=headers, timeout=30
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("b64")
    routes = {f"/{name}/v1/images/generations": images_response(t) for name, t in CANNED.items()}
    routes.update({f"/{name}/v1/images/generations": r for name, r in raw_replies().items()})
    with (
        serve_http(routes) as canned,
        serve_fake(FakeOpenAI()) as good,
        run_gateway(tmp, CONFIG.format(canned=canned.url, good=good.url)) as gateway,
    ):
        yield Env(gateway)


def test_e2e_large_b64_json_is_passed_through_byte_identical(env: Env) -> None:
    response = env.generate("test/big", response_format="b64_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"][0]["b64_json"] == BIG_B64
    assert (body["size"], body["output_format"]) == ("512x512", "png")


@pytest.mark.parametrize("model", ["test/slashes", "test/oai"])
def test_e2e_large_b64_json_passes_through_from_any_openai_shaped_body(
    env: Env, model: str
) -> None:
    response = env.generate(model, response_format="b64_json")
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["b64_json"] == BIG_B64


def test_e2e_several_large_images_keep_their_order(env: Env) -> None:
    response = env.generate("test/two", response_format="b64_json", n=2)
    assert response.status_code == 200, response.text
    assert [d["b64_json"] for d in response.json()["data"]] == [BIG_B64, b64(OTHER_PNG)]


def test_e2e_a_body_cut_mid_image_fails_over(env: Env) -> None:
    response = env.generate("test/cut", meta=True, response_format="b64_json")
    assert response.status_code == 200, response.text
    attempts = response.json()["meta"]["attempts"]
    assert [a["provider"] for a in attempts] == ["cut", "good"]
    assert "returned invalid JSON" in attempts[0]["error"]


def test_e2e_large_b64_as_url_serves_the_decoded_bytes(env: Env) -> None:
    response = env.generate("test/big", response_format="url")
    assert response.status_code == 200, response.text
    image = httpx.get(response.json()["data"][0]["url"], timeout=30)
    assert image.content == BIG_PNG


def test_e2e_wrapped_base64_is_answered_unwrapped(env: Env) -> None:
    response = env.generate("test/wrapped")
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["b64_json"] == BIG_B64


def test_e2e_invalid_base64_in_the_prefix_fails_over(env: Env) -> None:
    response = env.generate("test/badhead", meta=True)
    assert response.status_code == 200, response.text
    attempts = response.json()["meta"]["attempts"]
    assert [a["provider"] for a in attempts] == ["badhead", "good"]
    assert "invalid base64" in attempts[0]["error"]


def test_e2e_invalid_base64_in_the_tail_passes_through_as_sent(env: Env) -> None:
    response = env.generate("test/badtail", response_format="b64_json")
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["b64_json"] == CANNED["badtail"]


@pytest.mark.parametrize(
    "fields",
    [{"response_format": "url"}, {"response_format": "b64_json", "output_format": "jpeg"}],
    ids=["url", "conversion"],
)
def test_e2e_invalid_base64_in_the_tail_is_a_clean_502_when_decoded(
    env: Env, fields: dict[str, Any]
) -> None:
    response = env.generate("test/badtail", **fields)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_failed")
    assert "badtail returned invalid base64" in error["message"]
