"""The OpenAPI document: a contract a client generator and a fuzzer can use.

The routes parse bodies themselves (streamed, capped, both encodings), so FastAPI cannot
infer their shapes. Request bodies are derived here from the one field declaration the
parser uses (``core.fields``); responses, error statuses, path parameters and
operationIds (the reference SDKs' ``createImage``, ``createImageEdit``,
``createImageVariation``) are declared once below and checked against the live server by
the fuzz test (``tests/e2e/test_openapi_fuzz.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from imagegate.api.schemas import SCHEMAS
from imagegate.core.fields import FIELDS, INPUT_FIELDS, ROUTING_FIELDS, Field
from imagegate.core.types import MIME_TYPES, Operation
from imagegate.core.types import OPERATIONS as IMAGE_OPERATIONS

_SCALARS = {"string": "string", "integer": "integer", "boolean": "boolean", "number": "number"}
_IMAGE_FILE = {"type": "string", "format": "binary"}
_IMAGE_TEXT = {"type": "string", "description": "An https URL, base64 or a data URL."}
_IMAGE_REF = {"$ref": "#/components/schemas/ImageRef"}
# How each Images operation is served: path, operationId (the reference SDKs'), summary and
# the encodings its body may come in (JSON edits name their images by URL).
_IMAGE_ROUTES: dict[Operation, tuple[str, str, str, tuple[str, ...]]] = {
    "generate": ("/v1/images/generations", "createImage", "Create images from a prompt", ("json",)),
    "edit": ("/v1/images/edits", "createImageEdit", "Edit or extend images", ("multipart", "json")),
    "variation": (
        "/v1/images/variations",
        "createImageVariation",
        "Create variations of an image",
        ("multipart",),
    ),
}
_CONTENT_TYPES = {"json": "application/json", "multipart": "multipart/form-data"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def field_schema(
    f: Field, multipart: bool = False, operation: Operation = "edit"
) -> dict[str, Any]:
    """The JSON schema of one declared field, as ``operation`` takes it in that encoding."""
    if f.kind == "object":
        schema: dict[str, Any] = _ref("RoutingPreferences")
        if multipart:  # openai-python sends extra_body objects as bracketed form fields
            schema = {"type": "string", "description": "JSON text of RoutingPreferences."}
        return schema
    if f.kind in ("image", "image_refs"):
        return _image_schema(f, multipart, operation)
    if f.kind == "array":
        schema = {"type": "array", "items": {"type": "string"}}
    else:
        schema = {"type": _SCALARS[f.kind]}
    schema["description"] = f.description
    if f.choices:
        schema["enum"] = list(f.choices)
    elif f.values:
        schema["description"] += f" Usually one of: {', '.join(f.values)}."
    if f.default is not None:
        schema["default"] = f.default
    if f.minimum is not None:
        schema["minimum"] = f.minimum
    if f.maximum is not None:
        schema["maximum"] = f.maximum
    if f.example is not None:
        schema["example"] = f.example
    return schema


def _image_schema(f: Field, multipart: bool, operation: Operation) -> dict[str, Any]:
    """Files in multipart; URL text (or a stored file's reference) in JSON."""
    if f.kind == "image_refs":
        schema = {"type": "array", "items": _IMAGE_REF, "maxItems": f.maximum}
        return {**schema, "description": f.description}
    one = _IMAGE_FILE if multipart else _IMAGE_TEXT
    if operation in f.many:
        return {"description": f.description, "anyOf": [one, {"type": "array", "items": one}]}
    if multipart:
        return {**one, "description": f.description}
    return {"description": f.description, "anyOf": [one, _IMAGE_REF]}


def _body_schema(operation: Operation, encoding: str) -> dict[str, Any]:
    """One operation's request body in one encoding, derived from the declarations."""
    multipart = encoding == "multipart"
    declared = [
        f
        for f in (*INPUT_FIELDS, *FIELDS)
        if operation in f.operations and (f.kind != "image_refs" or not multipart)
    ]
    # In JSON the images may come as `images` instead of `image`: neither is required alone.
    required = [
        f.name for f in declared if operation in f.required and (multipart or f.kind != "image")
    ]
    props = {f.name: field_schema(f, multipart, operation) for f in declared}
    return {"type": "object", "required": required, "properties": props}


def _body_name(operation: Operation, encoding: str) -> str:
    """``createImageEdit`` -> ``CreateImageEditRequest`` (``...JsonRequest`` for its JSON twin)."""
    _, op_id, _, encodings = _IMAGE_ROUTES[operation]
    twin = len(encodings) > 1 and encoding == "json"
    return op_id[0].upper() + op_id[1:] + ("JsonRequest" if twin else "Request")


def routing_schema() -> dict[str, Any]:
    props = {f.name: field_schema(f) for f in ROUTING_FIELDS}
    return {"type": "object", "description": "Routing preferences.", "properties": props}


def request_schemas() -> dict[str, Any]:
    """Named request bodies, each derived from the field declaration."""
    bodies = {
        _body_name(op, encoding): _body_schema(op, encoding)
        for op in IMAGE_OPERATIONS
        for encoding in _IMAGE_ROUTES[op][3]
    }
    return {
        "RoutingPreferences": routing_schema(),
        "ImageRef": {
            "type": "object",
            "description": "An input image by URL (https or data URL) or by stored file id.",
            "properties": {"image_url": {"type": "string"}, "file_id": {"type": "string"}},
        },
        **bodies,
    }


def _json_body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _image_body(operation: Operation) -> dict[str, Any]:
    encodings = _IMAGE_ROUTES[operation][3]
    content = {_CONTENT_TYPES[e]: {"schema": _ref(_body_name(operation, e))} for e in encodings}
    return {"required": True, "content": content}


_IMAGE_ERRORS = (400, 401, 402, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504)
_READ_ERRORS = (401, 429, 500)
_ADMIN_ERRORS = (400, 401, 403, 404, 413, 415, 429, 500)


def _path(name: str, description: str, example: str | None = None) -> dict[str, Any]:
    param: dict[str, Any] = {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }
    if example is not None:
        param["example"] = example
    return param


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Replays the first response for 24 h instead of generating again.",
    "schema": {"type": "string", "maxLength": 255},
}
_IMAGES_OK = {
    "description": "The images (JSON), or server-sent events when `stream` is true.",
    "content": {
        "application/json": {"schema": _ref("ImagesResponse")},
        "text/event-stream": {"schema": {"type": "string"}},
    },
}


