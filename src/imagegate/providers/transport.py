"""An ``httpx`` transport that sends requests through ``aiohttp``.

Adapters keep the httpx API (``client.post``, ``client.stream``, ``httpx.Response``, httpx
exceptions) while the wire work runs on aiohttp's connection layer, which costs the event
loop several times less CPU per request than httpcore + anyio. httpx's client layer still
does everything above the wire: redirects, cookies, auth, ``Content-Encoding`` decoding and
default headers; so aiohttp is told to follow no redirects, decompress nothing, keep no
cookies and add no headers of its own.

    http = UpstreamClient(transport=AiohttpTransport(limits=...), timeout=...)

``UpstreamClient`` is that ``httpx.AsyncClient`` with a short path for the adapters' usual
call, ``post(url, content=bytes, headers=dict, timeout=...)``: httpx's client layer (request
building, cookie extraction, response streaming) costs more loop CPU than the wire itself.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

__all__ = ["AiohttpTransport", "UpstreamClient"]

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

# Body headers aiohttp computes from the body it sends; httpx's copies would conflict.
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# Headers aiohttp adds when missing; httpx sent its own, or chose not to send one.
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# A body with a Content-Length reaches httpx in pieces of about this size, so a typical
# image response (1-5 MB of b64 JSON) is one piece: every extra piece costs httpx a pass of
# its decoders and the whole body one more copy when httpx joins them. aiohttp's own reads
# are ~64 KiB each.
_SIZED_CHUNK = 8 * 1024 * 1024
# httpcore reads up to 100 KiB of status line + headers; aiohttp's default is 8 KiB a line.
_MAX_HEADER_LINE = 64 * 1024
_HTTP_VERSIONS = {(1, 1): b"HTTP/1.1", (1, 0): b"HTTP/1.0", (0, 9): b"HTTP/0.9"}

Timeouts = tuple[float | None, float | None, float | None]


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` over one lazily created ``aiohttp.ClientSession``.

    The session is created on first use, inside the event loop that uses it, because an
    aiohttp session belongs to the loop it was created in and clients are sometimes built
    outside any loop. ``limits`` follows httpx: ``max_connections`` caps all connections
    (no lower per-host cap), idle connections are kept ``keepalive_expiry`` seconds.
    aiohttp has no separate cap on idle connections, so ``max_keepalive_connections`` only
    matters as 0 (no reuse). ``verify`` is httpx's: True checks certificates against
    certifi's CA bundle, as a plain ``httpx.AsyncClient`` does.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = DEFAULT_LIMITS,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._limits = limits
        self._verify = verify
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}
        self._closed = False

    # -- httpx.AsyncBaseTransport ------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self.session_for_loop()
        scheme = request.url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'.", request=request
            )
        headers: CIMultiDict[str] = CIMultiDict()
        for key, value in request.headers.raw:
            if key.lower() not in _BODY_HEADERS:
                headers.add(key.decode("latin-1"), _header_value(value))
        # Only names httpx did not send are passed, so the usual request takes aiohttp's
        # fast path (no skip set to merge).
        skip = [name for name in _AUTO_HEADERS if name not in headers] or None
        url = request.url
        if url.userinfo:  # httpx's auth already made it a header; aiohttp would refuse both
            url = url.copy_with(userinfo=b"")
        data = await _request_body(request)
        try:
            response = await session.request(
                request.method,
                URL(str(url), encoded=True),  # as httpx encoded it: signed URLs stay intact
                headers=headers,
                data=data,
                skip_auto_headers=skip,
                allow_redirects=False,
                timeout=self.client_timeout(request),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise _httpx_error(exc, request) from exc
        except ValueError as exc:  # aiohttp refused to write it (e.g. CR/LF in a header)
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=AiohttpResponseStream(request, response),
            extensions={
                "http_version": _HTTP_VERSIONS.get(response.version or (1, 1), b"HTTP/1.1"),
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._loop is asyncio.get_running_loop():
            await session.close()
        else:
            session.detach()  # another loop's connections can't be closed from this one

    # -- session and timeouts ----------------------------------------------------------

    def session_for_loop(self) -> aiohttp.ClientSession:
        """The session of the running loop (created here on first use)."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop:
            return session
        if self._closed:
            raise RuntimeError("the aiohttp transport is closed")
        if session is not None:
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError("the aiohttp transport is in use by another event loop")
            session.detach()  # its loop is gone: nothing to close it with
        self._session, self._loop = self._new_session(), loop
        return self._session

    def _new_session(self) -> aiohttp.ClientSession:
        limits = self._limits
        verify = self._verify
        ssl_context: ssl.SSLContext | bool = (
            httpx.create_ssl_context(verify=verify) if verify is True else verify
        )
        no_reuse = limits.max_keepalive_connections == 0
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            limit_per_host=0,
            force_close=no_reuse,
            keepalive_timeout=None if no_reuse else limits.keepalive_expiry,
            use_dns_cache=True,
            resolver=aiohttp.ThreadedResolver(),  # getaddrinfo, as httpx resolves
            ssl=ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx's client keeps the cookies
            auto_decompress=False,  # httpx decodes Content-Encoding itself
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
        )

    def client_timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's per-request ``{connect, read, write, pool}`` as aiohttp timeouts.

        aiohttp's ``connect`` covers waiting for a pool slot, DNS and connecting, so it
        gets ``pool + connect``; ``sock_connect`` bounds each connection attempt. aiohttp has
        no write timeout; ``read`` bounds every wait for response bytes, headers included.
        """
        timeout: dict[str, float | None] = request.extensions.get("timeout") or {}
        connect, read, pool = timeout.get("connect"), timeout.get("read"), timeout.get("pool")
        key = (connect, read, pool)
        cached = self._timeouts.get(key)
        if cached is None:
            acquire = None if connect is None else connect + (pool or 0.0)
            cached = aiohttp.ClientTimeout(
                total=None, connect=acquire, sock_connect=connect, sock_read=read
            )
            if len(self._timeouts) < 64:
                self._timeouts[key] = cached
        return cached


class AiohttpResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's response stream.

    A body without a ``Content-Length`` (chunked: SSE) is yielded as aiohttp receives it,
    so ``client.stream`` sees events as they arrive; a sized one in pieces of ~8 MiB.
    ``aclose`` hands a fully read connection back to the pool and closes any other.
    """

    def __init__(self, request: httpx.Request, response: aiohttp.ClientResponse) -> None:
        self._request = request
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            if self._response.content_length is None:  # chunked or to EOF: SSE streams
                while chunk := await content.readany():
                    yield chunk
                return
            pending: list[bytes] = []
            size = 0
            while chunk := await content.readany():
                pending.append(chunk)
                size += len(chunk)
                if size >= _SIZED_CHUNK:
                    yield b"".join(pending)
                    pending, size = [], 0
            if pending:
                yield b"".join(pending)
        except (aiohttp.ClientError, OSError) as exc:
            self._response.close()
            raise _httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        # release() reuses the connection only when the body was read to its end.
        self._response.release()


