"""``GET /metrics``: what a Prometheus scrape sees, with one worker and with several."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway
from imagegate.obs import metrics
from imagegate.routing.health import BreakerSettings, HealthBook

CONFIG = """
providers:
  - {{id: flaky, type: openai_compatible, base_url: "{flaky}/v1", api_key: sk-fake}}
  - {{id: good, type: openai_compatible, base_url: "{good}/v1", api_key: sk-fake}}
models:
  - id: test/failover
    operations: [generate]
    sizes: [256x256]
    endpoints:
      - {{provider: flaky, upstream_model: up-a, pricing: {{per_image: 0.01}}}}
      - {{provider: good, upstream_model: up-b, pricing: {{per_image: 0.02}}}}
{extra}
"""


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics`` as ``{(name, sorted labels): value}``."""
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def generate(gw: RunningGateway, model: str = "test/failover", n: int = 1) -> httpx.Response:
    return httpx.post(
        f"{gw.v1}/images/generations",
        headers={"Authorization": f"Bearer {gw.admin_key}"},
        json={"model": model, "prompt": "a fox", "size": "256x256", "n": n},
        timeout=60,
    )


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[str, str]]:
    with serve_fake(FakeOpenAI(fail_status=500)) as flaky, serve_fake(FakeOpenAI()) as good:
        yield flaky.url, good.url


def test_metrics_count_requests_attempts_images_cost_and_breakers(
    upstreams: tuple[str, str], tmp_path: Path
) -> None:
    flaky, good = upstreams
    config = CONFIG.format(flaky=flaky, good=good, extra="routing: {max_attempts: 3}")
    with run_gateway(tmp_path, config) as gw:
        charged = 0.0
        for _ in range(3):
            response = generate(gw, n=2)
            assert response.status_code == 200
            charged += float(response.headers["x-imagegate-cost-usd"])
        unknown = generate(gw, model="test/no-such-model")
        assert unknown.status_code == 404
        assert httpx.post(f"{gw.v1}/images/generations", json={}).status_code == 401
        samples = scrape(gw.url)  # no key needed by default

    ok = {"operation": "generations", "model": "test/failover", "provider": "good"}
    assert value(samples, "imagegate_requests_total", **ok, status="200") == 3
    assert value(samples, "imagegate_request_duration_seconds_count", **ok, status="200") == 3
    assert value(samples, "imagegate_request_duration_seconds_sum", **ok, status="200") > 0
    no_model = {"operation": "generations", "model": "none", "provider": "none"}
    assert value(samples, "imagegate_requests_total", **no_model, status="404") == 1
    assert value(samples, "imagegate_requests_total", **no_model, status="401") == 1
    # Every request first tried the failing upstream, then failed over.
    flaky_failures = {"provider": "flaky", "outcome": "retryable_error"}
    assert value(samples, "imagegate_upstream_attempts_total", **flaky_failures) == 3
    assert value(samples, "imagegate_upstream_attempts_total", provider="good", outcome="ok") == 3
    assert value(samples, "imagegate_images_total", model="test/failover", provider="good") == 6
    cost = value(samples, "imagegate_cost_usd_total", model="test/failover", provider="good")
    assert cost == pytest.approx(charged)  # what callers were charged, to the micro-dollar
    # Three straight failures are below the default threshold of five: still closed.
    flaky_state = {"provider": "flaky", "upstream_model": "up-a"}
    assert value(samples, "imagegate_breaker_state", **flaky_state, state="closed") == 1
    assert value(samples, "imagegate_breaker_state", **flaky_state, state="open") == 0
    assert value(samples, "imagegate_holds_in_flight") == 0  # every hold was closed
    # Health checks and the scrape itself are not counted as image requests.
    operations = {dict(k)["operation"] for n, k in samples if n == "imagegate_requests_total"}
    assert operations == {"generations"}


def test_breaker_opens_in_metrics(upstreams: tuple[str, str], tmp_path: Path) -> None:
    flaky, good = upstreams
    extra = "routing: {breaker: {failure_threshold: 2, cooldown_s: 600}}"
    with run_gateway(tmp_path, CONFIG.format(flaky=flaky, good=good, extra=extra)) as gw:
        for _ in range(3):
            assert generate(gw).status_code == 200
        samples = scrape(gw.url)
    flaky_state = {"provider": "flaky", "upstream_model": "up-a"}
    assert value(samples, "imagegate_breaker_state", **flaky_state, state="open") == 1
    assert value(samples, "imagegate_breaker_state", **flaky_state, state="closed") == 0
    good_state = {"provider": "good", "upstream_model": "up-b"}
    assert value(samples, "imagegate_breaker_state", **good_state, state="closed") == 1
    # Once open, the failing upstream is skipped: only two attempts ever reached it.
    flaky_failures = {"provider": "flaky", "outcome": "retryable_error"}
    assert value(samples, "imagegate_upstream_attempts_total", **flaky_failures) == 2


