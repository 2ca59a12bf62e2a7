"""Model lifecycle and upstream errors that are ours, end to end against OpenAI fakes.

Dates in the configured models are far in the past or the future, so nothing here depends
on today's date; the built-in dall-e models were shut down on 2026-05-12.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway
from imagegate.catalog import lifecycle
from imagegate.catalog.catalog import Catalog

CONFIG = """
providers:
  - {{id: good, type: openai_compatible, base_url: "{good}/v1", api_key: sk-fake}}
  - {{id: gone, type: openai_compatible, base_url: "{gone}/v1", api_key: sk-fake}}
  - {{id: broke, type: openai_compatible, base_url: "{broke}/v1", api_key: sk-fake}}
  - {{id: quota, type: openai_compatible, base_url: "{quota}/v1", api_key: sk-fake}}
  - {{id: deadurl, type: openai_compatible, base_url: "{deadurl}/v1", api_key: sk-fake,
      response_format: url}}
fetch:
  allow_hosts: ["{deadurl_host}"]
models:
  - id: test/retired
    sizes: [256x256]
    shutdown_on: 2020-01-01
    replacement: test/live
    endpoints: [{{provider: good, upstream_model: up-old, pricing: {{per_image: 0.01}}}}]
  - id: test/live
    sizes: [256x256]
    endpoints: [{{provider: good, upstream_model: up-new, pricing: {{per_image: 0.01}}}}]
  - id: test/deprecated
    sizes: [256x256]
    deprecated_on: 2020-01-01
    shutdown_on: 2099-01-01
    replacement: test/live
    endpoints: [{{provider: good, upstream_model: up-new, pricing: {{per_image: 0.01}}}}]
  - id: test/partly-retired
    sizes: [256x256]
    endpoints:
      - {{provider: good, upstream_model: up-old, shutdown_on: 2020-01-01,
          pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: up-new, pricing: {{per_image: 0.01}}}}
  - id: test/gone-upstream
    sizes: [256x256]
    endpoints:
      - {{provider: gone, upstream_model: up-gone, pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: up-new, pricing: {{per_image: 0.01}}}}
  - id: test/billing
    sizes: [256x256]
    endpoints:
      - {{provider: broke, upstream_model: up-a, pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: up-new, pricing: {{per_image: 0.01}}}}
  - id: test/broke-only
    sizes: [256x256]
    endpoints: [{{provider: broke, upstream_model: up-a, pricing: {{per_image: 0.01}}}}]
  - id: test/dead-url
    sizes: [256x256]
    endpoints:
      - {{provider: deadurl, upstream_model: up-a, pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: up-new, pricing: {{per_image: 0.01}}}}
  - id: test/steps
    sizes: [256x256]
    endpoints:
      - {{provider: good, upstream_model: up-new, pricing: {{per_image: 0.01, default_steps: 4}}}}
  - id: test/steps-unpriced
    sizes: [256x256]
    endpoints:
      - {{provider: good, upstream_model: up-new,
          pricing: {{per_image: 0.01, unpriced: [steps]}}}}
  - id: test/quota-only
    sizes: [256x256]
    endpoints: [{{provider: quota, upstream_model: up-a, pricing: {{per_image: 0.01}}}}]
