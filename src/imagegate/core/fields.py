"""The Images API request fields, declared once.

Everything that knows a request field reads it from here: the parser (``api.fields``), the
OpenAPI document (``api.openapi``), the catalog's range checks (``catalog.rules``) and the
SDK's request models, which ``python -m imagegate.tools.sdk_models`` generates from this
table (the SDK cannot import the server). ``RequestFields``' defaults are checked against
``default`` by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from imagegate.core.types import OPERATIONS, Operation

Kind = Literal["string", "integer", "number", "boolean", "array", "object", "image", "image_refs"]


@dataclass(frozen=True, slots=True)
class Field:
    """One request field: its type, default, limits and documentation.

    ``choices`` are enforced by the parser for every model; ``values`` are only documented,
    since which of them a model takes is the catalog's rule (``catalog.rules``). ``default``
    is what the gateway assumes when the field is left out (None: model-dependent or unset).
    ``required`` names the operations that cannot do without it; ``many`` those where an
    ``image`` field takes a list. ``image`` fields travel as files (multipart) or URLs (JSON);
    ``image_refs`` only in JSON."""

    name: str
    kind: Kind
    description: str
    operations: frozenset[Operation] = frozenset(OPERATIONS)
    default: Any = None
    choices: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    example: Any = None
    required: frozenset[Operation] = frozenset()
    many: frozenset[Operation] = frozenset()


_GEN_EDIT: frozenset[Operation] = frozenset(("generate", "edit"))
_EDIT: frozenset[Operation] = frozenset(("edit",))
_WITH_IMAGES: frozenset[Operation] = frozenset(("edit", "variation"))

FIELDS: tuple[Field, ...] = (
    Field(
        "model",
        "string",
        "Model id or alias; the config's `defaults:` when left out.",
        example="imagegate/sandbox",
    ),
    Field(
        "prompt",
        "string",
        "What to draw, or how to change the input.",
        _GEN_EDIT,
        example="a red fox in the snow",
        required=_GEN_EDIT,
    ),
    Field("n", "integer", "Number of images.", default=1, minimum=1, maximum=10),
    Field(
        "size",
        "string",
        "`auto` or WIDTHxHEIGHT; each model's GET /v1/models entry lists what it takes.",
        default="auto",
        example="1024x1024",
    ),
    Field(
        "quality",
        "string",
        "Model-dependent quality.",
        _GEN_EDIT,
        values=("auto", "low", "medium", "high", "standard", "hd"),
    ),
    Field(
        "style", "string", "dall-e-3 style.", frozenset(("generate",)), values=("vivid", "natural")
    ),
    Field(
        "response_format", "string", "Return base64 or a signed URL.", choices=("url", "b64_json")
    ),
    Field(
        "output_format", "string", "Image file format.", _GEN_EDIT, choices=("png", "jpeg", "webp")
    ),
    Field(
        "output_compression",
        "integer",
        "0-100, for jpeg and webp.",
        _GEN_EDIT,
        minimum=0,
        maximum=100,
    ),
    Field(
        "background",
        "string",
        "Background transparency.",
        _GEN_EDIT,
        values=("auto", "transparent", "opaque"),
    ),
    Field("moderation", "string", "Upstream moderation level.", _GEN_EDIT, values=("auto", "low")),
    Field("user", "string", "End-user id, passed on."),
    Field(
        "input_fidelity",
        "string",
        "How closely to keep the input's features.",
        _EDIT,
        values=("high", "low"),
    ),
    Field("stream", "boolean", "Answer with server-sent events.", _GEN_EDIT, default=False),
    Field(
        "partial_images", "integer", "Partial images to stream.", _GEN_EDIT, minimum=0, maximum=3
    ),
    Field("meta", "boolean", "Add routing metadata (`meta`) to the response.", default=False),
    Field("usage", "boolean", "Add `cost_usd` and `images` to `usage`.", default=False),
    Field("seed", "integer", "Seed, for providers that take one."),
    Field("provider", "object", "Routing preferences (see RoutingPreferences)."),
)
INPUT_FIELDS: tuple[Field, ...] = (
    Field(
        "image",
        "image",
        "The input image (edits: one or several, as repeated `image[]` parts).",
        _WITH_IMAGES,
        required=_WITH_IMAGES,
        many=_EDIT,
    ),
    Field("mask", "image", "Transparent where to edit.", _EDIT),
    Field("images", "image_refs", "Input images by URL or stored file id.", _EDIT, maximum=16),
)
ROUTING_FIELDS: tuple[Field, ...] = (
    Field("order", "array", "Provider ids to try first, in order."),
    Field("only", "array", "Use only these provider ids."),
    Field("ignore", "array", "Never use these provider ids."),
    Field("include_alpha", "boolean", "Also route to alpha providers.", default=False),
    Field("allow_fallbacks", "boolean", "Try other endpoints after the first fails.", default=True),
    Field("sort", "string", "Order endpoints by this.", choices=("price", "latency", "throughput")),
    Field("max_price", "number", "Highest USD per image to pay.", minimum=0),
    Field(
        "require_parameters", "boolean", "Skip endpoints that would drop a field.", default=False
    ),
)


def declared(name: str) -> Field:
    """The declared request field ``name`` (scalar or input image)."""
    for f in (*FIELDS, *INPUT_FIELDS):
        if f.name == name:
            return f
    raise KeyError(name)
