"""The API layer in process: the real app from ``imagegate.app.create_app``, started by its
own lifespan (migrations, key store, sandbox engine), driven through ``httpx.ASGITransport``.

The same contract the subprocess tests in ``tests/e2e/`` check over TCP, here without a
process or a port, so a failure points at the API layer and its traceback is in this test.
The data dir is the test's own; the database is its SQLite file.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from books import assert_books_balance
from gateway import ADMIN_KEY, SIGNING_SECRET
from imagegate.app import create_app
from imagegate.config import load_settings

# A priced sandbox model, so a generation moves money and the books have something to check.
CONFIG = """
models:
  - id: test/priced-sandbox
    sizes: [64x64, 128x96]
    endpoints:
      - {provider: sandbox, upstream_model: sandbox, pricing: {per_image: 0.01}}
"""
# ASGITransport names this address as the server the request came in on; the Host guard
# keeps a Host equal to it, so image URLs are built as a client on this address sees them.
BASE = "http://127.0.0.1:8080"
GEN = "/v1/images/generations"


@pytest.fixture
async def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, inside its lifespan: what a worker process runs, minus uvicorn."""
    for name in ("IMAGEGATE_CONFIG", "IMAGEGATE_DATABASE_URL", "IMAGEGATE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("IMAGEGATE_STORAGE_URL", raising=False)
    monkeypatch.setenv("IMAGEGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGEGATE_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("IMAGEGATE_SIGNING_SECRET", SIGNING_SECRET)
    config = tmp_path / "imagegate.yaml"
    config.write_text(CONFIG)
    app = create_app(load_settings(config))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, timeout=30) as http:
            yield http


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'imagegate.db'}"


def assert_error(
    response: httpx.Response, status: int, kind: str, code: str, param: str | None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (kind, code, param), error
    assert error["message"]


async def new_key(client: httpx.AsyncClient, **fields: object) -> str:
    created = await client.post(
        "/v1/admin/keys", json={"name": "user", **fields}, headers=auth(ADMIN_KEY)
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer ig_unknown_secret"},
        {"Authorization": "Bearer ig_testadmin01_wrong"},
        {"Authorization": ADMIN_KEY},  # the key without its scheme
    ],
)
async def test_401_without_a_valid_key_is_an_openai_envelope(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(GEN, json={"model": "sandbox", "prompt": "x"}, headers=headers)
    assert_error(response, 401, "invalid_request_error", "invalid_api_key", None)
    assert response.headers["content-type"].startswith("application/json")


async def test_a_revoked_key_is_401_and_a_user_key_is_not_admin(
    client: httpx.AsyncClient,
) -> None:
    key = await new_key(client)
    admin = await client.get("/v1/admin/keys", headers=auth(key))
    assert_error(admin, 403, "permission_error", "admin_required", None)
    key_id = key.split("_")[1]
    revoked = await client.delete(f"/v1/admin/keys/{key_id}", headers=auth(ADMIN_KEY))
    assert revoked.status_code == 200, revoked.text
    after = await client.post(GEN, json={"model": "sandbox", "prompt": "x"}, headers=auth(key))
    assert_error(after, 401, "invalid_request_error", "invalid_api_key", None)


# -- validation: every 400 names its field --------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "sandbox"}, "missing_required_parameter", "prompt"),
        ({"prompt": "x"}, "missing_required_parameter", "model"),
        ({"model": "sandbox", "prompt": "x", "size": "big"}, "invalid_size", "size"),
        ({"model": "sandbox", "prompt": "x", "size": "10x10"}, "invalid_size", "size"),
        ({"model": "sandbox", "prompt": "x", "n": 11}, "invalid_value", "n"),
        ({"model": "sandbox", "prompt": "x", "n": "two"}, "invalid_type", "n"),
        (
            {"model": "sandbox", "prompt": "x", "output_format": "png", "output_compression": 50},
            "unsupported_parameter",
            "output_compression",
        ),
    ],
)
async def test_400_names_the_field(
    client: httpx.AsyncClient, body: dict[str, object], code: str, param: str
) -> None:
    response = await client.post(GEN, json=body, headers=auth(ADMIN_KEY))
    assert_error(response, 400, "invalid_request_error", code, param)
    assert param in response.json()["error"]["message"]


