"""The official OpenAI SDKs against a running gateway: openai-python (sync, async,
streaming, ``with_raw_response``) and the ``openai`` npm package under Node.

The npm package is installed once per test run into a temporary directory of its own
(``OPENAI_NODE_VERSION`` picks the release line, default 6).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI, NotFoundError, OpenAI

from e2e_support import open_image, png_bytes
from gateway import RunningGateway, run_gateway
from repo_root import TESTS

NODE_SCRIPT = TESTS / "clients" / "openai_node.mjs"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("clients")) as running:
        yield running


@pytest.fixture
def client(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.v1, api_key=gw.admin_key, max_retries=0)


def test_python_sync_generate_and_retrieve_model(client: OpenAI) -> None:
    result = client.images.generate(model="imagegate/sandbox", prompt="a fox", size="96x64")
    assert result.data is not None
    assert open_image(base64.b64decode(result.data[0].b64_json or "")).size == (96, 64)
    model = client.models.retrieve("imagegate/sandbox")
    assert model.id == "imagegate/sandbox" and model.object == "model"
    with pytest.raises(NotFoundError):
        client.models.retrieve("acme/does-not-exist")


async def test_python_async_generate_edit_variation(gw: RunningGateway) -> None:
    async with AsyncOpenAI(base_url=gw.v1, api_key=gw.admin_key, max_retries=0) as client:
        made = await client.images.generate(model="sandbox", prompt="x", size="64x64", n=2)
        edited = await client.images.edit(
            model="sandbox",
            prompt="hat",
            image=[("a.png", png_bytes(64, 64), "image/png"), ("b.png", png_bytes(64, 64))],
        )
        varied = await client.images.create_variation(
            model="sandbox", image=("v.png", png_bytes(72, 72), "image/png")
        )
    assert made.data is not None and len(made.data) == 2
    assert edited.size == "64x64" and varied.size == "72x72"


def test_python_streaming_partials(client: OpenAI) -> None:
    stream = client.images.generate(
        model="sandbox", prompt="streamed", size="64x64", stream=True, partial_images=2
    )
    types = [event.type for event in stream]
    assert types == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]


def test_python_with_raw_response_headers(client: OpenAI) -> None:
    raw = client.images.with_raw_response.generate(model="sandbox", prompt="r", size="64x64")
    assert raw.status_code == 200
    assert raw.headers["x-imagegate-provider"] == "sandbox"
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-imagegate-cost-usd"]) == 0
    data = raw.parse().data
    assert data is not None and data[0].b64_json


@pytest.fixture(scope="session")
def openai_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the ``openai`` npm package installed (once per run)."""
    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("CI"):
            pytest.fail("node and npm are required under CI", pytrace=False)
        pytest.skip("node/npm not installed")
    where = tmp_path_factory.mktemp("openai-node")
    (where / "package.json").write_text('{"private": true, "type": "module"}')
    version = os.environ.get("OPENAI_NODE_VERSION", "6")
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", f"openai@{version}"],
        cwd=where,
        check=True,
        capture_output=True,
        timeout=300,
    )
    shutil.copy(NODE_SCRIPT, where / NODE_SCRIPT.name)
    return where


def test_openai_node_package(openai_node: Path, gw: RunningGateway, tmp_path: Path) -> None:
    (tmp_path / "in.png").write_bytes(png_bytes(64, 64))
    (tmp_path / "mask.png").write_bytes(png_bytes(64, 64, (0, 0, 0, 0), "RGBA"))
    env = {
        **os.environ,
        "GATEWAY_V1": gw.v1,
        "GATEWAY_KEY": gw.admin_key,
        "INPUT_PNG": str(tmp_path / "in.png"),
        "MASK_PNG": str(tmp_path / "mask.png"),
    }
    done = subprocess.run(
        ["node", NODE_SCRIPT.name], cwd=openai_node, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["b64"] == {"count": 2, "size": "96x64", "hasB64": True}
    assert seen["url"] == {"status": 200, "type": "image/png", "pngMagic": True}
    assert seen["edit1"] == {"count": 1, "size": "64x64"}
    assert seen["edit2"] == {"count": 1, "size": "64x64"}
    assert seen["variation"] == {"count": 2, "size": "64x64"}
    assert seen["stream"] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert seen["model"] == {"id": "imagegate/sandbox", "object": "model"}
    assert seen["error"] == {
        "cls": "NotFoundError", "status": 404, "code": "model_not_found", "param": "model",
    }  # fmt: skip
    assert seen["auth"]["cls"] == "AuthenticationError"
    assert (seen["auth"]["status"], seen["auth"]["code"]) == (401, "invalid_api_key")
    assert seen["auth"]["type"] == "invalid_request_error"
