"""Headers every response carries, added once in the outermost middleware.

``X-Content-Type-Options: nosniff`` (a stored image or JSON error is never run as a
script), ``Referrer-Policy: no-referrer`` (signed file URLs never leak through a Referer),
and for HTML pages a restrictive CSP: scripts only from the gateway itself, never inline;
no framing. A page that sets its own CSP keeps it.
"""

from __future__ import annotations

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))


def add_security_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """Add the missing security headers to a raw ASGI header list, in place."""
    present = {name.lower() for name, _ in headers}
    for name, value in _ALWAYS:
        if name not in present:
            headers.append((name, value))
    if b"content-security-policy" in present:
        return
    for name, value in headers:
        if name.lower() == b"content-type" and value.lower().startswith(b"text/html"):
            headers.append((b"content-security-policy", CSP.encode()))
            return
