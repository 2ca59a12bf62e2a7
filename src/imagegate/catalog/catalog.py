"""The model catalog: built-in entries merged with the operator's config file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from typing import Any

import yaml

from imagegate.catalog.overrides import merge_model
from imagegate.catalog.sizes import fill_size_rule
from imagegate.catalog.spec import CatalogError, ModelSpec, parse_model
from imagegate.core.errors import NotFound
from imagegate.core.provider_config import ProviderConfig


def builtin_document() -> dict[str, Any]:
    """``models.yaml`` plus one file per provider family in ``builtin/``, in name order."""
    package = resources.files("imagegate.catalog")
    texts = [package.joinpath("models.yaml").read_text("utf-8")]
    builtin = package.joinpath("builtin")
    if builtin.is_dir():
        files = sorted(
            (f for f in builtin.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name
        )
        texts += [f.read_text("utf-8") for f in files]
    doc: dict[str, Any] = {"providers": [], "models": []}
    models: dict[str, dict[str, Any]] = {}
    for text in texts:
        part = yaml.safe_load(text) or {}
        doc["providers"] += part.get("providers") or []
        for model in part.get("models") or []:
            _merge_builtin_model(models, model)
    doc["models"] = list(models.values())
    return doc


def _merge_builtin_model(models: dict[str, dict[str, Any]], model: dict[str, Any]) -> None:
    """A model served by several providers is declared once (its limits) and each
    provider's file adds an entry with just ``id`` and ``endpoints``."""
    existing = models.get(model["id"])
    if existing is None:
        models[model["id"]] = {**model, "endpoints": list(model.get("endpoints") or [])}
    else:
        existing["endpoints"] = existing["endpoints"] + list(model.get("endpoints") or [])


def builtin_providers() -> list[ProviderConfig]:
    return [ProviderConfig(**item) for item in builtin_document()["providers"]]


def merge_providers(configured: list[ProviderConfig]) -> list[ProviderConfig]:
    """Built-in providers, with configured ones added or replacing by id."""
    merged = {p.id: p for p in builtin_providers()}
    for provider in configured:
        base = merged.get(provider.id)
        if base is not None and provider.type == base.type:
            provider = replace(
                provider,
                base_url=provider.base_url or base.base_url,
                api_key_env=provider.api_key_env or base.api_key_env,
            )
        merged[provider.id] = provider
    return list(merged.values())


class Catalog:
    """Resolves public model ids and aliases to ``ModelSpec``s."""

    def __init__(self, models: list[ModelSpec]) -> None:
        self._models = {m.id: m for m in models}
        self._lookup: dict[str, ModelSpec] = {}
        for model in models:
            self._lookup[model.id] = model
            for alias in model.aliases:
                self._lookup.setdefault(alias, model)

    @classmethod
    def load(
        cls,
        extra: list[dict[str, Any]] | None = None,
        provider_ids: set[str] | Mapping[str, str] | None = None,
    ) -> Catalog:
        """Parse built-in models, then the configured ones (same id merges into the
        built-in entry, see ``catalog/overrides.py``).

        ``provider_ids`` may map each provider id to its adapter type, which decides the
        size rule of a configured model that declares none (``catalog.sizes``).
        """
        entries: dict[str, ModelSpec] = {}
        builtin_raw: dict[str, dict[str, Any]] = {}
        for raw in builtin_document()["models"]:
            spec = parse_model(raw)
            entries[spec.id] = spec
            builtin_raw[spec.id] = raw
        builtin = list(entries.values())
        types = provider_ids if isinstance(provider_ids, Mapping) else {}
        for raw in extra or []:
            merged = merge_model(builtin_raw.get(raw.get("id", "")), raw)
            spec = fill_size_rule(parse_model(merged), builtin, types)
            entries[spec.id] = spec
        if provider_ids is not None:
            for spec in entries.values():
                for i, endpoint in enumerate(spec.endpoints):
                    if endpoint.provider not in provider_ids:
                        raise CatalogError(
                            f"model '{spec.id}': endpoints[{i}].provider: unknown provider "
                            f"'{endpoint.provider}'"
                        )
        return cls(list(entries.values()))

    def resolve(self, model_id: str) -> ModelSpec:
        spec = self._lookup.get(model_id)
        if spec is None:
            raise unknown_model(model_id)
        return spec

    def __iter__(self) -> Any:
        return iter(self._models.values())


def unknown_model(model_id: str, param: str | None = "model") -> NotFound:
    """The 404 for a model that does not exist (or that the caller may not see)."""
    return NotFound(
        f"The model '{model_id}' does not exist. GET /v1/models lists the models "
        "this gateway serves.",
        param=param,
        code="model_not_found",
    )
