"""``GET /v1/generations``: the key's generations, newest first (admin keys: everyone's).

The shape follows OpenAI's list endpoints: ``{"object": "list", "data", "first_id",
"last_id", "has_more"}``, paged with ``after`` (the last id seen) and ``limit``.
"""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounts.history import MAX_LIMIT, CursorNotFound, list_generations
from imagegate.api.auth import authenticate
from imagegate.api.state import gateway
from imagegate.core.errors import InvalidRequest, NotFound


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {MAX_LIMIT}; got {raw!r}.", param="limit"
        )
    return int(raw)


async def list_generations_route(request: Request) -> Response:
    key = await authenticate(request)
    params = request.query_params
    limit = _limit(params.get("limit"))
    after = params.get("after") or None
    key_id = None if key.is_admin else key.id
    if key.is_admin and params.get("key_id"):
        key_id = params["key_id"]
    db = gateway(request).db
    try:
        page = await run_in_threadpool(list_generations, db, key_id, after, limit)
    except CursorNotFound:
        raise NotFound(
            f"No generation with id '{after}'.", param="after", code="generation_not_found"
        ) from None
    data = [r.to_json(upstream_costs=key.is_admin) for r in page.records]
    body = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }
    return Response(orjson.dumps(body), media_type="application/json")
