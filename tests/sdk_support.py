"""A gateway process for the SDK and CLI tests, with fakes that fail in known ways.

``test/limited`` has one endpoint whose upstream answers 429 with ``Retry-After`` for its
first ``fail_first`` calls (the routing config does not wait it out, so the gateway passes
the wait on); ``test/broken`` always fails upstream (5xx); ``test/priced`` is the sandbox at
$0.04 an image (402 under ``max_price``); ``images`` serves PNGs on an allow-listed host.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from e2e_support import png_bytes
from fakes.http_server import FakeHTTPServer, Reply, serve_http
from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway


@dataclass
class TimedFake(FakeOpenAI):
    """The OpenAI fake, also recording when each call arrived (monotonic seconds)."""

    arrivals: list[float] = field(default_factory=list)

    def _answer(
        self, request: Request, path: str, fields: dict[str, Any], files: dict[str, list[bytes]]
    ) -> Response:
        self.arrivals.append(time.monotonic())
        return super()._answer(request, path, fields, files)

    def reset(self, fail_first: int) -> None:
        self.calls.clear()
        self.arrivals.clear()
        self.fail_first = fail_first


@dataclass
class SdkStack:
    gateway: RunningGateway
    limited: TimedFake
    images: FakeHTTPServer

    @property
    def v1(self) -> str:
        return self.gateway.v1

    def image_url(self, name: str = "red.png") -> str:
        return f"{self.images.url}/{name}"

    def create_key(self, **fields: Any) -> str:
        return self.gateway.create_key("sdk-test", **fields)


CONFIG = """
providers:
  - {{id: limited, type: openai_compatible, base_url: "{limited}/v1", api_key: sk-fake}}
  - {{id: broken, type: openai_compatible, base_url: "{broken}/v1", api_key: sk-fake}}
models:
  - id: test/limited
    operations: [generate]
    sizes: [256x256]
    endpoints:
      - {{provider: limited, upstream_model: up-l, pricing: {{per_image: 0.01}}}}
  - id: test/broken
    operations: [generate]
    sizes: [256x256]
    endpoints:
      - {{provider: broken, upstream_model: up-b, pricing: {{per_image: 0.01}}}}
  - id: test/priced
    operations: [generate]
    free_size: {{min_side: 64, max_side: 1024}}
    endpoints:
      - {{provider: sandbox, upstream_model: sandbox, pricing: {{per_image: 0.04}}}}
routing:
  max_retry_wait_s: 0.01  # never wait out the upstream 429 here: pass it on
  breaker: {{failure_threshold: 1000, cooldown_s: 1}}
fetch:
  allow_hosts: ["127.0.0.1:{image_port}"]
"""


@pytest.fixture(scope="module", name="sdk_stack")
def sdk_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkStack]:
    tmp: Path = tmp_path_factory.mktemp("sdk")
    limited = TimedFake(fail_status=429, retry_after="1", fail_first=1)
    png = {"Content-Type": "image/png"}
    with (
        serve_fake(limited),
        serve_fake(FakeOpenAI(fail_status=500)) as broken,
        serve_http(
            {
                "/red.png": Reply(body=png_bytes(96, 64), headers=png),
                "/mask.png": Reply(body=png_bytes(96, 64, (0, 0, 0, 0), "RGBA"), headers=png),
            }
        ) as images,
    ):
        config = CONFIG.format(limited=limited.url, broken=broken.url, image_port=images.port)
        with run_gateway(tmp, config) as gateway:
            yield SdkStack(gateway, limited, images)
