"""Admin key management, /v1/models, health and start-up configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from e2e_support import Stack


def admin(stack: Stack, method: str, path: str, json: object = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{stack.gateway.v1}/admin{path}",
        json=json,
        timeout=10,
        headers={"Authorization": f"Bearer {stack.gateway.admin_key}"},
    )


def test_key_lifecycle_and_immediate_revocation(stack: Stack) -> None:
    created = admin(stack, "POST", "/keys", json={"name": "app", "models": ["sandbox"]})
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert key.startswith(f"ig_{body['id']}_") and body["models"] == ["sandbox"]
    listed = admin(stack, "GET", "/keys").json()["data"]
    entry = next(k for k in listed if k["id"] == body["id"])
    assert "key" not in entry and entry["revoked_at"] is None
    assert key not in stack.gateway.log()  # keys are never logged
    headers = {"Authorization": f"Bearer {key}"}
    generate = {"model": "sandbox", "prompt": "x", "size": "64x64"}
    ok = httpx.post(f"{stack.gateway.v1}/images/generations", json=generate, headers=headers)
    assert ok.status_code == 200
    assert ok.json()["data"][0]["b64_json"][:40] not in stack.gateway.log()
    assert admin(stack, "DELETE", f"/keys/{body['id']}").json()["deleted"] is True
    revoked = httpx.post(f"{stack.gateway.v1}/images/generations", json=generate, headers=headers)
    assert revoked.status_code == 401
    assert admin(stack, "DELETE", "/keys/nosuchkey").status_code == 404


def test_create_key_validation(stack: Stack) -> None:
    bad = admin(stack, "POST", "/keys", json={"name": "x", "models": ["nope/none"]})
    assert bad.status_code == 404 and bad.json()["error"]["param"] == "model"
    missing = admin(stack, "POST", "/keys", json={})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "name"


def test_models_lists_catalog_with_availability(stack: Stack) -> None:
    response = httpx.get(
        f"{stack.gateway.v1}/models", headers={"Authorization": f"Bearer {stack.gateway.admin_key}"}
    )
    models = {m["id"]: m for m in response.json()["data"]}
    sandbox = models["imagegate/sandbox"]
    assert sandbox["available"] is True and sandbox["aliases"] == ["sandbox"]
    assert sandbox["operations"] == ["edit", "generate", "variation"]
    if not os.environ.get("OPENAI_API_KEY"):
        assert models["openai/gpt-image-1"]["available"] is False
    assert models["test/failover"]["available"] is True
    assert httpx.get(f"{stack.gateway.url}/healthz").json()["status"] == "ok"


def test_bad_config_stops_startup_naming_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("providers:\n  - id: x\n    type: openai_compatible\n    status: gamma\n")
    env = {**os.environ, "IMAGEGATE_DATA_DIR": str(tmp_path / "d")}
    result = subprocess.run(
        [sys.executable, "-m", "imagegate", "serve", "--port", "1", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "line 4" in result.stderr and "providers[0].status" in result.stderr
