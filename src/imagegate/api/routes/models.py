"""``GET /v1/models`` and ``GET /v1/models/{id}``: the catalog as a caller may see it."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from imagegate.api.auth import authenticate
from imagegate.api.state import Gateway, gateway
from imagegate.catalog import lifecycle
from imagegate.catalog.catalog import unknown_model
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import NotFound

_STARTED = int(time.time())  # catalog entries carry no creation date; report start-up


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


async def list_models(request: Request) -> Response:
    """GET /v1/models: every catalog model, its operations, status and availability."""
    gw = gateway(request)
    key = await authenticate(request)
    data = [
        model_object(gw, spec)
        for spec in gw.catalog
        # a shut-down model is not offered (OpenAI's list drops them too)
        if key.allows_model(spec.id, spec.aliases) and not lifecycle.is_retired(spec)
    ]
    return _json({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    """GET /v1/models/{id}: one model (ids contain ``/``; aliases resolve). A model the
    key may not use is as unknown as a missing one; a shut-down one says when and what
    replaces it."""
    gw = gateway(request)
    key = await authenticate(request)
    model_id = request.path_params["model_id"]
    try:
        spec = gw.catalog.resolve(model_id)
    except NotFound:
        raise unknown_model(model_id, param=None) from None
    if not key.allows_model(spec.id, spec.aliases):
        raise unknown_model(model_id, param=None)
    lifecycle.refuse_if_retired(spec)
    return _json(model_object(gw, spec))


def model_object(gw: Gateway, spec: ModelSpec) -> dict[str, Any]:
    """The one serializer of a model, shared by the list and the single-model route."""
    endpoints: list[dict[str, Any]] = []
    for endpoint in lifecycle.live_endpoints(spec).endpoints:
        provider = gw.providers.get(endpoint.provider)
        endpoints.append(
            {
                "provider": endpoint.provider,
                "upstream_model": endpoint.upstream_model,
                "status": provider.config.status if provider else "unknown",
                "available": bool(provider and provider.available),
                "pricing": endpoint.pricing.to_json() if endpoint.pricing.configured else None,
            }
        )
    statuses = {e["status"] for e in endpoints}
    return {
        "id": spec.id,
        "object": "model",
        "created": _STARTED,
        "owned_by": spec.id.split("/", 1)[0],
        "aliases": list(spec.aliases),
        "description": spec.description,
        "operations": sorted(spec.operations),
        "status": "stable" if "stable" in statuses else (sorted(statuses) or ["unknown"])[0],
        "available": any(e["available"] for e in endpoints),
        "sizes": list(spec.sizes),
        "free_size": _free_size(spec.free_size),
        "max_n": spec.n_max,
        "capabilities": _capabilities(spec),
        "endpoints": endpoints,
        **lifecycle.model_fields(spec),
    }


def _capabilities(spec: Any) -> dict[str, Any]:
    """The parameters a model takes, so a client (the console's playground) can offer them."""
    return {
        "default_size": spec.default_size,
        "qualities": list(spec.qualities or []),
        "styles": list(spec.styles),
        "output_formats": list(spec.output_formats),
        "backgrounds": list(spec.backgrounds),
        "moderations": list(spec.moderations or []),
        "max_n_by_operation": {op: spec.max_n(op) for op in sorted(spec.operations)},
        "max_input_images": spec.max_input_images,
        "supports_mask": spec.supports_mask,
        "input_formats": list(spec.input_formats),
    }


def _free_size(rule: Any) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {k: getattr(rule, k) for k in rule.__dataclass_fields__}
