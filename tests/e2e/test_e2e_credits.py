"""Credits, usage, idempotency and rate limits through a real gateway process."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from books import assert_books_balance, gateway_database
from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import ADMIN_KEY, RunningGateway, run_gateway
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.usage import UsageBook
from imagegate.db.session import Database

PRICE = 0.01  # USD per image of test/priced

CONFIG = """
providers:
  - {{id: up, type: openai_compatible, base_url: "{url}/v1", api_key: sk-fake}}
  - {{id: down, type: openai_compatible, base_url: "{down}/v1", api_key: sk-fake}}
models:
  - id: test/priced
    operations: [generate]
    sizes: [256x256]
    endpoints:
      - {{provider: up, upstream_model: up-m, pricing: {{per_image: {price}}}}}
  - id: test/broken
    sizes: [256x256]
    endpoints:
      - {{provider: down, upstream_model: down-m, pricing: {{per_image: {price}}}}}
  - id: test/streamed
    operations: [generate, edit]
    free_size: {{min_side: 64, max_side: 1024}}
    endpoints:
      - {{provider: sandbox, upstream_model: sandbox, pricing: {{per_image: {price}}}}}
{extra}
"""


def _config(fake: FakeOpenAI, down: FakeOpenAI, extra: str = "") -> str:
    return CONFIG.format(url=fake.url, down=down.url, price=PRICE, extra=extra)


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with serve_fake(FakeOpenAI()) as up, serve_fake(FakeOpenAI(fail_status=500)) as down:
        yield up, down


def _calls(upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> int:
    return sum(len(fake.calls) for fake in upstreams)


def _admin(gw: RunningGateway) -> httpx.Client:
    return httpx.Client(
        base_url=gw.v1, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )


def _generate(gw: RunningGateway, key: str, n: int = 1, **extra: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **extra.pop("headers", {})}  # type: ignore[dict-item]
    body = {"model": "test/priced", "prompt": "a cat", "size": "256x256", "n": n, **extra}
    return httpx.post(f"{gw.v1}/images/generations", json=body, headers=headers, timeout=30)


def _balance(gw: RunningGateway, key: str) -> float:
    with _admin(gw) as admin:
        keys = admin.get("/admin/keys").json()["data"]
    key_id = key.split("_")[1]
    return float(next(k for k in keys if k["id"] == key_id)["credits_usd"])


def test_charges_top_up_usage_and_generation_records(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    with run_gateway(tmp_path, _config(*upstreams)) as gw:
        key = gw.create_key(credits=0.05)
        other = gw.create_key()
        ok = _generate(gw, key, n=2)
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-imagegate-cost-usd"] == "0.020000"
        assert _balance(gw, key) == pytest.approx(0.03)

        refused = _generate(gw, key, n=4)  # may cost 0.04 > 0.03
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "insufficient_credits"
        assert _balance(gw, key) == pytest.approx(0.03)

        with _admin(gw) as admin:
            topped = admin.post(f"/admin/keys/{key.split('_')[1]}/credits", json={"amount": 1})
            assert topped.status_code == 200 and topped.json()["balance_usd"] == 1.03
            bad = admin.post(f"/admin/keys/{key.split('_')[1]}/credits", json={"amount": -1})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "amount"
            missing = admin.post("/admin/keys/nosuchkey/credits", json={"amount": 1})
            assert missing.status_code == 404
            ledger = f"/admin/keys/{key.split('_')[1]}/ledger"
            entries = admin.get(ledger).json()["data"]
            kinds = [e["kind"] for e in entries]
            first = admin.get(ledger, params={"limit": 2}).json()
            rest = admin.get(ledger, params={"limit": 2, "after": first["last_id"]}).json()
            bad_page = admin.get(ledger, params={"after": "x"})
        assert kinds == ["open", "hold", "settle", "topup"]
        assert first["has_more"] and [e["kind"] for e in first["data"]] == kinds[:2]
        assert not rest["has_more"] and [e["kind"] for e in rest["data"]] == kinds[2:]
        assert bad_page.status_code == 400 and bad_page.json()["error"]["param"] == "after"
        assert _generate(gw, key, n=4).status_code == 200
        assert _balance(gw, key) == pytest.approx(0.99)

        generation_id = ok.headers["x-imagegate-generation-id"]
        own = httpx.get(
            f"{gw.v1}/generations/{generation_id}", headers={"Authorization": f"Bearer {key}"}
        )
        assert own.status_code == 200
        record = own.json()
        assert (record["model"], record["provider"], record["images"]) == ("test/priced", "up", 2)
        assert record["cost_usd"] == 0.02 and record["status"] == 200
        assert record["attempts"][0]["provider"] == "up"
        stranger = httpx.get(
            f"{gw.v1}/generations/{generation_id}", headers={"Authorization": f"Bearer {other}"}
        )
        assert stranger.status_code == 404
        with _admin(gw) as admin:
            assert admin.get(f"/generations/{generation_id}").status_code == 200
            everyone = admin.get("/usage", params={"group_by": "key"}).json()
            bad_group = admin.get("/usage", params={"group_by": "colour"})
            bad_limit = admin.get("/usage", params={"group_by": "key", "limit": "0"})
            stray_after = admin.get("/usage", params={"group_by": "model", "after": "k"})
        assert bad_group.status_code == 400 and bad_group.json()["error"]["param"] == "group_by"
        assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"
        assert stray_after.status_code == 400 and stray_after.json()["error"]["param"] == "after"
        assert [g["group"] for g in everyone["data"]] == [key.split("_")[1]]
        assert not everyone["has_more"] and everyone["last_id"] == key.split("_")[1]
        mine = httpx.get(
            f"{gw.v1}/usage",
            params={"group_by": "model"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        # The refused request never reached routing: two requests, six images, $0.06.
        assert mine["totals"] == {"requests": 2, "succeeded": 2, "images": 6, "cost_usd": 0.06}
        assert mine["data"][0]["group"] == "test/priced"
        assert everyone["totals"]["cost_usd"] == pytest.approx(0.06)
        assert_books_balance(gateway_database(gw), upstream_calls=_calls(upstreams))


def test_failed_request_is_not_charged_but_recorded(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    with run_gateway(tmp_path, _config(*upstreams)) as gw:
        key = gw.create_key(credits=1)
        failed = _generate(gw, key, model="test/broken")
        assert failed.status_code == 502
        assert _balance(gw, key) == 1.0
        usage = httpx.get(f"{gw.v1}/usage", headers={"Authorization": f"Bearer {key}"}).json()
        assert usage["totals"] == {"requests": 1, "succeeded": 0, "images": 0, "cost_usd": 0.0}
        assert_books_balance(gateway_database(gw), upstream_calls=_calls(upstreams))


def test_idempotency_key_replays_and_charges_once(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    up, _ = upstreams
    with run_gateway(tmp_path, _config(*upstreams)) as gw:
        key = gw.create_key(credits=1)
        headers = {"Idempotency-Key": "order-42"}
        first = _generate(gw, key, headers=headers)
        again = _generate(gw, key, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["x-imagegate-idempotent-replay"] == "true"
        assert (
            again.headers["x-imagegate-generation-id"] == first.headers["x-imagegate-generation-id"]
        )
        assert len(up.calls) == 1
        assert _balance(gw, key) == pytest.approx(0.99)
        changed = _generate(gw, key, n=2, headers=headers)
        assert changed.status_code == 400
        assert changed.json()["error"]["code"] == "idempotency_key_reused"
        # Another key may use the same Idempotency-Key independently.
        assert (
            "x-imagegate-idempotent-replay"
            not in _generate(gw, gw.create_key(), headers=headers).headers
        )
        assert_books_balance(gateway_database(gw), upstream_calls=_calls(upstreams))


def test_rate_limits_answer_429_with_openai_headers(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    with run_gateway(tmp_path, _config(*upstreams)) as gw:
        key = gw.create_key(rpm=2, ipm=10)
        first = _generate(gw, key)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-remaining-images"] == "9"
        assert _generate(gw, key).status_code == 200
        limited = _generate(gw, key)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "requests_per_minute_exceeded"
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-reset-requests" in limited.headers


async def _burst(gw: RunningGateway, key: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(i: int) -> int:
            response = await client.post(
                f"{gw.v1}/images/generations",
                json={"model": "test/priced", "prompt": f"p{i}", "size": "256x256"},
                headers={"Authorization": f"Bearer {key}"},
            )
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_parallel_requests_spend_exactly_the_balance(tmp_path: Path, database_url: str) -> None:
    """220 parallel requests on a key funded for exactly 37 images: 37 succeed, 183 get 402."""
    k = 37
    with (
        serve_fake(FakeOpenAI(delay_s=0.05)) as up,
        serve_fake(FakeOpenAI(fail_status=500)) as down,
        run_gateway(
            tmp_path, _config(up, down), env={"IMAGEGATE_DATABASE_URL": database_url}
        ) as gw,
    ):
        key = gw.create_key(credits=round(k * PRICE, 2))
        statuses = asyncio.run(_burst(gw, key, 220))
        assert statuses.count(200) == k
        assert statuses.count(402) == 220 - k
        assert _balance(gw, key) == 0
        assert len(up.calls) == k
        assert_books_balance(gateway_database(gw, database_url), upstream_calls=k)


def test_crash_mid_load_leaves_no_hold_open(tmp_path: Path) -> None:
    """SIGKILL the server with requests in flight; after a restart the stale holds are
    returned and the balance equals the initial credit minus what was settled."""
    initial = 5.0
    extra = "credits: {hold_ttl_s: 2}\nrouting: {deadline_s: 1.5}\n"
    with (
        serve_fake(FakeOpenAI(delay_s=0.4)) as up,
        serve_fake(FakeOpenAI(fail_status=500)) as down,
    ):
        config = _config(up, down, extra)
        with run_gateway(tmp_path, config) as gw:
            key = gw.create_key(credits=initial)
            assert gw.process is not None

            async def load_then_kill() -> None:
                task = asyncio.ensure_future(_burst(gw, key, 40))
                while len(up.calls) < 40:  # every request reached the upstream: all in flight
                    await asyncio.sleep(0.01)
                os.kill(gw.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
                await asyncio.gather(task, return_exceptions=True)

            asyncio.run(load_then_kill())
        db = Database(f"sqlite:///{gw.data_dir / 'imagegate.db'}")
        ledger = Ledger(db, hold_ttl_s=2)
        key_id = key.split("_")[1]
        assert ledger.open_holds(key_id) == 40  # the dead process left them open
        with run_gateway(tmp_path, config) as restarted:
            deadline = time.monotonic() + 20
            while ledger.open_holds(key_id) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ledger.open_holds(key_id) == 0
            settled = UsageBook(db).summary(*_all_time(), key_id=key_id)["totals"]["cost_usd"]
            assert _balance(restarted, key) == pytest.approx(initial - settled)
            assert sum(e.amount_micro for e in ledger.entries(key_id)) == round(
                _balance(restarted, key) * 1_000_000
            )
            assert _generate(restarted, key).status_code == 200  # and it still works
            # The killed process's calls in flight left no record (only their expired holds).
            assert_books_balance(gateway_database(restarted))
        db.dispose()


def _all_time() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(days=1)


def test_two_servers_share_one_balance_and_one_rate_limit(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """Two gateway processes on one PostgreSQL and one Redis enforce one limit and balance."""
    env = {"IMAGEGATE_DATABASE_URL": pg_url, "IMAGEGATE_REDIS_URL": redis_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        serve_fake(FakeOpenAI(delay_s=0.05)) as up,
        serve_fake(FakeOpenAI(fail_status=500)) as down,
        run_gateway(tmp_path / "a", _config(up, down), env=env) as first,
        run_gateway(tmp_path / "b", _config(up, down), env=env) as second,
    ):
        limited = first.create_key(rpm=5)
        statuses = [_generate(gw, limited).status_code for gw in (first, second) * 5]
        assert statuses.count(200) == 5 and statuses.count(429) == 5

        funded = second.create_key(credits=0.03)

        async def both() -> list[int]:
            results = await asyncio.gather(_burst(first, funded, 10), _burst(second, funded, 10))
            return results[0] + results[1]

        spent = asyncio.run(both())
        assert spent.count(200) == 3 and spent.count(402) == 17
        assert _balance(first, funded) == 0 == _balance(second, funded)
        assert_books_balance(pg_url, upstream_calls=len(up.calls) + len(down.calls))


def test_streams_are_charged_on_completion(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    from openai import OpenAI

    with run_gateway(tmp_path, _config(*upstreams)) as gw:
        key = gw.create_key(credits=0.015)
        client = OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
        events = list(
            client.images.generate(
                model="test/streamed",
                prompt="a fox",
                size="128x128",
                stream=True,
                partial_images=2,
            )
        )
        assert [e.type for e in events][-1] == "image_generation.completed"
        assert _balance(gw, key) == pytest.approx(0.005)
        refused = httpx.post(
            f"{gw.v1}/images/generations",
            json={"model": "test/streamed", "prompt": "a fox", "size": "128x128", "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert refused.status_code == 402
        with _admin(gw) as admin:
            usage = admin.get("/usage", params={"key_id": key.split("_")[1]}).json()
        assert usage["totals"]["requests"] == 1 and usage["totals"]["cost_usd"] == 0.01
        assert_books_balance(gateway_database(gw))


def test_unreachable_redis_is_503_for_limited_keys_only(
    tmp_path: Path, upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    from gateway import free_port

    env = {"IMAGEGATE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with run_gateway(tmp_path, _config(*upstreams), env=env) as gw:
        limited = _generate(gw, gw.create_key(rpm=10))
        assert limited.status_code == 503
        assert limited.json()["error"]["code"] == "service_unavailable"
        assert "Redis" in limited.json()["error"]["message"]
        assert limited.headers["retry-after"] == "5"
        assert _generate(gw, gw.create_key()).status_code == 200  # no limit to check
