"""A config entry for a built-in model id merges into it (docs/pricing.md says how)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imagegate.catalog.catalog import Catalog, builtin_document, merge_providers
from imagegate.config import load_settings
from repo_root import REPO

DOCS = REPO / "docs" / "pricing.md"


def _catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_text: str) -> Catalog:
    monkeypatch.delenv("IMAGEGATE_CONFIG", raising=False)
    config = tmp_path / "imagegate.yaml"
    config.write_text(yaml_text)
    settings = load_settings(config)
    providers = {p.id for p in merge_providers(settings.providers)}
    return Catalog.load(settings.models, providers)


def _builtin(model_id: str) -> dict[str, object]:
    return next(m for m in builtin_document()["models"] if m["id"] == model_id)


def test_the_docs_example_reprices_one_endpoint_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = DOCS.read_text().split("## Overriding a built-in model", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    base = Catalog.load().resolve("openai/gpt-image-1")
    spec = _catalog(tmp_path, monkeypatch, example.group(1)).resolve("gpt-image-1")
    assert spec.id == "openai/gpt-image-1"
    assert spec.aliases == base.aliases and spec.sizes == base.sizes
    assert spec.operations == base.operations
    assert [e.provider for e in spec.endpoints] == [e.provider for e in base.endpoints]
    openai = next(e for e in spec.endpoints if e.provider == "openai")
    assert openai.upstream_model == "gpt-image-1"
    assert (
        openai.pricing.to_json()
        != next(e for e in base.endpoints if e.provider == "openai").pricing.to_json()
    )
    azure = [e for e in spec.endpoints if e.provider == "azure"]
    assert (
        azure
        and azure[0].pricing == next(e for e in base.endpoints if e.provider == "azure").pricing
    )


def test_set_keys_replace_new_providers_are_added_first_and_replace_true_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    yaml_text = """
providers:
  - {id: mine, type: openai_compatible, base_url: "http://127.0.0.1:9/v1", api_key: k}
models:
  - id: openai/dall-e-2
    n_max: 2
    endpoints:
      - {provider: mine, upstream_model: dall-e-2, pricing: {per_image: 0.01}}
  - id: openai/dall-e-3
    replace: true
    sizes: [1024x1024]
    endpoints:
      - {provider: mine, upstream_model: dall-e-3, pricing: {per_image: 0.03}}
"""
    catalog = _catalog(tmp_path, monkeypatch, yaml_text)
    dalle2 = catalog.resolve("openai/dall-e-2")
    base2 = Catalog.load().resolve("openai/dall-e-2")
    assert dalle2.n_max == 2 and dalle2.sizes == base2.sizes
    assert [e.provider for e in dalle2.endpoints] == ["mine"] + [
        e.provider for e in base2.endpoints
    ]
    dalle3 = catalog.resolve("openai/dall-e-3")
    assert [e.provider for e in dalle3.endpoints] == ["mine"]
    assert dalle3.aliases == () or list(dalle3.aliases) == []  # nothing kept
    assert _builtin("openai/dall-e-3").get("aliases")  # the built-in had aliases
