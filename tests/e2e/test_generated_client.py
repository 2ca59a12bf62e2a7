"""The OpenAPI document is a contract a real generator can use: ``openapi-python-client``
builds a client from the live ``/openapi.json`` into a temporary directory, and that
client makes a generation, a multipart edit (one and two files) and a variation, and
reads an error envelope, against a running gateway."""

from __future__ import annotations

import base64
import importlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from e2e_support import open_image, png_bytes
from gateway import RunningGateway, run_gateway

PACKAGE = "imagegate_generated"
GENERATOR_CONFIG = f"""
project_name_override: imagegate-generated
package_name_override: {PACKAGE}
post_hooks: []
content_type_overrides:
  image/png: application/octet-stream
  image/jpeg: application/octet-stream
  image/webp: application/octet-stream
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("generated")) as running:
        yield running


@pytest.fixture(scope="module")
def generated(gw: RunningGateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    where = tmp_path_factory.mktemp("client")
    config = where / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    out = where / PACKAGE
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            "--url", f"{gw.url}/openapi.json",
            "--config", str(config),
            "--output-path", str(out),
            "--meta", "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout  # every operation was understood
    sys.path.insert(0, str(where))
    try:
        yield _load()
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


class _Generated:
    def __init__(self, modules: dict[str, ModuleType]) -> None:
        self.__dict__.update(modules)


def _load() -> _Generated:
    names = {
        "client": "client",
        "models": "models",
        "types": "types",
        "create_image": "api.images.create_image",
        "create_image_edit": "api.images.create_image_edit",
        "create_image_variation": "api.images.create_image_variation",
        "retrieve_model": "api.models.retrieve_model",
    }
    return _Generated({k: importlib.import_module(f"{PACKAGE}.{v}") for k, v in names.items()})


def _client(gen: Any, gw: RunningGateway, key: str | None = None) -> Any:
    return gen.client.AuthenticatedClient(base_url=gw.url, token=key or gw.admin_key)


def _file(gen: Any, name: str, width: int = 64, height: int = 64) -> Any:
    return gen.types.File(io.BytesIO(png_bytes(width, height)), name, "image/png")


def test_generation(generated: Any, gw: RunningGateway) -> None:
    gen = generated
    body = gen.models.CreateImageRequest(prompt="a fox", model="imagegate/sandbox", size="96x64")
    response = gen.create_image.sync_detailed(client=_client(gen, gw), body=body)
    assert response.status_code == 200
    result = response.parsed
    assert isinstance(result, gen.models.ImagesResponse)
    assert open_image(base64.b64decode(result.data[0].b64_json)).size == (96, 64)
    assert response.headers["x-imagegate-provider"] == "sandbox"


@pytest.mark.parametrize("files", [1, 2])
def test_multipart_edit(generated: Any, gw: RunningGateway, files: int) -> None:
    gen = generated
    images = [_file(gen, f"in{i}.png", 80, 64) for i in range(files)]
    body = gen.models.CreateImageEditRequest(
        image=images[0] if files == 1 else images, prompt="add a hat", model="sandbox"
    )
    result = gen.create_image_edit.sync(client=_client(gen, gw), body=body)
    assert isinstance(result, gen.models.ImagesResponse), result
    assert result.size == "80x64"


def test_variation(generated: Any, gw: RunningGateway) -> None:
    gen = generated
    body = gen.models.CreateImageVariationRequest(
        image=_file(gen, "v.png", 72, 72), model="sandbox", n=2
    )
    result = gen.create_image_variation.sync(client=_client(gen, gw), body=body)
    assert isinstance(result, gen.models.ImagesResponse), result
    assert len(result.data) == 2 and result.size == "72x72"


def test_errors_parse_as_the_envelope(generated: Any, gw: RunningGateway) -> None:
    gen = generated
    body = gen.models.CreateImageRequest(prompt="x", model="sandbox", size="1x1")
    bad = gen.create_image.sync(client=_client(gen, gw), body=body)
    assert isinstance(bad, gen.models.ErrorResponse)
    assert (bad.error.param, bad.error.code) == ("size", "invalid_size")
    denied = gen.create_image.sync(client=_client(gen, gw, "ig_nope_nope"), body=body)
    assert isinstance(denied, gen.models.ErrorResponse)
    assert denied.error.code == "invalid_api_key"
    model = gen.retrieve_model.sync("imagegate/sandbox", client=_client(gen, gw))
    assert isinstance(model, gen.models.Model) and model.id == "imagegate/sandbox"
