"""``UpstreamClient``: the adapters' ``httpx.AsyncClient``, with a short path for plain calls.

The adapters' usual call is ``post(url, content=bytes, headers=dict, timeout=...)``; httpx's
client layer (request building, cookie extraction, response streaming) costs more loop CPU
than the wire itself, so such a call goes straight to the ``AiohttpTransport``'s session.
bench/README.md has the figures (and why httpx-aiohttp did not replace it).
"""

from __future__ import annotations

import http.cookiejar
import logging
import time
import urllib.request
from datetime import timedelta
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

from imagegate.upstream.transport import (
    AUTO_HEADERS,
    HTTP_VERSIONS,
    AiohttpTransport,
    header_value,
    httpx_error,
)

__all__ = ["UpstreamClient"]

_USE_DEFAULT: Any = httpx.USE_CLIENT_DEFAULT
_httpx_logger = logging.getLogger("httpx")  # the logger httpx's client logs each request to
_URL_CACHE_SIZE = 256
_PLAIN_METHODS = frozenset({"GET", "POST"})  # what the adapters call; others take httpx's path
# A plain call's target: httpx's parsed URL, aiohttp's, and the Host header httpx would send.
_Target = tuple[httpx.URL, URL, str]


class _RefuseUpstreamCookies(http.cookiejar.DefaultCookiePolicy):
    """Cookies set by upstreams are not kept: one gateway client serves every tenant."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class UpstreamClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose plain ``post``/``get`` skip httpx's client layer.

    A call is plain when ``url`` is an absolute http(s) ``str`` without credentials,
    ``content`` is ``bytes`` or None, ``headers`` a ``dict`` of ASCII ``str`` or None,
    ``timeout`` a number, None, an ``httpx.Timeout`` or the default, with no other argument;
    and the client was built with an ``AiohttpTransport`` and no proxy or mounts (given or
    from the environment), and has no auth, event hooks, cookies or default params and does
    not follow redirects. Such a call goes straight to the transport's aiohttp session, with
    the headers httpx would send, and returns an already read ``httpx.Response``
    (``request``, ``elapsed``, decoded ``content``, raw headers, ``next_request`` for a
    redirect, the transport's error classes): what httpx's own path returns. Any other call
    is httpx's. Only httpx's public API is used, so an httpx release that reshapes its
    internals cannot silently bypass what the short path checks.

    Cookies set by upstreams are not kept, on either path (the jar refuses them, unless
    ``cookies=`` is given): an upstream cookie (a CDN's bot cookie, say) would otherwise be
    sent on every tenant's later requests, and would turn the short path off for good.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kwargs.get("cookies") is None:
            self.cookies.jar.set_policy(_RefuseUpstreamCookies())
        # httpx fixes its transport and mounts at construction and shows neither afterwards,
        # so the short path's wire is decided here, from the same arguments.
        wire = kwargs.get("transport")
        routed = kwargs.get("mounts") or kwargs.get("proxy") or _env_proxies(kwargs)
        self._aiohttp_wire = wire if isinstance(wire, AiohttpTransport) and not routed else None
        self._response_encoding = kwargs.get("default_encoding", "utf-8")
        self._targets: dict[str, _Target] = {}
        self._timeout_dicts: dict[float | None, dict[str, float | None]] = {}

    async def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        auth: Any = _USE_DEFAULT,
        follow_redirects: Any = _USE_DEFAULT,
        timeout: Any = _USE_DEFAULT,
        extensions: Any = None,
    ) -> httpx.Response:
        """httpx's ``request`` (which its ``post`` and ``get`` call), short for a plain call."""
        if (
            method in _PLAIN_METHODS
            and data is None
            and files is None
            and json is None
            and params is None
            and cookies is None
            and auth is _USE_DEFAULT
            and follow_redirects is _USE_DEFAULT
            and extensions is None
            and (content is None or type(content) is bytes)
        ):
            response = await self._send_plain(method, url, content, headers, timeout)
            if response is not None:
                return response
        return await super().request(
            method, url, content=content, data=data, files=files, json=json, params=params,
            headers=headers, cookies=cookies, auth=auth, follow_redirects=follow_redirects,
            timeout=timeout, extensions=extensions,
        )  # fmt: skip

    # -- the short path ----------------------------------------------------------------

    async def _send_plain(
        self, method: str, url: Any, content: bytes | None, headers: Any, timeout: Any
    ) -> httpx.Response | None:
        """The response, or None when the call or the client is not plain."""
        transport = self._aiohttp_wire
        if (
            type(url) is not str
            or transport is None
            or self.auth is not None
            or self.follow_redirects
            or self.is_closed
            or self.params
            or any(self.event_hooks.values())
            or self.cookies
        ):
            return None
        target = self._target(url)
        timeouts = self._timeouts_for(timeout)
        merged = self._merged_headers(headers)
        if target is None or timeouts is None or merged is None:
            return None
        httpx_url, wire_url, host = target
        wire: CIMultiDict[str] = CIMultiDict(merged)
        wire.add("Host", host)  # aiohttp sends Host first wherever it is
        skip = [name for name in AUTO_HEADERS if name not in wire] or None
        # The headers in the order httpx's Request would put them, built once: with a
        # stream given, httpx.Request takes them as they are.
        ordered = [("Host", host)]
        if content:
            merged.append(("Content-Length", str(len(content))))
        elif method == "POST":
            ordered.append(("Content-Length", "0"))
        ordered += merged
        request = httpx.Request(
            method,
            httpx_url,
            headers=ordered,
            stream=httpx.ByteStream(content or b""),
            extensions={"timeout": timeouts},
        )
        request.read()  # so that request.content works, as it does on httpx's path
        session = transport.session_for_loop()
        start = time.perf_counter()
        upstream = await transport.open_response(
            session, request, wire_url, wire, content or None, skip
        )
        try:
            body = await upstream.read()  # whole, as httpx's non-streaming path reads it
        except (aiohttp.ClientError, OSError) as exc:
            upstream.close()
            raise httpx_error(exc, request) from exc
        except BaseException:  # cancelled mid-body: the connection can't be reused
            upstream.close()
            raise
        upstream.release()
        response = httpx.Response(
            upstream.status,
            headers=upstream.raw_headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions={
                "http_version": HTTP_VERSIONS.get(upstream.version or (1, 1), b"HTTP/1.1"),
                "reason_phrase": (upstream.reason or "").encode("latin-1", "replace"),
            },
            default_encoding=self._response_encoding,
        )
        response.read()  # httpx's decoders: Content-Encoding decoded once, as httpx does
        response.elapsed = timedelta(seconds=time.perf_counter() - start)
        _httpx_logger.info(
            'HTTP Request: %s %s "%s %d %s"',
            method, httpx_url, response.http_version, response.status_code,
            response.reason_phrase,
        )  # fmt: skip
        if response.has_redirect_location:  # not followed: httpx offers the next request
            response.next_request = await _next_request(request, response)
        return response

    def _target(self, url: str) -> _Target | None:
        target = self._targets.get(url)
        if target is not None:
            return target
        if not url.startswith(("http://", "https://")):
            return None
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return None
        if not parsed.host or parsed.userinfo:  # credentials become httpx's Basic auth
            return None
        target = (parsed, URL(str(parsed), encoded=True), parsed.netloc.decode("ascii"))
        if len(self._targets) >= _URL_CACHE_SIZE:  # polling URLs are one-off: drop the oldest
            del self._targets[next(iter(self._targets))]
        self._targets[url] = target
        return target

    def _timeouts_for(self, timeout: Any) -> dict[str, float | None] | None:
        if timeout is _USE_DEFAULT:
            return self.timeout.as_dict()
        if isinstance(timeout, httpx.Timeout):
            return timeout.as_dict()
        if timeout is not None and type(timeout) not in (int, float):
            return None
        cached = self._timeout_dicts.get(timeout)
        if cached is None:
            cached = httpx.Timeout(timeout).as_dict()
            if len(self._timeout_dicts) < 64:
                self._timeout_dicts[timeout] = cached
        return cached

    def _merged_headers(self, headers: Any) -> list[tuple[str, str]] | None:
        """The client's default headers updated with the caller's, in httpx's order."""
        if headers is None:
            headers = {}
        elif type(headers) is not dict:
            return None
        for name, value in headers.items():
            if (
                type(name) is not str
                or type(value) is not str
                or not name.isascii()
                or not value.isascii()
            ):
                return None  # httpx's own path encodes, or refuses, these
        given = {name.lower() for name in headers} if headers else set()
        merged = []
        for raw_name, raw_value in self.headers.raw:
            name = raw_name.decode("latin-1")
            lowered = name.lower()
            if lowered in _OWN_HEADERS:
                return None
            if lowered not in given:
                merged.append((name, header_value(raw_value)))
        if not given.isdisjoint(_OWN_HEADERS):
            return None  # httpx's path decides how these mix with its own
        merged.extend(headers.items())
        return merged


async def _next_request(request: httpx.Request, response: httpx.Response) -> httpx.Request | None:
    """The request httpx offers after a redirect it did not follow, built by httpx itself.

    A throwaway client answers ``request`` with the redirect's status and headers, so
    httpx's own redirect rules (method, URL, headers, body) apply without reaching into
    its internals; redirects are rare enough for the extra client not to matter. The
    plain call had no cookies, auth or hooks, and neither has the throwaway client.
    """
    reply = httpx.Response(response.status_code, headers=response.headers.raw)
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: reply)) as httpx_path:
        return (await httpx_path.send(request)).next_request


def _env_proxies(kwargs: dict[str, Any]) -> bool:
    """Whether httpx routes through proxies taken from the environment (``trust_env``)."""
    if not kwargs.get("trust_env", True):
        return False
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


# Headers httpx's Request sets itself unless given.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
