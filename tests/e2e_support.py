"""Fixtures shared by the end-to-end tests: fake upstreams and one gateway process."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from fakes.http_server import FakeHTTPServer, Reply, serve_http
from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway


def png_bytes(
    width: int = 64, height: int = 64, color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Stack:
    gateway: RunningGateway
    flaky: FakeOpenAI
    good: FakeOpenAI
    urlish: FakeOpenAI
    images: FakeHTTPServer


CONFIG = """
providers:
  - {{id: flaky, type: openai_compatible, base_url: "{flaky}/v1", api_key: sk-fake}}
  - {{id: good, type: openai_compatible, base_url: "{good}/v1", api_key: "${{TEST_GOOD_KEY}}"}}
  - {{id: urlish, type: openai_compatible, base_url: "{urlish}/v1", api_key: sk-fake,
      response_format: url}}
  - {{id: slow, type: openai_compatible, base_url: "{slow}", api_key: sk-fake, timeout_s: 0.5}}
  - {{id: hidden, type: openai_compatible, base_url: "{good}/v1", api_key: sk-fake,
      status: alpha}}
models:
  - id: test/failover
    aliases: [failover]
    operations: [generate, edit, variation]
    sizes: [256x256, 512x512]
    endpoints:
      - {{provider: flaky, upstream_model: up-a, pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: up-b, pricing: {{per_image: 0.02}}}}
  - id: test/good-first
    operations: [generate, edit]
    sizes: [256x256]
    endpoints:
      - {{provider: good, upstream_model: up-b, pricing: {{per_image: 0.02}}}}
      - {{provider: flaky, upstream_model: up-a, pricing: {{per_image: 0.01}}}}
  - id: test/always-down
    sizes: [256x256]
    endpoints:
      - {{provider: flaky, upstream_model: up-a, pricing: {{per_image: 0.01}}}}
  - id: test/slow
    sizes: [256x256]
    endpoints:
      - {{provider: slow, upstream_model: up-s, pricing: {{per_image: 0.01}}}}
  - id: test/urls
    operations: [generate]
    sizes: [256x256]
    endpoints:
      - {{provider: urlish, upstream_model: dall-e-2, pricing: {{per_image: 0.02}}}}
  - id: test/alpha-only
    sizes: [256x256]
    endpoints:
      - {{provider: hidden, upstream_model: up-h, pricing: {{per_image: 0.01}}}}
limits:
  max_image_mb: 8
fetch:
  allow_hosts: ["127.0.0.1:{image_port}"]
"""


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("gw")
    slow_reply = Reply(status=200, body=b"{}", delay_s=3.0)
    with (
        serve_fake(FakeOpenAI(fail_status=500)) as flaky,
        serve_fake(FakeOpenAI()) as good,
        serve_fake(FakeOpenAI()) as urlish,
        serve_http({"/images/generations": slow_reply}) as slow,
        serve_http(
            {"/red.png": Reply(body=png_bytes(96, 64), headers={"Content-Type": "image/png"})}
        ) as images,
    ):
        config = CONFIG.format(
            flaky=flaky.url, good=good.url, urlish=urlish.url, slow=slow.url, image_port=images.port
        )
        with run_gateway(tmp, config, env={"TEST_GOOD_KEY": "sk-fake"}) as gateway:
            yield Stack(gateway, flaky, good, urlish, images)