async def test_a_body_that_is_not_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post(
        GEN,
        content=b"{not json",
        headers={**auth(ADMIN_KEY), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


# -- a generation, its charge and its usage record ----------------------------------


async def test_generation_is_charged_once_and_recorded(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = await new_key(client, credits=0.05)
    response = await client.post(
        GEN,
        json={"model": "test/priced-sandbox", "prompt": "a lighthouse", "n": 2, "size": "128x96"},
        headers=auth(key),
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-cost-usd"] == "0.020000"
    body = response.json()
    assert len(body["data"]) == 2
    for item in body["data"]:
        image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
        assert image.size == (128, 96)

    keys = (await client.get("/v1/admin/keys", headers=auth(ADMIN_KEY))).json()["data"]
    [mine] = [k for k in keys if k["id"] == key.split("_")[1]]
    assert mine["credits_usd"] == pytest.approx(0.03)

    usage = (await client.get("/v1/usage", headers=auth(key))).json()
    assert usage["totals"] == {"requests": 1, "succeeded": 1, "images": 2, "cost_usd": 0.02}
    generation_id = response.headers["x-imagegate-generation-id"]
    record = await client.get(f"/v1/generations/{generation_id}", headers=auth(key))
    assert record.status_code == 200, record.text
    found = record.json()
    assert (found["model"], found["images"], found["status"]) == ("test/priced-sandbox", 2, 200)
    assert found["cost_usd"] == 0.02
    assert_books_balance(database(tmp_path))


async def test_upstream_costs_are_shown_to_admin_keys_only(client: httpx.AsyncClient) -> None:
    """What an upstream bills the operator is the operator's business (as in /v1/usage)."""
    key = await new_key(client, credits=1)
    body = {"model": "test/priced-sandbox", "prompt": "a fox", "size": "64x64", "meta": True}
    response = await client.post(GEN, json=body, headers=auth(key))
    assert response.status_code == 200, response.text
    [attempt] = response.json()["meta"]["attempts"]
    assert attempt["provider"] == "sandbox" and attempt["status"] == 200
    assert "cost_micro" not in attempt

    path = f"/v1/generations/{response.headers['x-imagegate-generation-id']}"
    [mine] = (await client.get(path, headers=auth(key))).json()["attempts"]
    [listed] = (await client.get("/v1/generations", headers=auth(key))).json()["data"]
    assert "cost_micro" not in mine and "cost_micro" not in listed["attempts"][0]
    [seen_by_admin] = (await client.get(path, headers=auth(ADMIN_KEY))).json()["attempts"]
    assert seen_by_admin == {**mine, "cost_micro": seen_by_admin["cost_micro"]}
    assert isinstance(seen_by_admin["cost_micro"], int)


async def test_a_refused_generation_is_not_charged(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = await new_key(client, credits=0.015)
    body = {"model": "test/priced-sandbox", "prompt": "x", "n": 2, "size": "64x64"}
    refused = await client.post(GEN, json=body, headers=auth(key))
    assert_error(refused, 402, "insufficient_quota", "insufficient_credits", None)
    keys = (await client.get("/v1/admin/keys", headers=auth(ADMIN_KEY))).json()["data"]
    [mine] = [k for k in keys if k["id"] == key.split("_")[1]]
    assert mine["credits_usd"] == pytest.approx(0.015)
    usage = (await client.get("/v1/usage", headers=auth(key))).json()
    assert usage["totals"]["cost_usd"] == 0.0
    assert_books_balance(database(tmp_path))


# -- probes and the catalog -----------------------------------------------------------


async def test_readyz_and_healthz_report_ready(client: httpx.AsyncClient) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


async def test_models_lists_the_catalog_with_the_configured_model(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/models", headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    assert models["imagegate/sandbox"]["available"] is True
    assert models["imagegate/sandbox"]["aliases"] == ["sandbox"]
    assert models["test/priced-sandbox"]["available"] is True
    one = await client.get("/v1/models/test/priced-sandbox", headers=auth(ADMIN_KEY))
    assert one.status_code == 200 and one.json()["id"] == "test/priced-sandbox"
    unknown = await client.get("/v1/models/nope/nothing", headers=auth(ADMIN_KEY))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "invalid_request_error"
    anonymous = await client.get("/v1/models")
    assert_error(anonymous, 401, "invalid_request_error", "invalid_api_key", None)
