"""Turn a JSON object or multipart fields into the caller's ``RequestFields``.

Both encodings meet here as a plain dict, so each field has one coercion rule and one
error message. Multipart values are strings, so numbers and booleans are parsed from
text; bracket-encoded keys (``provider[order][]=a``, as openai-python sends
``extra_body``) are folded into nested values first. Which fields exist, of what kind and
with what choices is declared once in ``core.fields``. The model's rules and the fetched
inputs complete the fields into an ``ImageRequest`` (``catalog.rules.resolve_request``).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from imagegate.core.errors import InvalidRequest
from imagegate.core.fields import FIELDS, INPUT_FIELDS, ROUTING_FIELDS, Field
from imagegate.core.types import Operation, RequestFields, RoutingPreferences

_STRINGS = tuple(f.name for f in FIELDS if f.kind == "string")
_INTS = tuple(f.name for f in FIELDS if f.kind == "integer")
_BOOLS = tuple(f.name for f in FIELDS if f.kind == "boolean")
_IMAGE_FIELDS = tuple(f.name for f in INPUT_FIELDS)
_CHOICES = {f.name: f.choices for f in FIELDS if f.choices}
_ROUTING = {f.name: f for f in ROUTING_FIELDS}
_KEY_PART = re.compile(r"\[([^\]]*)\]")


def fold_form_fields(fields: list[tuple[str, str]]) -> dict[str, Any]:
    """Fold multipart text fields into a dict, decoding bracket notation into nesting."""
    out: dict[str, Any] = {}
    for name, value in fields:
        head, _, rest = name.partition("[")
        path = [head] + (_KEY_PART.findall("[" + rest) if rest else [])
        _insert(out, path, value)
    return out


def _insert(target: dict[str, Any], path: list[str], value: str) -> None:
    key, rest = path[0], path[1:]
    if not rest:
        if key in target:  # repeated plain field: becomes a list
            existing = target[key]
            target[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            target[key] = value
        return
    if rest == [""] or (len(rest) == 1 and rest[0].isdigit()):  # key[] or key[0]
        existing = target.get(key)
        items = existing if isinstance(existing, list) else ([] if existing is None else [existing])
        items.append(value)
        target[key] = items
        return
    child = target.get(key)
    if not isinstance(child, dict):
        child = {}
        target[key] = child
    _insert(child, rest, value)


def parse_fields(
    operation: Operation, raw: dict[str, Any], default_model: str | None = None
) -> RequestFields:
    """Coerce and type-check the scalar fields; image inputs are fetched separately.

    ``default_model`` (config ``defaults:``) stands in for a missing ``model``, as OpenAI
    defaults it; without one a missing model stays a 400."""
    parsed = RequestFields(operation=operation, model="")
    for name, value in raw.items():
        if value is None or name in _IMAGE_FIELDS:
            continue
        if name in _STRINGS:
            setattr(parsed, name, _string(name, value))
        elif name in _INTS:
            setattr(parsed, name, as_int(name, value))
        elif name in _BOOLS:
            setattr(parsed, name, as_bool(name, value))
        elif name == "provider":
            parsed.provider = _routing(value)
        else:
            parsed.extra[name] = value
    if not parsed.model and default_model:
        parsed.model = default_model
    if not parsed.model:
        raise InvalidRequest(
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    return parsed


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string.", param=name, code="invalid_type")
    allowed = _CHOICES.get(name)
    if allowed is not None and value not in allowed:
        raise InvalidRequest(
            f"Invalid {name} '{value}'. Supported: {', '.join(allowed)}.",
            param=name,
            code="invalid_value",
        )
    return value


def as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be an integer.", param=name, code="invalid_type")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
        return int(value)
    raise InvalidRequest(f"'{name}' must be an integer.", param=name, code="invalid_type")


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidRequest(
        f"'{name}' must be a boolean (true/false).", param=name, code="invalid_type"
    )


def _routing(value: Any) -> RoutingPreferences:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "'provider' must be an object (or a JSON string of one).",
                param="provider",
                code="invalid_type",
            ) from None
    if not isinstance(value, dict):
        raise InvalidRequest("'provider' must be an object.", param="provider", code="invalid_type")
    prefs = RoutingPreferences()
    for key, item in value.items():
        param = f"provider.{key}"
        if item is None:
            continue
        declared = _ROUTING.get(key)
        if declared is None:
            raise InvalidRequest(
                f"Unknown routing option '{key}' in 'provider'.",
                param=param,
                code="unknown_parameter",
            )
        setattr(prefs, key, _routing_value(declared, param, item))
    return prefs


def _routing_value(declared: Field, param: str, item: Any) -> Any:
    """One routing option, coerced by its declared kind."""
    if declared.kind == "array":
        return as_str_list(param, item)
    if declared.kind == "boolean":
        return as_bool(param, item)
    if declared.kind == "number":
        return _price(param, item)
    if item not in declared.choices:
        raise InvalidRequest(
            f"Invalid {param} '{item}'. Supported: {', '.join(declared.choices)}.", param=param
        )
    return item


def as_str_list(param: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v for v in (s.strip() for s in value.split(",")) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(
            f"'{param}' must be a list of provider ids.", param=param, code="invalid_type"
        )
    return value


def _price(param: str, value: Any) -> float:
    if isinstance(value, dict):
        value = value.get("image", value.get("per_image"))
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidRequest(
            f"'{param}' must be a number of USD per image >= 0.", param=param, code="invalid_type"
        )
    return float(value)
