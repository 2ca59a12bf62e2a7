"""Request-body schemas for the OpenAPI document served at /docs.

The routes parse bodies themselves (streamed, capped, both encodings), so FastAPI cannot
infer these; they are declared here once. In multipart bodies ``image`` and ``mask`` are
typed as strings: a file part, or text holding a URL, base64 or a data URL.
"""

from __future__ import annotations

from typing import Any

_PROVIDER = {
    "type": "object",
    "description": "Routing preferences.",
    "properties": {
        "order": {"type": "array", "items": {"type": "string"}},
        "only": {"type": "array", "items": {"type": "string"}},
        "ignore": {"type": "array", "items": {"type": "string"}},
        "include_alpha": {"type": "boolean", "default": False},
        "allow_fallbacks": {"type": "boolean", "default": True},
        "sort": {"type": "string", "enum": ["price", "latency", "throughput"]},
        "max_price": {"type": "number", "description": "USD per image"},
        "require_parameters": {"type": "boolean", "default": False},
    },
}
_COMMON: dict[str, Any] = {
    "model": {"type": "string", "example": "imagegate/sandbox"},
    "n": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
    "size": {"type": "string", "example": "1024x1024", "description": "auto or WIDTHxHEIGHT"},
    "response_format": {"type": "string", "enum": ["b64_json", "url"]},
    "user": {"type": "string"},
    "provider": _PROVIDER,
    "meta": {"type": "boolean", "description": "Add routing metadata to the response."},
    "usage": {"type": "boolean", "description": "Add cost_usd and images to usage."},
    "seed": {"type": "integer"},
}
_GENERATION: dict[str, Any] = {
    "prompt": {"type": "string"},
    "quality": {"type": "string", "example": "auto"},
    "style": {"type": "string", "enum": ["vivid", "natural"]},
    "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
    "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
    "background": {"type": "string", "enum": ["auto", "transparent", "opaque"]},
    "moderation": {"type": "string", "enum": ["auto", "low"]},
    "stream": {"type": "boolean"},
    "partial_images": {"type": "integer", "minimum": 0, "maximum": 3},
}
_IMAGE_TEXT = {"type": "string", "description": "A file, or an https URL, base64 or data URL."}


def _schema(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": props,
        "additionalProperties": True,
    }


def generation_body() -> dict[str, Any]:
    schema = _schema(["model", "prompt"], {**_COMMON, **_GENERATION})
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def edit_body() -> dict[str, Any]:
    multipart = _schema(
        ["model", "image", "prompt"],
        {
            **_COMMON,
            **_GENERATION,
            "image": {"oneOf": [_IMAGE_TEXT, {"type": "array", "items": _IMAGE_TEXT}]},
            "mask": _IMAGE_TEXT,
            "input_fidelity": {"type": "string", "enum": ["high", "low"]},
        },
    )
    ref = {
        "type": "object",
        "properties": {"image_url": {"type": "string"}, "file_id": {"type": "string"}},
    }
    as_json = _schema(
        ["model", "prompt"],
        {
            **_COMMON,
            **_GENERATION,
            "images": {"type": "array", "items": ref, "maxItems": 16},
            "image": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            },
            "mask": {"oneOf": [{"type": "string"}, ref]},
        },
    )
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": multipart},
                "application/json": {"schema": as_json},
            },
        }
    }


def variation_body() -> dict[str, Any]:
    multipart = _schema(["model", "image"], {**_COMMON, "image": _IMAGE_TEXT})
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": multipart}}}
    }
