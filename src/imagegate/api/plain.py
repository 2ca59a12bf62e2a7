"""The image routes as plain ASGI endpoints, ahead of the framework's router.

A ``POST`` to one of these paths goes from the gateway's own middleware (request id,
access log, Host guard) straight to its endpoint: no exception middleware, exit stacks,
route table scan or per-route wrappers on the way. What those did for these routes is done
here: a ``GatewayError`` or ``HTTPException`` becomes the same OpenAI error envelope. Every
other method or path (a ``GET`` answered 405, a trailing slash redirected) goes on to the
router, which still holds the routes for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegate.api.errors import envelope_response, http_error_handler
from imagegate.core.errors import GatewayError

Endpoint = Callable[[Request], Awaitable[Response]]


class PlainRoutes:
    """Serve ``routes`` (path -> endpoint, ``POST`` only) directly; pass the rest on."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, Endpoint]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = None
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(_route_path(scope))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except GatewayError as exc:
            response = envelope_response(exc)
        except HTTPException as exc:
            response = await http_error_handler(request, exc)
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` without the ``root_path`` it starts with."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path