def _ok(schema: str, description: str = "OK", status: str = "200") -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": _ref(schema)}},
        }
    }


def _op(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    errors: Iterable[int],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    responses = dict(ok)
    for status in errors:
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


_KEY_ID = _path("key_id", "The API key's id (not the key itself).")
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    **{
        ("post", path): _op(
            op_id,
            summary,
            {"200": _IMAGES_OK},
            _IMAGE_ERRORS,
            parameters=[_IDEMPOTENCY],
            body=_image_body(operation),
        )
        for operation, (path, op_id, summary, _) in _IMAGE_ROUTES.items()
    },
    ("get", "/v1/models"): _op("listModels", "List models", _ok("ModelList"), _READ_ERRORS),
    ("get", "/v1/models/{model_id}"): _op(
        "retrieveModel",
        "Retrieve a model",
        _ok("Model"),
        (*_READ_ERRORS, 404),
        parameters=[_path("model_id", "Model id (may contain `/`) or alias.", "imagegate/sandbox")],
    ),
    ("get", "/v1/files/{file_id}"): _op(
        "downloadFile",
        "Download a stored image through its signed link",
        {
            "200": {
                "description": "The image.",
                "content": {mime: {"schema": _IMAGE_FILE} for mime in MIME_TYPES.values()},
            }
        },
        (404,),
        parameters=[
            _path("file_id", "The stored file's id."),
            _query("exp", "Expiry (unix seconds) from the signed link."),
            _query("sig", "Signature from the signed link."),
        ],
        public=True,
    ),
    ("get", "/healthz"): _op(
        "healthCheck", "Liveness and provider health", _ok("Health"), (), public=True
    ),
    ("get", "/metrics"): _op(
        "getMetrics",
        "Prometheus metrics",
        {
            "200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        (401, 403),
        public=True,
    ),
    ("post", "/v1/admin/keys"): _op(
        "createApiKey",
        "Create an API key (admin)",
        _ok("CreatedApiKey", "Created", "201"),
        _ADMIN_ERRORS,
        body=_json_body("CreateApiKeyRequest"),
    ),
    ("get", "/v1/admin/keys"): _op(
        "listApiKeys", "List API keys (admin)", _ok("ApiKeyList"), (401, 403, 429, 500)
    ),
    ("delete", "/v1/admin/keys/{key_id}"): _op(
        "revokeApiKey",
        "Revoke an API key (admin)",
        _ok("DeletedApiKey"),
        _ADMIN_ERRORS,
        parameters=[_KEY_ID],
    ),
    ("post", "/v1/admin/keys/{key_id}/credits"): _op(
        "topUpCredits",
        "Add credits to a key (admin)",
        _ok("CreditTopUp"),
        (*_ADMIN_ERRORS, 409),
        parameters=[_KEY_ID],
        body=_json_body("TopUpRequest"),
    ),
    ("get", "/v1/admin/keys/{key_id}/ledger"): _op(
        "listLedgerEntries",
        "A key's credit movements (admin)",
        _ok("LedgerList"),
        _ADMIN_ERRORS,
        parameters=[
            _KEY_ID,
            _query("limit", "Entries per page, 1 to 1000 (default 1000).", pattern="^[0-9]+$"),
            _query("after", "The `last_id` of the previous page.", pattern="^[0-9]+$"),
        ],
    ),
    ("get", "/v1/generations/{generation_id}"): _op(
        "retrieveGeneration",
        "One request's record",
        _ok("Generation"),
        (*_READ_ERRORS, 404),
        parameters=[_path("generation_id", "The id from `x-imagegate-generation-id`.")],
    ),
    ("get", "/v1/usage"): _op(
        "getUsage",
        "Spend and image totals",
        _ok("UsageSummary"),
        (*_READ_ERRORS, 400, 404),
        parameters=[
            _query("start", "Unix seconds, YYYY-MM-DD or ISO 8601 (default: end - 30 days)."),
            _query("end", "Unix seconds, YYYY-MM-DD or ISO 8601 (default: now)."),
            _query("group_by", "Group totals.", enum=["model", "provider", "key", "day"]),
            _query("key_id", "Admin keys: one key's usage."),
            _query(
                "limit",
                "group_by=key over every key: keys per page, 1 to 1000 (default 100).",
                pattern="^[0-9]+$",
            ),
            _query("after", "group_by=key over every key: the `last_id` of the previous page."),
        ],
    ),
}

_STATUS_TEXT = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    402: "Insufficient credits",
    403: "Not allowed for this key",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    429: "Rate limited (see Retry-After)",
    500: "Internal error",
    502: "Every upstream attempt failed",
    503: "No provider available",
    504: "Upstream timeout",
}


