"""The README's curl and openai-SDK examples run against a real gateway."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from e2e_support import Stack
from repo_root import REPO

README = REPO / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _localise(code: str, stack: Stack, workdir: Path) -> str:
    key_file = workdir / ".imagegate" / "admin-key"
    key_file.parent.mkdir(exist_ok=True)
    key_file.write_text(stack.gateway.admin_key)
    return code.replace("http://127.0.0.1:8080", stack.gateway.url)


def test_readme_python_example(stack: Stack, tmp_path: Path) -> None:
    code = next(b for b in _blocks("python") if "OpenAI(" in b)
    result = subprocess.run(
        [sys.executable, "-c", _localise(code, stack, tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
    assert (tmp_path / "fox.png").read_bytes().startswith(b"\x89PNG")


def test_readme_curl_example(stack: Stack, tmp_path: Path) -> None:
    code = next(b for b in _blocks("bash") if "curl" in b)
    result = subprocess.run(
        ["bash", "-c", _localise(code, stack, tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["data"][0]["url"].startswith(stack.gateway.url)
    assert body["meta"]["provider"] == "sandbox" and body["size"] == "512x512"


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    from imagegate.app import check_settings
    from imagegate.config import load_settings

    config = tmp_path / "imagegate.yaml"
    config.write_text(next(b for b in _blocks("yaml") if "providers:" in b))
    settings = load_settings(config)
    check_settings(settings)
    assert settings.routing.breaker_failure_threshold == 5
    assert settings.models[0]["id"] == "acme/fast-image"
