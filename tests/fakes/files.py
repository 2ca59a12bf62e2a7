"""The result files a fake upstream hosts at ``/files/{name}`` (as providers host results
at short-lived URLs), for adapters that fetch URL results."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response


def stored_file(files: Mapping[str, bytes], request: Request, media_type: str) -> Response:
    """The file ``request`` names, or 404 for one the fake never made (or dropped)."""
    data = files.get(request.path_params["name"])
    if data is None:
        return Response(status_code=404)
    return Response(data, media_type=media_type)