def _error_responses() -> dict[str, Any]:
    return {
        f"Error{status}": {
            "description": text,
            "content": {"application/json": {"schema": _ref("ErrorResponse")}},
        }
        for status, text in _STATUS_TEXT.items()
    }


def _undeclared(op: dict[str, Any]) -> None:
    """A route added without an entry in ``OPERATIONS`` still gets a camelCase
    operationId and the error statuses every authenticated route can answer."""
    words = str(op.get("summary") or op.get("operationId") or "operation").split()
    op["operationId"] = words[0].lower() + "".join(w.capitalize() for w in words[1:])
    # FastAPI would claim a JSON body of any shape; claim nothing rather than a wrong type
    # (an HTML page, say), until the route is declared above.
    op["responses"] = {"200": {"description": "Successful response (not declared yet)."}}
    for status in (400, 401, 403, 404, 429, 500):
        op["responses"][str(status)] = {"$ref": f"#/components/responses/Error{status}"}


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's paths, with each operation replaced by its declaration above."""
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            declared = OPERATIONS.get((method, path))
            if declared is not None:
                op.pop("responses", None)
                op.update(declared)
            else:
                _undeclared(op)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update({**SCHEMAS, **request_schemas()})
    components["responses"] = _error_responses()
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An imagegate key."}
    }
    doc["security"] = [{"bearerAuth": []}]
    return doc


def install(app: FastAPI) -> None:
    """Serve ``document(app)`` at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
