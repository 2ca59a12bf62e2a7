"""Response and admin-body schemas of the OpenAPI document (``api.openapi``).

Declared once here; the fuzz test (``tests/e2e/test_openapi_fuzz.py``) validates every
response the live server gives against them, so a change to a response body that is not
made here fails ``make test``. Objects stay open (no ``additionalProperties: false``):
clients must tolerate fields added later, as OpenAI's do.
"""

from __future__ import annotations

from typing import Any

from imagegate.accounts.limits import INT64_MAX

# Money is stored as int64 micro-USD: no amount or balance past this many USD.
MAX_USD = INT64_MAX // 1_000_000

STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
STR_OR_NULL = {"type": ["string", "null"]}
INT_OR_NULL = {"type": ["integer", "null"]}
NUM_OR_NULL = {"type": ["number", "null"]}
STR_LIST = {"type": "array", "items": STR}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], props: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": props}
    if description:
        schema["description"] = description
    return schema


def resource(kind: str, required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    """An object with an ``id`` and ``object: <kind>``, as every OpenAI resource has."""
    return obj(["id", "object", *required], {"id": STR, "object": {"const": kind}, **props})


def listing(item: str) -> dict[str, Any]:
    return obj(
        ["object", "data"],
        {"object": {"const": "list"}, "data": {"type": "array", "items": ref(item)}},
    )


SCHEMAS: dict[str, Any] = {
    "Error": obj(
        ["message", "type", "param", "code"],
        {"message": STR, "type": STR, "param": STR_OR_NULL, "code": STR_OR_NULL},
    ),
    "ErrorResponse": obj(["error"], {"error": ref("Error")}, "OpenAI's error envelope."),
    "Image": obj(
        [],
        {
            "b64_json": {**STR, "description": "Base64 image (response_format b64_json)."},
            "url": {**STR, "description": "Signed link (response_format url)."},
            "revised_prompt": STR,
        },
        "Exactly one of b64_json or url.",
    ),
    "ImagesUsage": obj(
        [],
        {
            "input_tokens": INT,
            "output_tokens": INT,
            "total_tokens": INT,
            "input_tokens_details": {"type": "object"},
            "images": {**INT, "description": "With `usage: true`."},
            "cost_usd": {**NUM, "description": "With `usage: true`."},
        },
    ),
    "Attempt": obj(
        ["provider", "status", "latency_ms"],
        {
            "provider": STR,
            "upstream_model": STR,
            # the upstream's HTTP status, or "error" / "cancelled" for a call with none
            "status": {"type": ["integer", "string"]},
            "latency_ms": NUM,
            "error": STR_OR_NULL,
            "cost_micro": {
                **INT,
                "description": "What the upstream bills the operator for this call, in "
                "micro-USD; only in `GET /v1/generations` answers to admin keys.",
            },
        },
    ),
    "GenerationMeta": obj(
        ["generation_id", "model", "provider", "attempts", "cost_usd"],
        {
            "generation_id": STR,
            "model": STR,
            "provider": STR,
            "upstream_model": STR,
            "attempts": {"type": "array", "items": ref("Attempt")},
            "latency_ms": NUM,
            "cost_usd": NUM,
        },
        "With `meta: true`: how the request was routed.",
    ),
    "ImagesResponse": obj(
        ["created", "data"],
        {
            "created": INT,
            "data": {"type": "array", "items": ref("Image")},
            "background": STR,
            "output_format": STR,
            "quality": STR,
            "size": STR,
            "usage": ref("ImagesUsage"),
            "meta": ref("GenerationMeta"),
        },
    ),
    "FreeSize": obj(
        ["min_side", "max_side", "multiple_of"],
        {
            "min_side": INT,
            "max_side": INT,
            "multiple_of": INT,
            "max_aspect": NUM_OR_NULL,
            "min_pixels": INT_OR_NULL,
            "max_pixels": INT_OR_NULL,
        },
        "Any WIDTHxHEIGHT within these bounds.",
    ),
    "ModelEndpoint": obj(
        ["provider", "upstream_model", "status", "available"],
        {
            "provider": STR,
            "upstream_model": STR,
            "status": STR,
            "available": BOOL,
            "pricing": {"type": ["object", "null"]},
        },
    ),
    "Model": resource(
        "model",
        ["created", "owned_by"],
        {
            "created": INT,
            "owned_by": STR,
            "aliases": STR_LIST,
            "description": STR,
            "operations": STR_LIST,
            "status": STR,
            "available": BOOL,
            "sizes": STR_LIST,
            "free_size": {"anyOf": [ref("FreeSize"), {"type": "null"}]},
            "max_n": INT,
            "endpoints": {"type": "array", "items": ref("ModelEndpoint")},
        },
    ),
    "ModelList": listing("Model"),
    "Health": obj(
        ["status"],
        {"status": STR, "providers": {"type": "object"}, "endpoints": {"type": "object"}},
    ),
    "CreateApiKeyRequest": obj(
        ["name"],
        {
            "name": {**STR, "minLength": 1},
            "models": {**STR_LIST, "description": "Model ids this key may use (all if absent)."},
            "admin": BOOL,
            "credits": {
                **NUM,
                "minimum": 0,
                "maximum": MAX_USD,
                "description": "USD; no credit limit if absent.",
            },
            "rpm": {**INT, "minimum": 1, "maximum": 2**31 - 1},
            "ipm": {**INT, "minimum": 1, "maximum": 2**31 - 1, "description": "Images per minute."},
            "max_concurrent": {**INT, "minimum": 1, "maximum": 2**31 - 1},
        },
    ),
    "ApiKey": resource(
        "api_key",
        ["name", "admin", "created_at"],
        {
            "name": STR,
            "admin": BOOL,
            "models": {"type": ["array", "null"], "items": STR},
            "credits_usd": NUM_OR_NULL,
            "rpm": INT_OR_NULL,
            "ipm": INT_OR_NULL,
            "max_concurrent": INT_OR_NULL,
            "created_at": INT,
            "revoked_at": INT_OR_NULL,
        },
    ),
    "CreatedApiKey": {
        "allOf": [ref("ApiKey"), obj(["key"], {"key": {**STR, "description": "Shown once."}})]
    },
    "ApiKeyList": listing("ApiKey"),
    "DeletedApiKey": obj(["id", "object", "deleted"], {"id": STR, "object": STR, "deleted": BOOL}),
    "TopUpRequest": obj(
        ["amount"],
        {
            "amount": {
                **NUM,
                "exclusiveMinimum": 0,
                "maximum": MAX_USD,
                "description": "USD to add.",
            },
            "note": {**STR, "maxLength": 200},
        },
    ),
    "CreditTopUp": obj(
        ["id", "object", "amount_usd", "balance_usd"],
        {"id": STR, "object": STR, "amount_usd": NUM, "balance_usd": NUM},
    ),
    "LedgerEntry": obj(
        ["id", "kind", "amount_usd", "created_at"],
        {
            "id": {"type": ["integer", "string"]},
            "kind": STR,
            "amount_usd": NUM,
            "balance_usd": NUM_OR_NULL,
            "hold_id": STR_OR_NULL,
            "generation_id": STR_OR_NULL,
            "note": STR_OR_NULL,
            "created_at": INT,
        },
    ),
    "LedgerList": obj(
        ["object", "data", "has_more", "last_id"],
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("LedgerEntry")},
            "has_more": {"type": "boolean"},
            "last_id": {"type": ["integer", "null"]},
        },
        "Oldest first; the next page is `?after=<last_id>`.",
    ),
    "Generation": resource(
        "generation",
        ["model", "status"],
        {
            "key_id": STR,
            "model": STR,
            "operation": STR,
            "status": STR,
            "provider": STR_OR_NULL,
            "upstream_model": STR_OR_NULL,
            "error_code": STR_OR_NULL,
            "images": INT_OR_NULL,
            "latency_ms": NUM,
            "cost_usd": NUM,
            "created_at": INT,
        },
    ),
    "UsageSummary": obj(
        ["object", "start", "end", "totals", "data"],
        {
            "object": {"const": "usage"},
            "start": INT,
            "end": INT,
            "group_by": STR_OR_NULL,
            "key_id": STR_OR_NULL,
            "totals": {"type": "object"},
            "data": {"type": "array", "items": {"type": "object"}},
            "has_more": {"type": "boolean"},
            "last_id": STR_OR_NULL,
        },
    ),
}
