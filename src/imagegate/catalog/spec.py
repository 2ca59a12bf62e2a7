"""Catalog shapes: what a model accepts and who can serve it.

Parsed from plain dicts (the shipped ``models.yaml`` or the operator's config file) so
both sources go through one validator with one set of error messages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from imagegate.catalog.pricing import Pricing, parse_pricing
from imagegate.core.types import OPERATIONS, OUTPUT_FORMATS, Operation

__all__ = ["CatalogError", "EndpointSpec", "FreeSizeRule", "ModelSpec", "Pricing", "parse_model"]

MB = 1024 * 1024


class CatalogError(ValueError):
    """A model entry that cannot be used; the message names the model and field."""


@dataclass(frozen=True, slots=True)
class FreeSizeRule:
    """Arbitrary WIDTHxHEIGHT within bounds (for models that take any size)."""

    min_side: int = 64
    max_side: int = 4096
    multiple_of: int = 1
    max_aspect: float | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    provider: str
    upstream_model: str
    pricing: Pricing = field(default_factory=Pricing)
    shutdown_on: dt.date | None = None  # this provider retires the model on this day


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    aliases: tuple[str, ...] = ()
    operations: frozenset[Operation] = frozenset({"generate"})
    description: str = ""
    sizes: tuple[str, ...] = ()
    free_size: FreeSizeRule | None = None
    default_size: str = "1024x1024"
    auto_size: bool = True
    n_max: int = 10
    n_max_by_operation: dict[str, int] = field(default_factory=dict)
    prompt_max_chars: int = 32000
    qualities: tuple[str, ...] | None = None
    styles: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = OUTPUT_FORMATS
    backgrounds: tuple[str, ...] = ("auto", "transparent", "opaque")
    moderations: tuple[str, ...] | None = None
    max_input_images: int = 16
    supports_mask: bool = True
    max_image_bytes: int | None = None
    input_formats: tuple[str, ...] = OUTPUT_FORMATS
    square_inputs_only: bool = False
    default_response_format: str = "b64_json"
    endpoints: tuple[EndpointSpec, ...] = ()
    deprecated_on: dt.date | None = None
    shutdown_on: dt.date | None = None
    replacement: str | None = None
    lifecycle_source: str | None = None  # where the dates were read, and when

    def max_n(self, operation: Operation) -> int:
        return self.n_max_by_operation.get(operation, self.n_max)


def parse_model(raw: dict[str, Any]) -> ModelSpec:
    """Validate one catalog entry; raises ``CatalogError`` naming the offending field."""
    model_id = raw.get("id")
    if not isinstance(model_id, str) or "/" not in model_id:
        raise CatalogError(f"model id {model_id!r} must be a string of the form 'org/name'")
    known = set(ModelSpec.__dataclass_fields__) | {"limits", "max_image_mb"}
    for key in raw:
        if key not in known:
            raise CatalogError(f"model '{model_id}': unknown field '{key}'")
    limits = dict(raw.get("limits") or {})
    merged = {**limits, **{k: v for k, v in raw.items() if k != "limits"}}

    def err(field_name: str, message: str) -> CatalogError:
        return CatalogError(f"model '{model_id}': {field_name}: {message}")

    operations = _str_list(merged.get("operations", ["generate"]), "operations", err)
    for op in operations:
        if op not in OPERATIONS:
            raise err("operations", f"unknown operation '{op}'")
    endpoints = tuple(
        _endpoint(item, i, err) for i, item in enumerate(merged.get("endpoints") or [])
    )
    free = merged.get("free_size")
    n_max = merged.get("n_max", 10)
    if not isinstance(n_max, int) or n_max < 1:
        raise err("n_max", "must be an integer >= 1")
    max_mb = merged.get("max_image_mb")
    return ModelSpec(
        id=model_id,
        aliases=tuple(_str_list(merged.get("aliases", []), "aliases", err)),
        operations=frozenset(operations),  # type: ignore[arg-type]
        description=str(merged.get("description", "")),
        sizes=tuple(_str_list(merged.get("sizes", []), "sizes", err)),
        free_size=FreeSizeRule(**free) if isinstance(free, dict) else None,
        default_size=str(merged.get("default_size", "1024x1024")),
        auto_size=bool(merged.get("auto_size", True)),
        n_max=n_max,
        n_max_by_operation=dict(merged.get("n_max_by_operation") or {}),
        prompt_max_chars=int(merged.get("prompt_max_chars", 32000)),
        qualities=_optional_list(merged.get("qualities"), "qualities", err),
        styles=tuple(_str_list(merged.get("styles", []), "styles", err)),
        output_formats=tuple(
            _str_list(merged.get("output_formats", OUTPUT_FORMATS), "output_formats", err)
        ),
        backgrounds=tuple(
            _str_list(
                merged.get("backgrounds", ["auto", "transparent", "opaque"]), "backgrounds", err
            )
        ),
        moderations=_optional_list(merged.get("moderations"), "moderations", err),
        max_input_images=int(merged.get("max_input_images", 16)),
        supports_mask=bool(merged.get("supports_mask", True)),
        max_image_bytes=int(max_mb * MB) if isinstance(max_mb, int | float) else None,
        input_formats=tuple(
            _str_list(merged.get("input_formats", OUTPUT_FORMATS), "input_formats", err)
        ),
        square_inputs_only=bool(merged.get("square_inputs_only", False)),
        default_response_format=str(merged.get("default_response_format", "b64_json")),
        endpoints=endpoints,
        deprecated_on=_date(merged.get("deprecated_on"), "deprecated_on", err),
        shutdown_on=_date(merged.get("shutdown_on"), "shutdown_on", err),
        replacement=_optional_str(merged.get("replacement"), "replacement", err),
        lifecycle_source=_optional_str(merged.get("lifecycle_source"), "lifecycle_source", err),
    )


def _endpoint(item: Any, index: int, err: Any) -> EndpointSpec:
    where = f"endpoints[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("provider"), str):
        raise err(where, "each endpoint needs a string 'provider'")
    upstream = item.get("upstream_model")
    if not isinstance(upstream, str):
        raise err(f"{where}.upstream_model", "must be a string")
    pricing = parse_pricing(item.get("pricing"), err, f"{where}.pricing")
    return EndpointSpec(
        provider=item["provider"],
        upstream_model=upstream,
        pricing=pricing,
        shutdown_on=_date(item.get("shutdown_on"), f"{where}.shutdown_on", err),
    )


def _date(value: Any, name: str, err: Any) -> dt.date | None:
    """A calendar date: YAML's own date, or a ``YYYY-MM-DD`` string."""
    if value is None or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise err(name, "must be a date, YYYY-MM-DD")


def _optional_str(value: Any, name: str, err: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise err(name, "must be a string")


def _str_list(value: Any, name: str, err: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise err(name, "must be a list of strings")
    return list(value)


def _optional_list(value: Any, name: str, err: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(_str_list(value, name, err))
