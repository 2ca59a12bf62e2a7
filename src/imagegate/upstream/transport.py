"""An ``httpx`` transport that sends requests through ``aiohttp``.

Adapters keep the httpx API (``client.post``, ``client.stream``, ``httpx.Response``, httpx
exceptions) while the wire work runs on aiohttp's connection layer, which costs the event
loop several times less CPU per request than httpcore + anyio. httpx's client layer still
does everything above the wire: redirects, cookies, auth, ``Content-Encoding`` decoding and
default headers; so aiohttp is told to follow no redirects, decompress nothing, keep no
cookies and add no headers of its own.

    http = UpstreamClient(transport=AiohttpTransport(limits=...), timeout=...)

``UpstreamClient`` (``upstream/client.py``) adds a short path for the adapters' usual call.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

__all__ = ["AiohttpResponseStream", "AiohttpTransport", "httpx_error"]

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

# Body headers aiohttp computes from the body it sends; httpx's copies would conflict.
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# Headers aiohttp adds when missing; httpx sent its own, or chose not to send one.
AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# A body with a Content-Length reaches httpx in pieces of about this size, so a typical
# image response (1-5 MB of b64 JSON) is one piece: every extra piece costs httpx a pass of
# its decoders and the whole body one more copy when httpx joins them. aiohttp's own reads
# are ~64 KiB each.
_SIZED_CHUNK = 8 * 1024 * 1024
# httpcore reads up to 100 KiB of status line + headers; aiohttp's default is 8 KiB a line.
_MAX_HEADER_LINE = 64 * 1024
HTTP_VERSIONS = {(1, 1): b"HTTP/1.1", (1, 0): b"HTTP/1.0", (0, 9): b"HTTP/0.9"}

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
                headers.add(key.decode("latin-1"), header_value(value))
        # Only names httpx did not send are passed, so the usual request takes aiohttp's
        # fast path (no skip set to merge).
        skip = [name for name in AUTO_HEADERS if name not in headers] or None
        url = request.url
        if url.userinfo:  # httpx's auth already made it a header; aiohttp would refuse both
            url = url.copy_with(userinfo=b"")
        data = await _request_body(request)
        # As httpx encoded the URL: signed URLs stay intact.
        wire_url = URL(str(url), encoded=True)
        response = await self.open_response(session, request, wire_url, headers, data, skip)
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=AiohttpResponseStream(request, response),
            extensions={
                "http_version": HTTP_VERSIONS.get(response.version or (1, 1), b"HTTP/1.1"),
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

    async def open_response(
        self,
        session: aiohttp.ClientSession,
        request: httpx.Request,
        url: URL,
        headers: CIMultiDict[str],
        data: Any,
        skip: list[str] | None,
    ) -> aiohttp.ClientResponse:
        """Send ``request`` on ``session`` as given, up to the response headers.

        aiohttp follows no redirect, and its errors come out as httpx's: the one place both
        this transport and ``UpstreamClient``'s short path map them.
        """
        try:
            return await session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                skip_auto_headers=skip,
                allow_redirects=False,
                timeout=self.client_timeout(request),
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise httpx_error(exc, request) from exc
        except ValueError as exc:  # aiohttp refused to write it (e.g. CR/LF in a header)
            raise httpx.LocalProtocolError(str(exc), request=request) from exc

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
            raise httpx_error(exc, self._request) from exc

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


def header_value(value: bytes) -> str:
    """aiohttp writes header values as UTF-8; httpx encoded them as ASCII or UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
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
