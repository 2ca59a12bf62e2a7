"""Production operations: readiness probes, timeouts on shared services, outages.

Faults are injected into private copies only: a TCP proxy in front of PostgreSQL that can
be frozen, and a redis-server of the test's own (tests/fault_support.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from fault_support import freezable_proxy, private_redis
from gateway import run_gateway

SANDBOX = {"model": "sandbox", "prompt": "x", "size": "64x64", "response_format": "b64_json"}
# One upstream that answers as slowly as its fake is told to; the gateway drains for drain_s.
SLOW_UPSTREAM = """
server: {{drain_s: {drain_s}}}
providers:
  - {{id: slowup, type: openai_compatible, base_url: "{url}/v1", api_key: sk-fake}}
models:
  - id: test/slow
    sizes: [256x256]
    endpoints:
      - {{provider: slowup, upstream_model: up, pricing: {{per_image: 0.25}}}}
"""
FAST_TIMEOUTS = """
database: {connect_timeout_s: 1, statement_timeout_s: 1}
redis: {connect_timeout_s: 1, timeout_s: 1}
"""


def test_healthz_is_liveness_and_readyz_names_the_failed_dependency(tmp_path: Path) -> None:
    with (
        private_redis(tmp_path) as (redis_url, redis_proc),
        run_gateway(tmp_path, FAST_TIMEOUTS, env={"IMAGEGATE_REDIS_URL": redis_url}) as gw,
    ):
        ready = httpx.get(f"{gw.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "redis": "ok"}

        redis_proc.kill()
        redis_proc.wait()
        started = time.monotonic()
        ready = httpx.get(f"{gw.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["redis"]
        assert ready.json()["checks"]["redis"] == "failed: ConnectionError"  # details: the log
        assert ready.headers["retry-after"]
        assert time.monotonic() - started < 10
        print(f"/readyz with Redis dead: 503 after {time.monotonic() - started:.2f} s")
        assert httpx.get(f"{gw.url}/healthz", timeout=10).status_code == 200

        # Storage gone (the image directory removed): named too, and url responses are a
        # 503 to retry, logged and counted (b64_json ones still work).
        (gw.data_dir / "images").rename(gw.data_dir / "images-moved")
        ready = httpx.get(f"{gw.url}/readyz", timeout=30)
        assert ready.json()["failed"] == ["redis", "storage"]
        auth = {"Authorization": f"Bearer {gw.admin_key}"}
        as_url = {**SANDBOX, "response_format": "url"}
        stored = httpx.post(f"{gw.v1}/images/generations", json=as_url, headers=auth, timeout=30)
        assert stored.status_code == 503, stored.text
        assert stored.json()["error"]["code"] == "storage_unavailable"
        assert stored.headers["retry-after"]
        scrape = httpx.get(f"{gw.url}/metrics", timeout=30).text
        assert 'imagegate_storage_errors_total{operation="put"} 1.0' in scrape
        assert "storage unavailable: put on directory" in gw.log()


@pytest.mark.postgres
def test_frozen_postgresql_fails_fast_with_503_and_recovers(tmp_path: Path, pg_url: str) -> None:
    url = make_url(pg_url)
    with freezable_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        with run_gateway(tmp_path, FAST_TIMEOUTS, env={"IMAGEGATE_DATABASE_URL": proxied}) as gw:
            key = gw.create_key(credits=5)
            headers = {"Authorization": f"Bearer {key}"}
            generations = f"{gw.v1}/images/generations"
            assert httpx.post(generations, json=SANDBOX, headers=headers, timeout=30).is_success

            proxy.freeze()
            for _ in range(2):  # a pooled connection, then a new one: both bounded
                started = time.monotonic()
                frozen = httpx.post(generations, json=SANDBOX, headers=headers, timeout=60)
                elapsed = time.monotonic() - started
                assert frozen.status_code == 503, frozen.text
                assert frozen.json()["error"]["code"] == "service_unavailable"
                assert frozen.headers["retry-after"]
                assert elapsed < 10, elapsed  # it hung for 17-19 s without timeouts
                print(f"frozen PostgreSQL: 503 after {elapsed:.2f} s")
            started = time.monotonic()
            ready = httpx.get(f"{gw.url}/readyz", timeout=30)
            assert ready.status_code == 503 and "database" in ready.json()["failed"]
            print(f"/readyz with PostgreSQL frozen: 503 after {time.monotonic() - started:.2f} s")

            proxy.thaw()
            deadline = time.monotonic() + 30
            while True:
                again = httpx.post(generations, json=SANDBOX, headers=headers, timeout=30)
                if again.is_success or time.monotonic() > deadline:
                    break
            assert again.is_success, again.text
            log = gw.log()
            # Each outage is one log line, not a traceback.
            assert "database unavailable" in log
            assert "Traceback" not in log


def test_frozen_redis_fails_fast_with_503(tmp_path: Path) -> None:
    with (
        private_redis(tmp_path) as (redis_url, redis_proc),
        run_gateway(tmp_path, FAST_TIMEOUTS, env={"IMAGEGATE_REDIS_URL": redis_url}) as gw,
    ):
        key = gw.create_key(rpm=100)
        headers = {"Authorization": f"Bearer {key}"}
        generations = f"{gw.v1}/images/generations"
        assert httpx.post(generations, json=SANDBOX, headers=headers, timeout=30).is_success
        os.kill(redis_proc.pid, signal.SIGSTOP)  # hung: connections open, nothing answers
        try:
            started = time.monotonic()
            frozen = httpx.post(generations, json=SANDBOX, headers=headers, timeout=60)
            assert frozen.status_code == 503, frozen.text
            assert frozen.headers["retry-after"]
            assert time.monotonic() - started < 10
            print(f"frozen Redis: 503 after {time.monotonic() - started:.2f} s")
            ready = httpx.get(f"{gw.url}/readyz", timeout=30)
            assert ready.status_code == 503 and ready.json()["failed"] == ["redis"]
        finally:
            os.kill(redis_proc.pid, signal.SIGCONT)
        assert httpx.post(generations, json=SANDBOX, headers=headers, timeout=30).is_success
        log = gw.log()
        assert "Redis unavailable" in log and "Traceback" not in log


def test_sigterm_drains_then_cuts_as_a_server_cancellation(tmp_path: Path) -> None:
    """In-flight requests get server.drain_s; one still running then is answered 503
    ``server_shutting_down``, its hold returned and its Redis concurrency slot freed."""
    import threading

    import redis

    from fakes.openai_images import FakeOpenAI, serve_fake
    from imagegate.accounts.ledger import Ledger
    from imagegate.db.session import Database

    fake = FakeOpenAI(delay_s=60)
    with (
        serve_fake(fake) as slow,
        private_redis(tmp_path) as (redis_url, _),
        run_gateway(
            tmp_path,
            SLOW_UPSTREAM.format(url=slow.url, drain_s=4),
            env={"IMAGEGATE_REDIS_URL": redis_url},
        ) as gw,
    ):
        key = gw.create_key(credits=1, max_concurrent=1)
        key_id = key.split("_")[1]
        answers: list[httpx.Response] = []

        def call() -> None:
            body = {"model": "test/slow", "prompt": "x", "size": "256x256"}
            answers.append(
                httpx.post(
                    f"{gw.v1}/images/generations",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=60,
                )
            )

        worker = threading.Thread(target=call)
        worker.start()
        deadline = time.monotonic() + 30
        while not fake.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.calls, "the request never reached the upstream"
        assert gw.process is not None
        gw.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        refused = False
        while not refused and worker.is_alive():
            try:
                httpx.get(f"{gw.url}/healthz", timeout=5)
                time.sleep(0.05)
            except httpx.ConnectError:
                refused = True
        # New connections are refused while the request is still being served.
        assert refused and worker.is_alive()
        worker.join(60)
        print(
            f"drain: in-flight request answered {time.monotonic() - signalled:.2f} s after SIGTERM"
        )
        assert gw.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal

        (answer,) = answers
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "server_shutting_down"
        assert answer.headers["retry-after"]
        slots = redis.Redis.from_url(redis_url).zcard(f"imagegate:rl:{key_id}:slots")
        assert slots == 0
        log = gw.log()
        assert '"status": 499' not in log and "client_disconnected" not in log

    db = Database(f"sqlite:///{gw.data_dir / 'imagegate.db'}")
    try:
        entries = Ledger(db, hold_ttl_s=60).entries(key_id)
        assert [e.kind for e in entries] == ["top_up", "hold", "release"] or [
            e.kind for e in entries
        ][-2:] == ["hold", "release"]
        assert entries[-1].balance_micro == 1_000_000  # nothing charged
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT status, error_code FROM usage_records WHERE key_id = ?", (key_id,)
            ).all()
        assert [tuple(r) for r in rows] == [(503, "server_shutting_down")]
    finally:
        db.dispose()


def test_readyz_turns_503_as_soon_as_draining_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.testclient import TestClient

    from imagegate.app import create_app
    from imagegate.config import load_settings

    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path))
    for name in ("IMAGEGATE_CONFIG", "IMAGEGATE_DATABASE_URL", "IMAGEGATE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    app = create_app(load_settings())
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        app.state.drain.begin()  # what SIGTERM does
        draining = client.get("/readyz")
        assert draining.status_code == 503 and draining.json()["status"] == "draining"
        assert client.get("/healthz").status_code == 200


def test_a_missing_postgresql_driver_names_the_extra(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from imagegate.cli import main\n"
        "sys.argv = ['imagegate', 'serve', '--port', '1']\n"
        "main()\n"
    )
    env = {
        **os.environ,
        "IMAGEGATE_DATA_DIR": str(tmp_path),
        "IMAGEGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2
    assert "pip install 'imagegate[postgres]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_ends_a_stream_still_running_after_drain_s_with_an_error_event(
    tmp_path: Path,
) -> None:
    import json

    from fakes.openai_images import FakeOpenAI, serve_fake
    from imagegate.db.session import Database

    config = """
