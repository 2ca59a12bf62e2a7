"""docs/sdk.md's python and bash blocks run, in order, against a real gateway."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PIL

from gateway import RunningGateway, run_gateway
from repo_root import REPO

DOC = REPO / "docs" / "sdk.md"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(python|bash)\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def docs_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("docs")) as gateway:
        yield gateway


def test_every_example_runs(docs_gateway: RunningGateway, tmp_path: Path) -> None:
    key_file = tmp_path / ".imagegate" / "admin-key"
    key_file.parent.mkdir()
    key_file.write_text(docs_gateway.admin_key)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["IMAGEGATE_BASE_URL"] = docs_gateway.v1
    outputs = []
    found = blocks()
    assert len(found) >= 7
    for language, code in found:
        code = code.replace("http://127.0.0.1:8080", docs_gateway.url)
        code = code.replace(".venv/bin/imagegate", str(Path(sys.executable).parent / "imagegate"))
        command = [sys.executable, "-c", code] if language == "python" else ["bash", "-ec", code]
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{code}\n{result.stderr}"
        outputs.append(result.stdout)

    generate, request, edits, errors, _, stream, async_, cli = outputs
    assert generate.strip() == "(512, 512)"
    assert request.startswith("200 sandbox sandbox 0.0")
    assert PIL.open(tmp_path / "lighthouse-1.webp").size == (640, 384)
    assert edits.split() == ["1", "1", "2", "3"]
    assert errors.split() == ["400", "size", "invalid_size"]
    assert stream.split() == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert PIL.open(tmp_path / "fox-final.png").size == (256, 256)
    assert async_.split() == ["4", "image_edit.partial_image", "image_edit.completed"]
    edit_summary = json.loads(cli.splitlines()[-4])
    assert edit_summary["provider"] == "sandbox" and len(edit_summary["files"]) == 1
    sizes = sorted(PIL.open(f).size for f in (tmp_path / "out").iterdir())
    assert sizes == [(256, 256)] * 2 + [(512, 512)] * 3