async def _request_body(request: httpx.Request) -> Any:
    """The body for aiohttp: bytes when its size is known, else an async iterator.

    A stream with a Content-Length (multipart uploads) is read into memory: it is built
    from in-memory parts anyway, and sending it with a Content-Length rather than chunked
    keeps upstreams that refuse chunked uploads working.
    """
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        body = request.content
        return body or None
    if "content-length" in request.headers:
        body = b"".join([chunk async for chunk in stream])  # type: ignore[union-attr]
        return body or None
    return _chunks(stream)  # type: ignore[arg-type]


async def _chunks(stream: httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


def _header_value(value: bytes) -> str:
    """aiohttp writes header values as UTF-8; httpx encoded them as ASCII or UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception a plain httpx client raises for the same failure."""
    cls: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        cls = httpx.ConnectTimeout
    elif isinstance(exc, TimeoutError):  # SocketTimeoutError: sock_read, headers or body
        cls = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerFingerprintMismatch):
        cls = httpx.ConnectError  # refused, DNS, TLS handshake and certificate failures
    elif isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        cls = httpx.RemoteProtocolError  # hung up early, truncated or malformed response
    elif isinstance(exc, aiohttp.NonHttpUrlClientError | aiohttp.InvalidURL):
        cls = httpx.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ClientConnectionError | OSError):
        cls = httpx.ReadError  # reset, broken pipe, connection closed under us
    else:
        cls = httpx.TransportError
    return cls(str(exc) or type(exc).__name__, request=request)


# -- the client ------------------------------------------------------------------------

_USE_DEFAULT: Any = httpx.USE_CLIENT_DEFAULT
_httpx_logger = logging.getLogger("httpx")  # the logger httpx's client logs each request to
_URL_CACHE_SIZE = 256
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

    async def post(
        self,
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
        if (
            data is None
            and files is None
            and json is None
            and params is None
            and cookies is None
            and auth is _USE_DEFAULT
            and follow_redirects is _USE_DEFAULT
            and extensions is None
            and (content is None or type(content) is bytes)
        ):
            response = await self._send_plain("POST", url, content, headers, timeout)
            if response is not None:
                return response
        return await super().post(
            url, content=content, data=data, files=files, json=json, params=params,
            headers=headers, cookies=cookies, auth=auth, follow_redirects=follow_redirects,
            timeout=timeout, extensions=extensions,
        )  # fmt: skip

    async def get(
        self,
        url: httpx.URL | str,
        *,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        auth: Any = _USE_DEFAULT,
        follow_redirects: Any = _USE_DEFAULT,
        timeout: Any = _USE_DEFAULT,
        extensions: Any = None,
    ) -> httpx.Response:
        if (
            params is None
            and cookies is None
            and auth is _USE_DEFAULT
            and follow_redirects is _USE_DEFAULT
            and extensions is None
        ):
            response = await self._send_plain("GET", url, None, headers, timeout)
            if response is not None:
                return response
        return await super().get(
            url, params=params, headers=headers, cookies=cookies, auth=auth,
            follow_redirects=follow_redirects, timeout=timeout, extensions=extensions,
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
        skip = [name for name in _AUTO_HEADERS if name not in wire] or None
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
        try:
            upstream = await session.request(
                method,
                wire_url,
                headers=wire,
                data=content or None,
                skip_auto_headers=skip,
                allow_redirects=False,
                timeout=transport.client_timeout(request),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise _httpx_error(exc, request) from exc
        except ValueError as exc:  # aiohttp refused to write it (e.g. CR/LF in a header)
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        try:
            body = await upstream.read()  # whole, as httpx's non-streaming path reads it
        except (aiohttp.ClientError, OSError) as exc:
            upstream.close()
            raise _httpx_error(exc, request) from exc
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
                "http_version": _HTTP_VERSIONS.get(upstream.version or (1, 1), b"HTTP/1.1"),
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
                merged.append((name, _header_value(raw_value)))
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