def test_metrics_can_require_an_admin_key(upstreams: tuple[str, str], tmp_path: Path) -> None:
    flaky, good = upstreams
    config = CONFIG.format(flaky=flaky, good=good, extra="metrics: {require_admin: true}")
    with run_gateway(tmp_path, config) as gw:
        anonymous = httpx.get(f"{gw.url}/metrics")
        assert anonymous.status_code == 401
        assert set(anonymous.json()["error"]) == {"message", "type", "param", "code"}
        assert "imagegate_requests_total" not in anonymous.text
        user = gw.create_key("not-admin")
        assert (
            httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {user}"}).status_code
            == 403
        )
        scrape(gw.url, {"Authorization": f"Bearer {gw.admin_key}"})


def test_two_workers_share_one_set_of_counters(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prom"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with run_gateway(tmp_path, env=env, serve_args=["--workers", "2"]) as gw:
        for i in range(20):
            # A fresh connection each time, so the kernel spreads them over the workers.
            response = httpx.post(
                f"{gw.v1}/images/generations",
                headers={"Authorization": f"Bearer {gw.admin_key}"},
                json={"model": "imagegate/sandbox", "prompt": f"p{i}", "size": "64x64"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
        # Both workers are up and keep their own metric files...
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("*.db")}
        assert len(pids - {str(os.getpid())}) >= 2
        # ...yet every scrape, whichever worker answers it, reports all 20.
        labels = {"operation": "generations", "model": "imagegate/sandbox", "provider": "sandbox"}
        for _ in range(6):
            samples = scrape(gw.url)
            assert value(samples, "imagegate_requests_total", **labels, status="200") == 20
            images = {"model": "imagegate/sandbox", "provider": "sandbox"}
            assert value(samples, "imagegate_images_total", **images) == 20
            ok = {"provider": "sandbox", "outcome": "ok"}
            assert value(samples, "imagegate_upstream_attempts_total", **ok) == 20


# --- in-process -----------------------------------------------------------------------


def test_holds_gauge_and_breaker_collector_in_process() -> None:
    before = _sample("imagegate_holds_in_flight", metrics.render())
    metrics.hold_started()
    metrics.hold_started()
    metrics.hold_finished()
    assert _sample("imagegate_holds_in_flight", metrics.render()) == before + 1
    metrics.hold_finished()

    book = HealthBook(BreakerSettings(failure_threshold=1, cooldown_s=60))
    book.record_failure("acme", "org/model-x")  # an upstream model id with a slash
    text = metrics.render([metrics.BreakerCollector(book.snapshot)]).decode()
    assert (
        'imagegate_breaker_state{provider="acme",state="open",upstream_model="org/model-x"} 1.0'
        in text
    )
    # The collector is only added for that scrape.
    assert "imagegate_breaker_state" not in metrics.render().decode()


def _sample(name: str, text: bytes) -> float:
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in the exposition")


WORKER = """
import sys
from imagegate.obs import metrics
metrics.hold_started(); metrics.hold_started()
metrics.record_generation("m/x", "p", 3, 0.5)
"""
SCRAPER = """
import sys
from imagegate.obs import metrics
sys.stdout.write(metrics.render().decode())
"""


def test_a_killed_workers_holds_stop_counting_but_its_counters_stay(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    # A "worker" that takes two holds and exits without finishing them (as if killed).
    subprocess.run([sys.executable, "-c", WORKER], env=env, check=True)
    assert list(tmp_path.glob("gauge_livesum_*.db"))
    out = subprocess.run(
        [sys.executable, "-c", SCRAPER], env=env, check=True, capture_output=True
    ).stdout
    assert _sample("imagegate_holds_in_flight", out) == 0
    assert 'imagegate_images_total{model="m/x",provider="p"} 3.0' in out.decode()
    assert 'imagegate_cost_usd_total{model="m/x",provider="p"} 0.5' in out.decode()
