"""``GET /v1/files/{id}``: signed downloads of stored images."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from imagegate.api.state import gateway
from imagegate.core.errors import NotFound


async def get_file(request: Request) -> Response:
    """GET /v1/files/{id}?exp=&sig=: the link is the credential. Any failure looks alike."""
    gw = gateway(request)
    file_id = request.path_params["file_id"]
    exp = request.query_params.get("exp", "")
    sig = request.query_params.get("sig", "")
    stored = None
    if gw.signer.verify(file_id, exp, sig, time.time()):
        stored = await gw.store.get(file_id)
    if stored is None:
        raise NotFound(
            "File not found, or the link is invalid or has expired.", code="file_not_found"
        )
    remaining = max(0, int(exp) - int(time.time()))
    return Response(
        stored.data,
        media_type=stored.content_type,
        headers={
            "cache-control": f"private, max-age={remaining}",
            "x-content-type-options": "nosniff",
        },
    )
