"""Money correctness through real gateway processes: no deadlocks between workers, every
upstream call on the books, one charge per Idempotency-Key, streams charged on delivery."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from books import assert_books_balance
from fakes.openai_images import FakeOpenAI, serve_fake
from fault_support import private_redis
from gateway import ADMIN_KEY, RunningGateway, run_gateway

CONFIG = """
providers:
  - {{id: up, type: openai_compatible, base_url: "{url}/v1", api_key: sk-fake}}
  - {{id: oa, type: openai, base_url: "{url}/v1", api_key: sk-fake}}
models:
  - id: test/streamed
    sizes: [256x256]
    endpoints:
      - {{provider: oa, upstream_model: gpt-image-2, pricing: {{per_image: 0.01}}}}
  - id: test/priced
    operations: [generate]
    sizes: [256x256]
    endpoints:
      - {{provider: up, upstream_model: up-m, pricing: {{per_image: 0.01}}}}
{extra}
"""

STREAMED = {"model": "test/streamed", "prompt": "a fox", "size": "256x256", "stream": True}
PRICED_B64 = {
    "model": "test/priced",
    "prompt": "a",
    "size": "256x256",
    "response_format": "b64_json",
}


def _books_balance_with_one_upstream_call(gw: RunningGateway) -> None:
    assert_books_balance(f"sqlite:///{gw.data_dir / 'imagegate.db'}", upstream_calls=1)


def _break_the_image_store(gw: RunningGateway) -> None:
    """Every write into the image store fails from now on."""
    images_dir = gw.data_dir / "images"
    shutil.rmtree(images_dir)
    images_dir.write_text("not a directory")


def _deadlocks(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _load(gw: RunningGateway, keys: list[str], total: int, concurrency: int) -> Counter[int]:
    # Idle connections are dropped well before the server's keep-alive timeout (5 s), so a
    # request is never sent on a connection the server is closing (a ReadError, not ours).
    limits = httpx.Limits(max_connections=concurrency, keepalive_expiry=1.0)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> int:
            async with gate:
                response = await client.post(
                    f"{gw.v1}/images/generations",
                    json={"model": "test/priced", "prompt": f"p{i}", "size": "256x256"},
                    headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                )
                return response.status_code

        return Counter(await asyncio.gather(*(one(i) for i in range(total))))


@pytest.mark.postgres
def test_two_workers_on_postgresql_never_deadlock(tmp_path: Path, pg_url: str) -> None:
    """600 requests at c=64 over 8 funded keys on `serve --workers 2`: every request
    served, no deadlock in pg_stat_database, books balanced, every upstream call on them."""
    env = {"IMAGEGATE_DATABASE_URL": pg_url}
    with serve_fake(FakeOpenAI(delay_s=0.02)) as up:
        with run_gateway(
            tmp_path, CONFIG.format(url=up.url, extra=""), env=env, serve_args=["--workers", "2"]
        ) as gw:
            keys = [gw.create_key(credits=100) for _ in range(8)]
            before = _deadlocks(pg_url)
            statuses = asyncio.run(_load(gw, keys, 600, 64))
        time.sleep(0.5)  # the workers exited: their statistics are flushed
        deadlocks = _deadlocks(pg_url) - before
    assert statuses == Counter({200: 600}), statuses
    assert deadlocks == 0
    summary = assert_books_balance(pg_url, upstream_calls=len(up.calls))
    assert summary.upstream_calls == 600
    assert summary.charged_micro == 600 * 10_000


def _balance_micro(gw: RunningGateway, key: str) -> int:
    keys = httpx.get(
        f"{gw.v1}/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ).json()["data"]
    key_id = key.split("_")[1]
    return round(float(next(k for k in keys if k["id"] == key_id)["credits_usd"]) * 1_000_000)


def _generation(gw: RunningGateway, generation_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gw.v1}/generations/{generation_id}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _stream(gw: RunningGateway, key: str, idem: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    body = STREAMED
    return httpx.post(f"{gw.v1}/images/generations", json=body, headers=headers, timeout=30)


def _completed(response: httpx.Response) -> dict[str, object]:
    import orjson

    events = [
        orjson.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    assert events and events[-1]["type"] == "image_generation.completed", response.text
    return dict(events[-1])


def test_a_streamed_request_honours_its_idempotency_key(tmp_path: Path) -> None:
    """The same key and body with stream: true twice: one upstream call, one charge, and
    the repeat replays the completed event (images read back, not kept in the database)."""
    with (
        serve_fake(FakeOpenAI()) as up,
        run_gateway(tmp_path, CONFIG.format(url=up.url, extra="")) as gw,
    ):
        key = gw.create_key(credits=1)
        first = _stream(gw, key, "same-stream")
        second = _stream(gw, key, "same-stream")
        assert first.status_code == second.status_code == 200
        assert second.headers["x-imagegate-idempotent-replay"] == "true"
        assert _completed(second)["b64_json"] == _completed(first)["b64_json"]
        assert len(up.calls) == 1
        assert _balance_micro(gw, key) == 990_000
        stored = _stored_bodies(gw)
        assert stored and all(b'b64_json"' not in body for body in stored)
    _books_balance_with_one_upstream_call(gw)


def _stored_bodies(gw: RunningGateway) -> list[bytes]:
    import sqlite3

    with sqlite3.connect(gw.data_dir / "imagegate.db") as conn:
        rows = conn.execute("SELECT response_body FROM idempotency_records").fetchall()
    return [bytes(row[0]) for row in rows if row[0] is not None]


def test_idempotent_replays_keep_image_references_not_bytes(tmp_path: Path) -> None:
    with (
        serve_fake(FakeOpenAI()) as up,
        run_gateway(tmp_path, CONFIG.format(url=up.url, extra="")) as gw,
    ):
        key = gw.create_key(credits=1)
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "plain-1"}
        body = PRICED_B64
        first = httpx.post(f"{gw.v1}/images/generations", json=body, headers=headers)
        again = httpx.post(f"{gw.v1}/images/generations", json=body, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.json()["data"] == first.json()["data"]
        assert all(b'b64_json"' not in stored for stored in _stored_bodies(gw))
        assert _balance_micro(gw, key) == 990_000
    _books_balance_with_one_upstream_call(gw)


def test_a_client_leaving_a_stream_before_its_end_is_not_charged(tmp_path: Path) -> None:
    """The client leaves after the first partial image: nothing charged, and the record
    names the provider and the upstream call (cancelled, at its worst-case price)."""
    with (
        serve_fake(FakeOpenAI(stream_delay_s=2.0)) as up,
        run_gateway(tmp_path, CONFIG.format(url=up.url, extra="")) as gw,
    ):
        key = gw.create_key(credits=1)
        body = {**STREAMED, "partial_images": 1}
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.stream(
            "POST", f"{gw.v1}/images/generations", json=body, headers=headers, timeout=30
        ) as response:
            generation_id = response.headers["x-imagegate-generation-id"]
            for line in response.iter_lines():
                if line.startswith("data: "):
                    assert "partial_image" in line
                    break  # the first partial image; then leave
        record = _wait_for_record(gw, generation_id)
        assert _balance_micro(gw, key) == 1_000_000
        assert record["status"] == 499 and record["cost_usd"] == 0
        assert record["provider"] == "oa"
        (attempt,) = record["attempts"]
        assert attempt["status"] == "cancelled" and attempt["cost_micro"] == 10_000
    _books_balance_with_one_upstream_call(gw)


def _wait_for_record(gw: RunningGateway, generation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        response = httpx.get(
            f"{gw.v1}/generations/{generation_id}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        )
        if response.status_code == 200:
            return dict(response.json())
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_hosting_failure_after_the_upstream_keeps_provider_and_cost(tmp_path: Path) -> None:
    """The upstream answered (and bills) but the image cannot be hosted: the caller gets
    an error and is not charged; the record names the provider and the paid call."""
    with (
        serve_fake(FakeOpenAI()) as up,
        run_gateway(tmp_path, CONFIG.format(url=up.url, extra="")) as gw,
    ):
        key = gw.create_key(credits=1)
        _break_the_image_store(gw)
        response = httpx.post(
            f"{gw.v1}/images/generations",
            json={
                "model": "test/priced",
                "prompt": "a",
                "size": "256x256",
                "response_format": "url",
            },
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code >= 500
        generation_id = _only_generation(gw)
        record = _generation(gw, generation_id)
        assert record["provider"] == "up" and record["upstream_model"] == "up-m"
        (attempt,) = record["attempts"]
        assert attempt["status"] == 200 and attempt["cost_micro"] == 10_000
        assert _balance_micro(gw, key) == 1_000_000
        spend = httpx.get(
            f"{gw.v1}/usage", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        ).json()
        assert spend["totals"]["cost_usd"] == 0
        assert spend["upstream"]["cost_usd"] == 0.01
        assert spend["upstream"]["by_provider"][0]["provider"] == "up"
        own = httpx.get(f"{gw.v1}/usage", headers={"Authorization": f"Bearer {key}"}).json()
        assert "upstream" not in own  # what upstreams bill is the operator's business
        scrape = httpx.get(f"{gw.url}/metrics", timeout=30).text
        assert 'imagegate_upstream_cost_usd_total{outcome="ok",provider="up"} 0.01' in scrape
    _books_balance_with_one_upstream_call(gw)


def _only_generation(gw: RunningGateway) -> str:
    import sqlite3

    with sqlite3.connect(gw.data_dir / "imagegate.db") as conn:
        (row,) = conn.execute("SELECT generation_id FROM usage_records").fetchall()
    return str(row[0])


def test_redis_dying_after_the_upstream_call_still_answers_and_charges_once(
    tmp_path: Path,
) -> None:
    """Redis (concurrency slots) dies while the request is upstream: the caller still gets
    its image and is charged once. A retry with the same Idempotency-Key while Redis is
    down is refused at admission (limits fail closed, before the body is read) and costs
    nothing; once Redis is back it is a replay of the first response."""
    with private_redis(tmp_path) as (redis_url, redis_proc):
        with (
            serve_fake(FakeOpenAI(delay_s=1.0)) as up,
            run_gateway(
                tmp_path,
                CONFIG.format(url=up.url, extra=""),
                env={"IMAGEGATE_REDIS_URL": redis_url},
            ) as gw,
        ):
            key = gw.create_key(credits=1, max_concurrent=2)
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "redis-dies"}
            body = PRICED_B64
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    httpx.post,
                    f"{gw.v1}/images/generations",
                    json=body,
                    headers=headers,
                    timeout=30,
                )
                deadline = time.monotonic() + 20
                while not up.calls:  # the request is upstream now
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                redis_proc.kill()
                redis_proc.wait()
                first = pending.result()
            assert first.status_code == 200, first.text
            assert first.json()["data"][0]["b64_json"]
            refused = httpx.post(
                f"{gw.v1}/images/generations", json=body, headers=headers, timeout=30
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "service_unavailable"
            assert _balance_micro(gw, key) == 990_000
            port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
            with private_redis(tmp_path, port=port):  # Redis is back
                retry = httpx.post(
                    f"{gw.v1}/images/generations", json=body, headers=headers, timeout=30
                )
                assert retry.status_code == 200, retry.text
                assert retry.headers["x-imagegate-idempotent-replay"] == "true"
                assert retry.json()["data"] == first.json()["data"]
                assert len(up.calls) == 1
                assert _balance_micro(gw, key) == 990_000
        _books_balance_with_one_upstream_call(gw)


def test_storage_down_when_the_replay_is_kept_still_answers_and_charges_once(
    tmp_path: Path,
) -> None:
    """The image store fails while the response is being kept for replays: the caller gets
    its image and one charge; the retry replays the response (without its image bytes)."""
    with (
        serve_fake(FakeOpenAI()) as up,
        run_gateway(tmp_path, CONFIG.format(url=up.url, extra="")) as gw,
    ):
        key = gw.create_key(credits=1)
        _break_the_image_store(gw)
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "store-down"}
        body = PRICED_B64
        url = f"{gw.v1}/images/generations"
        first = httpx.post(url, json=body, headers=headers, timeout=30)
        assert first.status_code == 200, first.text
        assert first.json()["data"][0]["b64_json"], first.text[:300]
        retry = httpx.post(url, json=body, headers=headers, timeout=30)
        assert retry.status_code == 200 and retry.headers["x-imagegate-idempotent-replay"]
        assert retry.json()["data"][0]["b64_json"] is None
        assert retry.json()["created"] == first.json()["created"]
        assert len(up.calls) == 1 and _balance_micro(gw, key) == 990_000
    _books_balance_with_one_upstream_call(gw)


@pytest.mark.postgres
def test_database_lost_during_the_upstream_call_charges_at_most_once(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL becomes unreachable while a request is upstream: it cannot be settled, so
    it is not charged (503); its hold expires; the retry with the same Idempotency-Key runs
    once the database is back and is charged once."""
    from sqlalchemy.engine import make_url

    from tcp_proxy import tcp_proxy

    target = make_url(pg_url)
    extra = "credits: {hold_ttl_s: 2}\nrouting: {deadline_s: 1.5}\n"
    with tcp_proxy(target.port or 5432) as proxy:
        via_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
        with (
            serve_fake(FakeOpenAI(delay_s=1.0)) as up,
            run_gateway(
                tmp_path,
                CONFIG.format(url=up.url, extra=extra),
                env={"IMAGEGATE_DATABASE_URL": via_proxy},
            ) as gw,
        ):
            key = gw.create_key(credits=1)
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "db-lost"}
            body = {"model": "test/priced", "prompt": "a", "size": "256x256"}
            url = f"{gw.v1}/images/generations"
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(httpx.post, url, json=body, headers=headers, timeout=30)
                deadline = time.monotonic() + 20
                while not up.calls:  # the request is upstream now
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                proxy.cut()
                first = pending.result()
            assert first.status_code == 503, first.text
            proxy.restore()
            deadline = time.monotonic() + 30
            while True:  # 409 while the first's pending record stands (its TTL: the hold's)
                retry = httpx.post(url, json=body, headers=headers, timeout=30)
                if retry.status_code == 200:
                    break
                assert retry.status_code in (409, 503), retry.text
                assert time.monotonic() < deadline
                time.sleep(0.3)
            deadline = time.monotonic() + 30
            while _balance_micro(gw, key) != 990_000:  # the first's hold expires back
                assert time.monotonic() < deadline, _balance_micro(gw, key)
                time.sleep(0.2)
            again = httpx.post(url, json=body, headers=headers, timeout=30)
            assert again.headers["x-imagegate-idempotent-replay"] == "true"
            assert len(up.calls) == 2 and _balance_micro(gw, key) == 990_000
    summary = assert_books_balance(pg_url)
    assert summary.charged_micro == 10_000


def test_a_stream_that_dies_after_a_partial_keeps_its_provider_and_call(tmp_path: Path) -> None:
    """The upstream drops the stream after its first partial image: the caller gets an error
    event and no charge; the record names the provider and the failed call."""
    with (
        serve_fake(FakeOpenAI(stream_drop_after=1)) as up,
        run_gateway(tmp_path, CONFIG.format(url=up.url, extra="")) as gw,
    ):
        key = gw.create_key(credits=1)
        body = {**STREAMED, "partial_images": 1}
        response = httpx.post(
            f"{gw.v1}/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 200 and "event: error" in response.text
        record = _wait_for_record(gw, response.headers["x-imagegate-generation-id"])
        assert record["status"] == 502 and record["cost_usd"] == 0
        assert (record["provider"], record["upstream_model"]) == ("oa", "gpt-image-2")
        (attempt,) = record["attempts"]
        assert attempt["provider"] == "oa" and attempt["status"] != 200
        assert _balance_micro(gw, key) == 1_000_000
    _books_balance_with_one_upstream_call(gw)
