"""``imagegate generate|edit|vary`` through a subprocess against a real gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image as PIL

from e2e_support import png_bytes
from imagegate.client import ApiClient, Configuration, ImageGenerationResponse, ImagesApi
from sdk_support import SdkStack, sdk_stack_fixture  # noqa: F401


def cli(
    stack: SdkStack, *args: str, cwd: Path, key: str | None = None, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env["IMAGEGATE_BASE_URL"] = stack.v1
    if key is not None:
        env["IMAGEGATE_API_KEY"] = key
    if data_dir is not None:
        env["IMAGEGATE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "imagegate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_saves_images_and_prints_provider_cost_paths(
    sdk_stack: SdkStack, tmp_path: Path
) -> None:
    key = sdk_stack.gateway.admin_key
    result = cli(
        sdk_stack, "generate", "a red fox", "-m", "sandbox", "-n", "2", "--size", "96x64",
        "-o", "out", cwd=tmp_path, key=key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 2
    assert all(PIL.open(f).size == (96, 64) and PIL.open(f).format == "PNG" for f in files)
    assert "provider sandbox" in result.stdout and "$0.0000" in result.stdout
    for f in files:
        assert str(Path("out") / f.name) in result.stdout


def test_generate_json_and_priced_model(sdk_stack: SdkStack, tmp_path: Path) -> None:
    result = cli(
        sdk_stack, "generate", "x", "-m", "test/priced", "--size", "64x80", "-f", "webp",
        "-o", str(tmp_path), "--json", cwd=tmp_path, key=sdk_stack.gateway.admin_key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["provider"] == "sandbox" and summary["model"] == "test/priced"
    assert summary["size"] == "64x80" and summary["generation_id"].startswith("gen_")
    config = Configuration(host=sdk_stack.v1, access_token=sdk_stack.gateway.admin_key)
    same = ImagesApi(ApiClient(config)).create_image(
        model="test/priced", prompt="x", size="64x80", output_format="webp", meta=True
    )
    assert isinstance(same, ImageGenerationResponse) and same.meta is not None
    assert summary["cost_usd"] == same.meta.cost_usd  # the gateway's own figure
    assert [PIL.open(f).format for f in summary["files"]] == ["WEBP"]
    assert summary["files"][0].endswith(".webp")


def test_edit_several_images_with_mask_and_vary(sdk_stack: SdkStack, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(80, 48))
    (tmp_path / "m.png").write_bytes(png_bytes(80, 48, (0, 0, 0, 0), "RGBA"))
    key = sdk_stack.gateway.admin_key
    result = cli(
        sdk_stack, "edit", "a.png", sdk_stack.image_url(), "add a hat", "--mask", "m.png",
        "-o", "edits", "--json", cwd=tmp_path, key=key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    assert len(files) == 1 and PIL.open(files[0]).size == (80, 48)

    result = cli(
        sdk_stack, "vary", "a.png", "-n", "2", "--size", "64x64", "-o", "vars",
        cwd=tmp_path, key=key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "vars").iterdir())
    assert [PIL.open(f).size for f in files] == [(64, 64), (64, 64)]


def test_server_error_exits_non_zero_with_its_message(sdk_stack: SdkStack, tmp_path: Path) -> None:
    key = sdk_stack.gateway.admin_key
    result = cli(sdk_stack, "generate", "x", "--size", "9x9", cwd=tmp_path, key=key)
    assert result.returncode == 1
    assert "Invalid size '9x9'" in result.stderr and "(param: size)" in result.stderr
    assert list(tmp_path.iterdir()) == []

    result = cli(sdk_stack, "vary", "nothing.png", cwd=tmp_path, key=key)
    assert result.returncode == 2 and "no such image file: nothing.png" in result.stderr

    result = cli(sdk_stack, "generate", "x", "-m", "no/such", "--json", cwd=tmp_path, key=key)
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["status"] == 404 and body["error"]["param"] == "model"


def test_key_defaults_to_the_data_dirs_admin_key(sdk_stack: SdkStack, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin-key").write_text(sdk_stack.gateway.admin_key + "\n")
    ok = cli(sdk_stack, "generate", "x", "--size", "64x64", "--json", cwd=tmp_path, data_dir=data)
    assert ok.returncode == 0, ok.stderr
    (data / "admin-key").write_text("ig_wrong_" + "z" * 40)
    bad = cli(sdk_stack, "generate", "x", "--size", "64x64", cwd=tmp_path, data_dir=data)
    assert bad.returncode == 1 and "error 401" in bad.stderr
