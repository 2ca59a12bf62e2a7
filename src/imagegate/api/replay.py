"""Replaying an ``Idempotency-Key``'s stored response (see ``generation.record``)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.responses import Response

from imagegate.accounts.idempotency import StoredResponse
from imagegate.api.streaming import sse_event
from imagegate.generation.record import EVENT_HEADER, REF, items_of
from imagegate.generation.services import Services


async def replay(gw: Services, stored: StoredResponse) -> Response:
    """The stored response, images read back from the store."""
    headers = {**stored.headers, "x-imagegate-idempotent-replay": "true"}
    payload = await _unstash(gw, orjson.loads(stored.body) if stored.body else {})
    event = headers.pop(EVENT_HEADER, None)
    if event is not None:
        body = sse_event(event, payload)
        return Response(body, stored.status, headers, media_type="text/event-stream")
    return Response(orjson.dumps(payload), stored.status, headers, media_type="application/json")


async def _unstash(gw: Services, payload: Any) -> Any:
    for item in items_of(payload):
        if REF in item:
            file_id = item.pop(REF)
            stored = await gw.store.get(file_id) if file_id else None
            item["b64_json"] = base64.b64encode(stored.data).decode() if stored else None
    return payload