server: {{drain_s: 1}}
providers:
  - {{id: oa-slow, type: openai, base_url: "{url}/v1", api_key: sk-fake}}
models:
  - id: test/stream-slow
    sizes: [256x256]
    endpoints:
      - {{provider: oa-slow, upstream_model: gpt-image-2, pricing: {{per_image: 0.04}}}}
"""
    fake = FakeOpenAI(stream_delay_s=60)
    with serve_fake(fake) as slow, run_gateway(tmp_path, config.format(url=slow.url)) as gw:
        key = gw.create_key(credits=1)
        key_id = key.split("_")[1]
        body = {
            "model": "test/stream-slow",
            "prompt": "slow",
            "size": "256x256",
            "stream": True,
            "partial_images": 2,
        }
        events: list[dict[str, object]] = []
        with httpx.stream(
            "POST",
            f"{gw.v1}/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(json.loads(line[len("data: ") :]))
                if len(events) == 1:
                    assert gw.process is not None
                    gw.process.send_signal(signal.SIGTERM)
        assert events[0]["type"] == "image_generation.partial_image"
        last = events[-1]
        assert last["type"] == "error"
        assert last["error"]["code"] == "server_shutting_down"  # type: ignore[index]
        assert gw.process is not None
        gw.process.wait(60)

    db = Database(f"sqlite:///{gw.data_dir / 'imagegate.db'}")
    try:
        with db.engine.connect() as conn:
            usage = conn.exec_driver_sql(
                "SELECT status, error_code FROM usage_records WHERE key_id = ?", (key_id,)
            ).all()
            kinds = conn.exec_driver_sql(
                "SELECT kind FROM ledger_entries WHERE key_id = ? ORDER BY id", (key_id,)
            ).all()
        assert [tuple(r) for r in usage] == [(503, "server_shutting_down")]
        assert [k for (k,) in kinds][-2:] == ["hold", "release"]
    finally:
        db.dispose()


def test_timeout_and_drain_settings_are_read_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagegate.config import ConfigError, load_settings

    monkeypatch.delenv("IMAGEGATE_CONFIG", raising=False)
    config = tmp_path / "imagegate.yaml"
    config.write_text(
        "routing: {deadline_s: 120}\n"
        "database: {connect_timeout_s: 3, statement_timeout_s: 9}\n"
        "redis: {connect_timeout_s: 0.5, timeout_s: 1.5}\n"
    )
    settings = load_settings(config)
    timeouts = settings.timeouts
    assert (timeouts.db_connect_s, timeouts.db_statement_s) == (3, 9)
    assert (timeouts.redis_connect_s, timeouts.redis_s) == (0.5, 1.5)
    assert settings.effective_drain_s == 120  # default: routing.deadline_s
    config.write_text("server: {drain_s: 30}\nredis: {timout_s: 1}\n")
    with pytest.raises(ConfigError, match=r"line 2: redis.timout_s: unknown key"):
        load_settings(config)
    config.write_text("server: {drain_s: 30}\n")
    assert load_settings(config).effective_drain_s == 30


def test_sigterm_lets_a_request_within_drain_s_finish_normally(tmp_path: Path) -> None:
    """The fix for 15 s requests cut at 11 s: in-flight work gets server.drain_s."""
    import threading

    from fakes.openai_images import FakeOpenAI, serve_fake

    fake = FakeOpenAI(delay_s=12)  # longer than uvicorn's old fixed 10 s drain
    with (
        serve_fake(fake) as slow,
        run_gateway(tmp_path, SLOW_UPSTREAM.format(url=slow.url, drain_s=60)) as gw,
    ):
        answers: list[httpx.Response] = []
        body = {"model": "test/slow", "prompt": "x", "size": "256x256"}
        auth = {"Authorization": f"Bearer {gw.admin_key}"}
        url = f"{gw.v1}/images/generations"
        worker = threading.Thread(
            target=lambda: answers.append(httpx.post(url, json=body, headers=auth, timeout=60))
        )
        worker.start()
        deadline = time.monotonic() + 30
        while not fake.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.process is not None
        gw.process.send_signal(signal.SIGTERM)
        worker.join(60)
        (answer,) = answers
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"][0]["b64_json"]
        assert gw.process.wait(30) in (0, -signal.SIGTERM)
