"""The `imagegate` CLI through subprocess, the config loader, and form-field folding."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route

from cli_support import cli
from e2e_support import Stack
from imagegate.api.fields import fold_form_fields
from imagegate.api.middleware import RequestContextMiddleware
from imagegate.config import ConfigError, load_settings


def test_keys_cli_create_use_list_revoke(stack: Stack) -> None:
    data_dir = stack.gateway.data_dir
    created = cli("keys", "create", "--name", "from-cli", "--models", "sandbox", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ig_")
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "sandbox", "prompt": "x", "size": "64x64"}
    url = f"{stack.gateway.v1}/images/generations"
    assert httpx.post(url, json=body, headers=headers).status_code == 200
    listed = cli("keys", "list", data_dir=data_dir)
    key_id = key.split("_")[1]
    assert key_id in listed.stdout and key not in listed.stdout
    assert cli("keys", "revoke", key_id, data_dir=data_dir).returncode == 0
    # Another process revoked it: the gateway refuses it within REVOCATION_BOUND_S (1 s).
    deadline = time.monotonic() + 10
    while httpx.post(url, json=body, headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        time.sleep(0.1)
    assert cli("keys", "revoke", "nosuchkey", data_dir=data_dir).returncode == 1


def test_models_cli_lists_sandbox(tmp_path: Path) -> None:
    result = cli("models", data_dir=tmp_path)
    assert result.returncode == 0 and "imagegate/sandbox" in result.stdout


def test_config_env_expansion_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "secret")
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n"
        "  - id: up\n    type: openai_compatible\n    base_url: ${UP_URL:-http://x/v1}\n"
        "    api_key: ${UP_KEY}\n"
        "routing: {max_attempts: 2}\n"
    )
    settings = load_settings(config)
    provider = settings.providers[0]
    assert (provider.base_url, provider.api_key) == ("http://x/v1", "secret")
    assert settings.routing.max_attempts == 2
    for text, expected in [
        ("bogus: 1\n", "line 1: bogus: unknown key"),
        ("routing:\n  max_attempts: zero\n", "line 2: routing.max_attempts"),
        ("providers:\n  - type: sandbox\n", "line 2: providers[0]: missing required key 'id'"),
        ("providers: [\n", "invalid YAML"),
    ]:
        config.write_text(text)
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            load_settings(config)


def test_bracket_encoded_fields_fold_into_nested_values() -> None:
    folded = fold_form_fields(
        [
            ("provider[order][]", "a"),
            ("provider[order][]", "b"),
            ("provider[include_alpha]", "true"),
            ("image[]", "u1"),
            ("image[]", "u2"),
            ("image[2]", "u3"),
            ("prompt", "p"),
        ]
    )
    assert folded == {
        "provider": {"order": ["a", "b"], "include_alpha": "true"},
        "image": ["u1", "u2", "u3"],
        "prompt": "p",
    }


async def test_unhandled_error_is_500_envelope_with_request_id() -> None:
    async def boom(request: Request) -> None:
        raise RuntimeError("secret internal detail")

    app = Starlette(
        routes=[Route("/boom", boom)], middleware=[Middleware(RequestContextMiddleware)]
    )  # as create_app does
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["type"] == "server_error" and request_id in error["message"]
    assert "secret internal detail" not in response.text
