"""An operator config written from the README, driven by a real client over HTTP.

Models declared with no size rule, ``GET /v1/models/{id}`` with ids containing ``/``,
and ``defaults:`` (the model used when a request names none).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_support import b64, png_bytes
from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway
from imagegate.catalog.catalog import Catalog, merge_providers
from imagegate.catalog.rules import resolve_size
from imagegate.core.errors import InvalidRequest
from repo_root import REPO

CONFIG = """
providers:
  - {{id: my-upstream, type: openai_compatible, base_url: "{up}/v1", api_key: sk-fake}}
models:
  - id: acme/fast-image
    aliases: [fast-image]
    operations: [generate, edit, variation]
    endpoints:
      - {{provider: my-upstream, upstream_model: some-model, pricing: {{per_image: 0.01}}}}
  - id: acme/gpt
    endpoints:
      - {{provider: my-upstream, upstream_model: gpt-image-1, pricing: {{per_image: 0.01}}}}
defaults:
  generate: acme/fast-image
  variation: imagegate/sandbox
"""


@pytest.fixture(scope="module")
def up() -> Iterator[FakeOpenAI]:
    with serve_fake(FakeOpenAI()) as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(up: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("opcfg")
    no_openai = {"OPENAI_API_KEY": ""}  # the built-in openai provider has no credentials
    with run_gateway(tmp, CONFIG.format(up=up.url), env=no_openai) as running:
        yield running


def _post(gw: RunningGateway, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.admin_key}"}
    return httpx.post(f"{gw.v1}{path}", headers=headers, timeout=30, **kwargs)


def _get(gw: RunningGateway, path: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gw.admin_key}"}
    return httpx.get(f"{gw.v1}{path}", headers=headers, timeout=30)


# --- 1. sizes for a model without a size rule ---------------------------------------


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1000x700", "auto"])
def test_pass_through_model_sends_the_callers_size_on(
    gw: RunningGateway, up: FakeOpenAI, size: str
) -> None:
    r = _post(
        gw, "/images/generations", json={"model": "acme/fast-image", "prompt": "a", "size": size}
    )
    assert r.status_code == 200, r.text
    assert up.calls[-1].fields["size"] == size


def test_builtin_upstream_model_inherits_its_size_rules(gw: RunningGateway) -> None:
    ok = _post(
        gw, "/images/generations", json={"model": "acme/gpt", "prompt": "a", "size": "1536x1024"}
    )
    assert ok.status_code == 200, ok.text
    bad = _post(
        gw, "/images/generations", json={"model": "acme/gpt", "prompt": "a", "size": "64x64"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "size"
    assert "1536x1024" in bad.json()["error"]["message"]


def _catalog(endpoint_type: str) -> Catalog:
    model = {
        "id": "acme/local",
        "endpoints": [{"provider": "gpu", "upstream_model": "/models/sd-turbo"}],
    }
    types = {p.id: p.type for p in merge_providers([])}
    return Catalog.load([model], {**types, "gpu": endpoint_type})


def _size(catalog: Catalog, size: str) -> tuple[int, int]:
    spec = catalog.resolve("acme/local")
    return resolve_size(spec, size)


def test_local_model_accepts_multiples_of_8_within_bounds() -> None:
    catalog = _catalog("local")
    assert _size(catalog, "64x64") == (64, 64)
    assert _size(catalog, "512x768") == (512, 768)
    for bad in ("60x60", "513x512", "8192x512"):
        with pytest.raises(InvalidRequest) as caught:
            _size(catalog, bad)
        assert caught.value.param == "size"


def test_pass_through_catalog_entry_takes_any_size() -> None:
    assert _size(_catalog("openai_compatible"), "1000x700") == (1000, 700)


# --- 2. GET /v1/models/{id} --------------------------------------------------------


def test_retrieve_model_with_slash_in_id(gw: RunningGateway) -> None:
    listed = {m["id"]: m for m in _get(gw, "/models").json()["data"]}
    for model_id in ("imagegate/sandbox", "acme/fast-image"):
        r = _get(gw, f"/models/{model_id}")
        assert r.status_code == 200, r.text
        assert r.json() == listed[model_id]
        assert r.json()["object"] == "model"


def test_retrieve_model_by_alias_and_unknown(gw: RunningGateway) -> None:
    assert _get(gw, "/models/fast-image").json()["id"] == "acme/fast-image"
    missing = _get(gw, "/models/acme/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_retrieve_model_the_key_may_not_use_is_not_found(gw: RunningGateway) -> None:
    created = _post(gw, "/admin/keys", json={"name": "limited", "models": ["imagegate/sandbox"]})
    key = created.json()["key"]
    assert _get(gw, "/models/imagegate/sandbox", key).status_code == 200
    assert _get(gw, "/models/acme/fast-image", key).status_code == 404


# --- 3. defaults: {generate, edit, variation} --------------------------------------


def test_default_model_for_generations(gw: RunningGateway, up: FakeOpenAI) -> None:
    r = _post(gw, "/images/generations", json={"prompt": "no model named"})
    assert r.status_code == 200, r.text
    assert r.headers["x-imagegate-provider"] == "my-upstream"
    assert up.calls[-1].fields["model"] == "some-model"


def test_default_model_for_variations_multipart(gw: RunningGateway) -> None:
    files = {"image": ("in.png", png_bytes(64, 64), "image/png")}
    r = _post(gw, "/images/variations", files=files, data={"size": "64x64"})
    assert r.status_code == 200, r.text
    assert r.headers["x-imagegate-provider"] == "sandbox"


def test_no_default_for_edits_keeps_the_400(gw: RunningGateway) -> None:
    r = _post(
        gw,
        "/images/edits",
        json={
            "prompt": "x",
            "images": [{"image_url": "data:image/png;base64," + b64(png_bytes())}],
        },
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model"
    assert "Missing required parameter: 'model'" in r.json()["error"]["message"]


def test_unknown_default_model_stops_start_up(tmp_path: Path) -> None:
    from imagegate.app import check_settings
    from imagegate.config import ConfigError, load_settings

    config = tmp_path / "c.yaml"
    config.write_text("defaults:\n  generate: acme/missing\n")
    with pytest.raises(ConfigError, match=r"defaults\.generate"):
        check_settings(load_settings(config))
    config.write_text("defaults:\n  paint: imagegate/sandbox\n")
    with pytest.raises(ConfigError, match=r"defaults\.paint"):
        load_settings(config)


# --- 4. file ids, 401, 503 without credentials, CLI without a key -------------------


@pytest.mark.parametrize("strip_extension", [False, True])
def test_file_id_works_with_or_without_extension(gw: RunningGateway, strip_extension: bool) -> None:
    made = _post(
        gw,
        "/images/generations",
        json={"model": "sandbox", "prompt": "a", "size": "64x64", "response_format": "url"},
    )
    file_id = made.json()["data"][0]["url"].split("/v1/files/")[1].split("?")[0]
    assert file_id.endswith(".png")
    given = file_id.rsplit(".", 1)[0] if strip_extension else file_id
    body = {"model": "sandbox", "prompt": "b", "images": [{"file_id": given}]}
    r = _post(gw, "/images/edits", json=body)
    assert r.status_code == 200, r.text


def test_bad_key_is_openais_401(gw: RunningGateway) -> None:
    r = httpx.get(f"{gw.v1}/models", headers={"Authorization": "Bearer sk-wrong"})
    assert r.status_code == 401
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")


def test_missing_credentials_names_the_env_var_not_a_param(gw: RunningGateway) -> None:
    r = _post(gw, "/images/generations", json={"model": "openai/gpt-image-1", "prompt": "a"})
    assert r.status_code == 503
    error = r.json()["error"]
    assert "OPENAI_API_KEY" in error["message"]
    assert error["param"] is None


def test_generate_without_a_key_says_how_to_pass_one(gw: RunningGateway, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env["IMAGEGATE_BASE_URL"] = gw.v1
    env["IMAGEGATE_DATA_DIR"] = str(tmp_path / "nothing-here")
    result = subprocess.run(
        [sys.executable, "-m", "imagegate", "generate", "a fox", "-m", "sandbox"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    for hint in ("--api-key", "IMAGEGATE_API_KEY", "admin-key"):
        assert hint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/keys", {"name": "x", "credits": 6.06e307}, "credits"),
        ("/admin/keys", {"name": "x", "rpm": 2**63}, "rpm"),
        ("/admin/keys/anykey/credits", {"amount": 1.6e307}, "amount"),
    ],
)
def test_admin_numbers_out_of_range_are_400_naming_the_field(
    gw: RunningGateway, path: str, body: dict[str, Any], param: str
) -> None:
    """Found by the fuzz run (tests/e2e/test_openapi_fuzz.py): these were 500s."""
    r = _post(gw, path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_readme_config_without_size_rules_takes_its_upstreams_sizes(tmp_path: Path) -> None:
    from imagegate.config import load_settings

    readme = (REPO / "README.md").read_text()
    yaml_block = next(b for b in readme.split("```yaml\n")[1:] if "providers:" in b)
    config = tmp_path / "imagegate.yaml"
    config.write_text(yaml_block.split("```")[0])
    settings = load_settings(config)
    types = {p.id: p.type for p in merge_providers(settings.providers)}
    catalog = Catalog.load(settings.models, types)

    def size(model: str, value: str) -> tuple[int, int]:
        spec = catalog.resolve(model)
        return resolve_size(spec, value)

    assert size("acme/fast-image", "1536x1024") == (1536, 1024)  # gpt-image-1's sizes
    assert size("acme/sd-turbo", "512x768") == (512, 768)  # local: multiples of 8
    assert settings.defaults == {"generate": "acme/fast-image", "variation": "imagegate/sandbox"}
