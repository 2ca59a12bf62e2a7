"""Host-header guard: the Host a client sends is not trusted to name the gateway.

Returned image URLs and redirect ``Location``s are built from the request's Host. A
request whose Host is not on the allow-list (the address the connection came in on,
``localhost``/``127.0.0.1``/``[::1]`` on that port, the host of ``public_url`` and
``server.allowed_hosts``) has its Host replaced, before any route sees it, by the host of
``public_url`` when one is set, else by the bound address the connection arrived at.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

_LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")


class HostGuardMiddleware:
    def __init__(self, app: ASGIApp, allowed: list[str], public_url: str | None) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed)
        self.public_host = urlsplit(public_url).netloc.lower() if public_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            bound = _bound(scope)
            host = _host_header(scope)
            if host is None or not self._allowed(host, bound):
                replacement = self.public_host or bound
                if replacement is not None:
                    headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
                    headers.append((b"host", replacement.encode("latin-1")))
                    scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)

    def _allowed(self, host: str, bound: str | None) -> bool:
        if host in self.allowed or host == self.public_host or host == bound:
            return True
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if name in self.allowed:
            return True
        bound_port = bound.rpartition(":")[2] if bound else None
        return name in _LOCAL_NAMES and port == bound_port


def _bound(scope: Scope) -> str | None:
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    host, port = server
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}"


def _host_header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1")).strip().lower()
    return None
