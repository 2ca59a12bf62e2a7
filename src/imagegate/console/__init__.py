"""The web console: static assets shipped in the package, served at ``/console``.

Nothing is fetched from outside: the page, its modules and styles come from this
package's ``static`` folder, and the browser talks only to this gateway's own API with
the key the user typed (kept in the tab's ``sessionStorage``). A strict Content Security
Policy allows scripts, styles and connections to this origin only, and no inline script.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from imagegate.api.auth import authenticate
from imagegate.core.errors import NotFound

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
_STATIC = files("imagegate.console") / "static"
_cache: dict[str, bytes] = {}


def security_headers() -> dict[str, str]:
    """What every console response carries: the CSP and its usual companions."""
    return {
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "cache-control": "no-cache",
    }


def _asset(name: str) -> bytes | None:
    """A file from ``static/``; names are checked against a plain pattern, never joined raw."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    if name not in _cache:
        resource = _STATIC.joinpath(*parts)
        if not resource.is_file():
            return None
        _cache[name] = resource.read_bytes()
    return _cache[name]


async def console_page(request: Request) -> Response:
    """GET /console: the single page; the app inside routes by the URL fragment."""
    if request.url.path.endswith("/"):
        return RedirectResponse("/console", status_code=308)
    body = _asset("index.html") or b""
    return HTMLResponse(body, headers=security_headers())


async def console_asset(request: Request) -> Response:
    """GET /console/{path}: a module, stylesheet or image of the console."""
    name = request.path_params["path"]
    if name == "":
        return RedirectResponse("/console", status_code=308)
    suffix = name[name.rfind(".") :] if "." in name else ""
    body = _asset(name) if suffix in _TYPES else None
    if body is None:
        raise NotFound(f"No console file '{name}'.", code="not_found")
    # Revalidated on every load (no-cache), answered 304 when unchanged.
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = {**security_headers(), "etag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_TYPES[suffix], headers=headers)


async def session(request: Request) -> Response:
    """GET /console/api/session: who the signed-in key is, so the page shows what it may use.

    (The admin API still checks the key itself on every call.)
    """
    key = await authenticate(request)
    body: dict[str, Any] = {
        "key_id": key.id,
        "name": key.name,
        "admin": key.is_admin,
        "models": list(key.models) if key.models is not None else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def root_page(request: Request) -> Response:
    """GET /: a small landing page pointing at the console and the API docs."""
    return HTMLResponse(_asset("root.html") or b"", headers=security_headers())