"""


@dataclass
class Lifecycle:
    gateway: RunningGateway
    good: FakeOpenAI
    gone: FakeOpenAI


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    tmp: Path = tmp_path_factory.mktemp("lifecycle")
    with (
        serve_fake(FakeOpenAI()) as good,
        serve_fake(FakeOpenAI(retired={"up-gone"})) as gone,
        serve_fake(FakeOpenAI(account="billing_hard_limit_reached")) as broke,
        serve_fake(FakeOpenAI(account="insufficient_quota", retry_after="30")) as quota,
        serve_fake(FakeOpenAI(dead_urls=True)) as deadurl,
    ):
        config = CONFIG.format(
            good=good.url,
            gone=gone.url,
            broke=broke.url,
            quota=quota.url,
            deadurl=deadurl.url,
            deadurl_host=deadurl.url.removeprefix("http://"),
        )
        with run_gateway(tmp, config, env={"OPENAI_API_KEY": "sk-unused"}) as gateway:
            yield Lifecycle(gateway, good, gone)


def generate(world: Lifecycle, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "prompt": "x", "size": "256x256", **extra}
    return httpx.post(
        f"{world.gateway.v1}/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {world.gateway.admin_key}"},
        timeout=30,
    )


@pytest.mark.parametrize("model", ["openai/dall-e-3", "dall-e-2"])
def test_builtin_retired_model_is_refused_with_date_and_replacement(
    world: Lifecycle, model: str
) -> None:
    response = generate(world, model, size="1024x1024")
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "2026-05-12" in error["message"]
    assert "openai/gpt-image-2.6-sunburst" in error["message"]


def test_retired_model_never_reaches_upstream(world: Lifecycle) -> None:
    before = len(world.good.calls)
    response = generate(world, "test/retired")
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "2020-01-01" in message and "test/live" in message
    assert len(world.good.calls) == before
    health = httpx.get(f"{world.gateway.url}/healthz", timeout=10).json()["endpoints"]
    assert "good/up-old" not in health


def test_deprecated_model_works_and_says_when_it_ends(world: Lifecycle) -> None:
    response = generate(world, "test/deprecated")
    assert response.status_code == 200, response.text
    assert response.headers["Deprecation"] == "@1577836800"  # 2020-01-01T00:00:00Z
    assert response.headers["Sunset"] == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert response.headers["x-imagegate-model-replacement"] == "test/live"
    plain = generate(world, "test/live")
    assert "Deprecation" not in plain.headers and "Sunset" not in plain.headers


def test_models_list_has_shutdown_date_and_drops_retired_models(world: Lifecycle) -> None:
    headers = {"Authorization": f"Bearer {world.gateway.admin_key}"}
    listed = httpx.get(f"{world.gateway.v1}/models", headers=headers, timeout=10).json()
    by_id = {m["id"]: m for m in listed["data"]}
    assert by_id["test/deprecated"]["shutdown_date"] == "2099-01-01"
    assert by_id["test/deprecated"]["replacement"] == "test/live"
    assert by_id["test/live"]["shutdown_date"] is None
    assert by_id["openai/gpt-image-2.6-sunburst"]["shutdown_date"] is None
    for retired in ("test/retired", "openai/dall-e-3", "openai/dall-e-2"):
        assert retired not in by_id
    partly = by_id["test/partly-retired"]["endpoints"]
    assert [e["upstream_model"] for e in partly] == ["up-new"]


def test_endpoint_retired_by_its_provider_is_skipped(world: Lifecycle) -> None:
    response = generate(world, "test/partly-retired")
    assert response.status_code == 200, response.text
    assert world.good.calls[-1].fields["model"] == "up-new"


def test_upstream_model_not_found_fails_over_once_without_tripping_breakers(
    world: Lifecycle,
) -> None:
    first = generate(world, "test/gone-upstream", meta=True)
    assert first.status_code == 200, first.text
    attempts = first.json()["meta"]["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("gone", 404), ("good", 200)]
    for _ in range(3):  # the gone endpoint is skipped now, not retried on every request
        again = generate(world, "test/gone-upstream", meta=True)
        assert [a["provider"] for a in again.json()["meta"]["attempts"]] == ["good"]
    assert len(world.gone.calls) == 1
    health = httpx.get(f"{world.gateway.url}/healthz", timeout=10).json()["endpoints"]
    assert health["gone/up-gone"]["state"] == "closed"
    assert health["gone/up-gone"]["model_gone"] is True
    assert "upstream says the model is gone" in world.gateway.log()


def test_billing_limit_fails_over_and_is_never_the_callers_400(world: Lifecycle) -> None:
    response = generate(world, "test/billing", meta=True)
    assert response.status_code == 200, response.text
    attempts = response.json()["meta"]["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("broke", 400), ("good", 200)]
    alone = generate(world, "test/broke-only")
    assert alone.status_code == 502
    assert alone.json()["error"]["code"] == "upstream_failed"


def test_insufficient_quota_is_ours_and_not_waited_out(world: Lifecycle) -> None:
    response = generate(world, "test/quota-only")
    assert response.status_code == 502, response.text
    assert "Retry-After" not in response.headers


def test_dead_result_url_fails_over(world: Lifecycle) -> None:
    response = generate(world, "test/dead-url", meta=True)
    assert response.status_code == 200, response.text
    attempts = response.json()["meta"]["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("deadurl", 502), ("good", 200)]


def test_steps_are_charged_or_refused(world: Lifecycle) -> None:
    doubled = generate(world, "test/steps", steps=8)
    assert doubled.status_code == 200, doubled.text
    assert doubled.headers["x-imagegate-cost-usd"] == "0.020000"
    assert world.good.calls[-1].fields["steps"] == 8
    plain = generate(world, "test/steps")
    assert plain.headers["x-imagegate-cost-usd"] == "0.010000"
    refused = generate(world, "test/steps-unpriced", steps=8)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "steps" and error["code"] == "unsupported_parameter"


def test_check_lifecycle_lists_retired_and_near_models() -> None:
    catalog = list(Catalog.load())
    found = {spec.id: kind for kind, spec in lifecycle.check(catalog, dt.date(2026, 11, 29))}
    assert found["openai/dall-e-3"] == "retired"
    assert found["openai/gpt-image-1.5"] == "shutdown-soon"
    assert found["openai/gpt-image-1-mini"] == "shutdown-soon"
    assert found["openai/gpt-image-1 on openai"] == "retired"  # Azure still serves it
    assert "openai/gpt-image-2.6-sunburst" not in found


def test_models_check_lifecycle_cli(tmp_path: Path) -> None:
    config = tmp_path / "imagegate.yaml"
    config.write_text(
        "models:\n"
        "  - id: test/old\n"
        "    shutdown_on: 2020-01-01\n"
        "    replacement: imagegate/sandbox\n"
        "    lifecycle_source: https://example.com/deprecations (checked 2026-11-29)\n"
        "    endpoints: [{provider: sandbox, upstream_model: sandbox, pricing: {free: true}}]\n"
    )
    env = {**os.environ, "IMAGEGATE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "250"}
    result = subprocess.run(
        [sys.executable, "-m", "imagegate", "models", "--check-lifecycle", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines()]
    by_model = {row[1]: row for row in rows if len(row) > 4 and row[1]}
    expected = ["retired", "test/old", "-", "2020-01-01", "imagegate/sandbox"]
    assert by_model["test/old"][:5] == expected
    assert by_model["openai/dall-e-3"][0] == "retired"


def test_deprecation_headers_on_streams_too(world: Lifecycle) -> None:
    with httpx.stream(
        "POST",
        f"{world.gateway.v1}/images/generations",
        json={"model": "test/deprecated", "prompt": "x", "size": "256x256", "stream": True},
        headers={"Authorization": f"Bearer {world.gateway.admin_key}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["Sunset"] == "Thu, 01 Jan 2099 00:00:00 GMT"
        response.read()
