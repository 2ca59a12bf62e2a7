"""The aiohttp-backed httpx transport, against a real loopback server (uvicorn in a thread).

Each behaviour is checked through ``httpx.AsyncClient`` exactly as the adapters use it;
where httpx itself decides (redirects), the result is compared with a plain httpx client.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request

from fakes.asgi import serve_app
from fakes.http_server import Reply, free_port, serve_http
from imagegate.upstream import client as client_module
from imagegate.upstream.client import UpstreamClient
from imagegate.upstream.transport import AiohttpTransport
from tls_support import localhost_tls

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PAYLOAD = orjson.dumps({"data": [{"b64_json": "QUJD" * 4000}]})
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


class Upstream:
    """What the fake upstream records and the events the streaming tests drive it with."""

    def __init__(self) -> None:
        self.release_stream = threading.Event()
        self.hangs = 0  # requests that reached /hang
        self.lock = threading.Lock()


async def _until_disconnect(receive: Receive) -> None:
    """Hold the request open until the client hangs up (capped, so shutdown never waits)."""
    async with asyncio.timeout(30):
        while (await receive())["type"] != "http.disconnect":
            pass


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def upstream_app(state: Upstream) -> Any:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path = scope["path"]
        request = Request(scope, receive)
        if path == "/echo":
            body = await request.body()
            echo = {
                "method": scope["method"],
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_length": len(body),
            }
            await _reply(send, 200, orjson.dumps(echo), [(b"content-type", b"application/json")])
        elif path == "/form":
            parts: dict[str, Any] = {}
            async with request.form() as form:
                for name, value in form.multi_items():
                    if isinstance(value, str):
                        parts[name] = value
                    else:
                        data = await value.read()
                        parts[name] = [value.filename, value.content_type, data.hex()]
            await _reply(send, 200, orjson.dumps(parts), [(b"content-type", b"application/json")])
        elif path == "/dup":
            headers = [(b"x-dup", b"one"), (b"x-dup", b"two"), (b"set-cookie", b"a=1; Path=/")]
            headers.append((b"set-cookie", b"b=2; Path=/"))
            await _reply(send, 200, b"ok", headers)
        elif path == "/gzip":
            await _reply(send, 200, gzip.compress(PAYLOAD), [(b"content-encoding", b"gzip")])
        elif path == "/big":
            await _reply(send, 200, PAYLOAD * 64, [])
        elif path == "/stream":  # one chunk, then the rest once the test has seen it
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await asyncio.to_thread(state.release_stream.wait, 30)
            await send({"type": "http.response.body", "body": b"second"})
        elif path == "/stall-body":  # a chunk, then silence
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await _until_disconnect(receive)
        elif path == "/stall-sized":  # a Content-Length, a few bytes of it, then silence
            headers = [(b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await _until_disconnect(receive)
        elif path == "/hang":  # no response until the client gives up
            with state.lock:
                state.hangs += 1
            await _until_disconnect(receive)
        elif path == "/redirect":
            status = int(request.query_params.get("status", "302"))
            await _reply(send, status, b"", [(b"location", b"/echo?redirected=1")])
        else:
            await _reply(send, 404, b"not found", [])

    return app


@pytest.fixture(scope="module")
def upstream_state() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
def base_url(upstream_state: Upstream) -> Iterator[str]:
    with serve_app(upstream_app(upstream_state)) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=10) as http:
        yield http


async def test_json_post_round_trip_keeps_caller_headers(
    client: httpx.AsyncClient, base_url: str
) -> None:
    body = {"prompt": "a lighthouse", "n": 1}
    response = await client.post(
        f"{base_url}/echo",
        params={"api-version": "2025-04-01"},
        json=body,
        headers={"Authorization": "Bearer sk-test", "X-Trace": "t1"},
    )
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"
    echo = response.json()
    headers = dict(echo["headers"])
    assert len(headers) == len(echo["headers"])  # nothing sent twice
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["x-trace"] == "t1"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("python-httpx/")
    assert headers["accept-encoding"] == client.headers["accept-encoding"]
    assert headers["content-length"] == str(echo["body_length"])
    assert orjson.loads(response.request.content) == body
    assert echo["body_sha256"] == hashlib.sha256(response.request.content).hexdigest()
    assert echo["query"] == "api-version=2025-04-01"
    assert "transfer-encoding" not in headers


async def test_url_credentials_and_encoding_as_plain_httpx_sends_them(base_url: str) -> None:
    """Userinfo becomes httpx's Basic auth; a signed query string goes out byte for byte."""
    url = base_url.replace("http://", "http://user:pw@")
    query = "sig=a%2Fb%3D%3D&x=1%2B2&e=caf%C3%A9&sp=a%20b"
    seen = []
    for transport in (AiohttpTransport(), None):
        async with httpx.AsyncClient(transport=transport) as http:
            echo = (await http.get(f"{url}/echo?{query}#fragment")).json()
            seen.append((dict(echo["headers"])["authorization"], echo["query"]))
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(f"{base_url}/echo", headers={"X-Bad": "a\r\nInjected: 1"})
    assert seen[0] == seen[1] == ("Basic dXNlcjpwdw==", query)


async def test_bodyless_get_sends_no_body_headers(client: httpx.AsyncClient, base_url: str) -> None:
    echo = (await client.get(f"{base_url}/echo")).json()
    names = [name for name, _ in echo["headers"]]
    assert echo["method"] == "GET"
    assert "content-length" not in names and "content-type" not in names


async def test_post_without_content_type_sends_none(
    client: httpx.AsyncClient, base_url: str
) -> None:
    echo = (await client.post(f"{base_url}/echo", content=b"raw bytes")).json()
    headers = dict(echo["headers"])
    assert "content-type" not in headers
    assert headers["content-length"] == "9" and echo["body_length"] == 9


async def test_head_response_has_no_body(client: httpx.AsyncClient, base_url: str) -> None:
    response = await client.head(f"{base_url}/big")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(PAYLOAD) * 64)
    assert response.content == b""
    assert (await client.get(f"{base_url}/echo")).status_code == 200  # connection reusable


async def test_multipart_upload_arrives_intact(client: httpx.AsyncClient, base_url: str) -> None:
    response = await client.post(
        f"{base_url}/form",
        data={"prompt": "add a hat", "n": "2"},
        files=[
            ("image[]", ("a.png", PNG, "image/png")),
            ("image[]", ("b.png", PNG[::-1], "image/png")),
            ("mask", ("mask.png", b"\x00" * 1000, "image/png")),
        ],
    )
    assert response.status_code == 200
    parts = response.json()
    assert parts["prompt"] == "add a hat" and parts["n"] == "2"
    assert parts["image[]"] == ["b.png", "image/png", PNG[::-1].hex()]  # the last of the two
    assert parts["mask"] == ["mask.png", "image/png", ("00" * 1000)]
    echo = (await client.post(f"{base_url}/echo", files={"image": ("a.png", PNG)})).json()
    assert dict(echo["headers"])["content-length"] == str(echo["body_length"])


async def test_streamed_request_body_is_sent_chunked(
    client: httpx.AsyncClient, base_url: str
) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 1000

    echo = (await client.post(f"{base_url}/echo", content=pieces())).json()
    assert echo["body_length"] == 5000
    expected = b"".join(bytes([i]) * 1000 for i in range(5))
    assert echo["body_sha256"] == hashlib.sha256(expected).hexdigest()
    assert dict(echo["headers"])["transfer-encoding"] == "chunked"


async def test_duplicate_response_headers_are_kept(
    client: httpx.AsyncClient, base_url: str
) -> None:
    response = await client.get(f"{base_url}/dup")
    assert response.headers.get_list("x-dup") == ["one", "two"]
    assert len(response.headers.get_list("set-cookie")) == 2
    assert dict(client.cookies) == {"a": "1", "b": "2"}  # httpx's jar, not aiohttp's
    echo = (await client.get(f"{base_url}/echo")).json()
    assert [v for k, v in echo["headers"] if k == "cookie"] == ["a=1; b=2"]


async def test_gzip_response_is_decoded_once(client: httpx.AsyncClient, base_url: str) -> None:
    response = await client.get(f"{base_url}/gzip")
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == PAYLOAD
    async with client.stream("GET", f"{base_url}/gzip") as streamed:
        raw = b"".join([chunk async for chunk in streamed.aiter_raw()])
    assert gzip.decompress(raw) == PAYLOAD


async def test_large_response_body(client: httpx.AsyncClient, base_url: str) -> None:
    response = await client.get(f"{base_url}/big")
    assert response.content == PAYLOAD * 64


async def test_stream_yields_chunks_before_the_server_finishes(
    client: httpx.AsyncClient, base_url: str, upstream_state: Upstream
) -> None:
    upstream_state.release_stream.clear()
    async with client.stream("POST", f"{base_url}/stream", json={"stream": True}) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        first = await anext(chunks)
        assert first == b"first"  # the server is still waiting for this test
        upstream_state.release_stream.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"second"


async def test_read_timeout_waiting_for_headers(client: httpx.AsyncClient, base_url: str) -> None:
    with pytest.raises(httpx.ReadTimeout) as info:
        await client.get(f"{base_url}/hang", timeout=httpx.Timeout(5, read=0.2))
    assert info.value.request.url.path == "/hang"


async def test_read_timeout_while_streaming_the_body(
    client: httpx.AsyncClient, base_url: str
) -> None:
    timeout = httpx.Timeout(5, read=0.2)
    async with client.stream("GET", f"{base_url}/stall-body", timeout=timeout) as response:
        chunks = response.aiter_raw()
        assert await anext(chunks) == b"first"
        with pytest.raises(httpx.ReadTimeout):
            await anext(chunks)
    with pytest.raises(httpx.ReadTimeout):
        await client.get(f"{base_url}/stall-body", timeout=timeout)
    with pytest.raises(httpx.ReadTimeout):  # a sized body is read in one piece
        await client.get(f"{base_url}/stall-sized", timeout=timeout)


@contextmanager
def raw_server(reply: bytes) -> Iterator[str]:
    """A loopback server that answers every request with ``reply`` verbatim, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so the loop notices ``stop``
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    request += piece
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # hangs up without a response
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["no-response", "short-body", "unfinished-chunks", "garbage"],
)
async def test_broken_responses_raise_what_httpx_raises(reply: bytes) -> None:
    raised = []
    with raw_server(reply) as url:
        for transport in (AiohttpTransport(), None):
            async with httpx.AsyncClient(transport=transport, timeout=10) as http:
                with pytest.raises(httpx.TransportError) as info:
                    await http.get(f"{url}/x")
                raised.append(type(info.value))
    assert raised[0] is raised[1] is httpx.RemoteProtocolError


async def test_waiting_too_long_for_the_pool_is_a_connect_timeout(
    base_url: str, upstream_state: Upstream
) -> None:
    """aiohttp's connect timeout covers the pool wait; httpx would say PoolTimeout."""
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport, timeout=10) as http:
        before = upstream_state.hangs
        holder = asyncio.create_task(http.get(f"{base_url}/hang"))
        while upstream_state.hangs == before:
            await asyncio.sleep(0.005)
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(f"{base_url}/echo", timeout=httpx.Timeout(10, connect=0.1, pool=0.1))
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


async def test_refused_port_is_a_connect_error(client: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{free_port()}/echo"
    with pytest.raises(httpx.ConnectError) as info:
        await client.get(url)
    assert str(info.value.request.url) == url


async def test_unresolvable_host_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.get("http://imagegate-test.invalid/echo")


async def test_unsupported_scheme(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.get("ftp://127.0.0.1/echo")


async def test_tls_is_verified(tmp_path: Path) -> None:
    server_tls, trusting = localhost_tls(tmp_path)
    with serve_http({"/ok": Reply(body=b"ok")}, ssl_context=server_tls) as server:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            with pytest.raises(httpx.ConnectError):  # not in certifi's bundle
                await http.get(f"https://localhost:{server.port}/ok")
        async with httpx.AsyncClient(transport=AiohttpTransport(verify=trusting)) as http:
            assert (await http.get(f"https://localhost:{server.port}/ok")).text == "ok"
            with pytest.raises(httpx.ConnectError):  # the certificate names localhost only
                await http.get(f"https://127.0.0.1:{server.port}/ok")
    assert server.paths == ["/ok"]


@pytest.mark.parametrize("follow", [False, True])
async def test_redirects_are_httpx_s_to_follow(base_url: str, follow: bool) -> None:
    seen = []
    for transport in (AiohttpTransport(), None):
        async with httpx.AsyncClient(transport=transport, follow_redirects=follow) as http:
            response = await http.post(f"{base_url}/redirect", json={"a": 1})
            body = response.json() if response.status_code == 200 else None
            seen.append(
                (
                    response.status_code,
                    [r.status_code for r in response.history],
                    str(response.url).removeprefix(base_url),
                    body and (body["method"], body["query"], body["body_length"]),
                )
            )
    assert seen[0] == seen[1]
    expected_status = 200 if follow else 302
    assert seen[0][0] == expected_status


async def test_cancelled_requests_free_their_connection(
    base_url: str, upstream_state: Upstream
) -> None:
    """With one connection in the pool, every cancelled request must give it back."""
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10)) as http:
        for _ in range(10):  # cancelled while waiting for the response headers
            before = upstream_state.hangs
            task = asyncio.create_task(http.get(f"{base_url}/hang"))
            while upstream_state.hangs == before:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for _ in range(10):  # cancelled while reading the body
            first = asyncio.Event()

            async def stalled_body(first: asyncio.Event) -> None:
                async with http.stream("GET", f"{base_url}/stall-body") as response:
                    async for _ in response.aiter_raw():
                        first.set()

            reader = asyncio.create_task(stalled_body(first))
            await first.wait()
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
        # cancelled while queued for the pool behind a request holding the connection
        before = upstream_state.hangs
        holder = asyncio.create_task(http.get(f"{base_url}/hang"))
        while upstream_state.hangs == before:
            await asyncio.sleep(0.005)
        queued = [asyncio.create_task(http.get(f"{base_url}/echo")) for _ in range(20)]
        await asyncio.sleep(0)
        for task in [*queued, holder]:
            task.cancel()
        await asyncio.gather(*queued, holder, return_exceptions=True)
        for _ in range(3):
            response = await http.get(f"{base_url}/echo", timeout=httpx.Timeout(10, pool=5))
            assert response.status_code == 200


async def test_unread_streams_release_the_pool(base_url: str) -> None:
    """Leaving ``client.stream`` early closes (not reuses) the half-read connection."""
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(10, pool=5)) as http:
        for _ in range(5):
            async with http.stream("GET", f"{base_url}/big") as response:
                assert response.status_code == 200
                await anext(response.aiter_raw())
        for _ in range(5):
            assert (await http.get(f"{base_url}/echo")).status_code == 200


def test_client_built_outside_a_loop_works_in_successive_loops(base_url: str) -> None:
    """The session is made lazily in the loop that uses it, and again in a later loop."""
    http = httpx.AsyncClient(transport=AiohttpTransport(), timeout=10)

    async def get(**headers: str) -> list[str]:
        response = await http.get(f"{base_url}/echo", headers=headers)
        return [value for name, value in response.json()["headers"] if name == "connection"]

    # ``Connection: close`` is honoured, so this loop leaves no pooled connection behind
    assert asyncio.run(get(Connection="close")) == ["close"]

    async def get_and_close() -> list[str]:
        try:
            return await get()
        finally:
            await http.aclose()

    assert asyncio.run(get_and_close()) == ["keep-alive"]
    assert http.is_closed


# -- UpstreamClient: the short path for plain calls ------------------------------------


def _short(response: httpx.Response) -> bool:
    """Whether the short path answered: httpx's own path wraps the stream to time it."""
    return type(response.stream) is httpx.ByteStream


async def _both(
    call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
) -> tuple[httpx.Response, httpx.Response]:
    async with (
        UpstreamClient(transport=AiohttpTransport(), timeout=10) as upstream,
        httpx.AsyncClient(transport=AiohttpTransport(), timeout=10) as plain,
    ):
        return await call(upstream), await call(plain)


def _undated(response: httpx.Response) -> list[tuple[str, str]]:
    """The response headers but ``date``, which two calls may see a second apart."""
    return [(name, value) for name, value in response.headers.multi_items() if name != "date"]


def _seen(response: httpx.Response) -> list[tuple[str, str]]:
    """The request headers the echo server saw, in a stable order."""
    return sorted((name, value) for name, value in response.json()["headers"])


PLAIN_CALLS: dict[str, Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]] = {
    "post-json-bytes": lambda http, base: http.post(
        f"{base}/echo",
        content=orjson.dumps({"prompt": "a cat"}),
        headers={"Authorization": "Bearer sk", "Content-Type": "application/json"},
        timeout=30,
    ),
    "post-overrides-defaults": lambda http, base: http.post(
        f"{base}/echo?x=1",
        content=b"raw",
        headers={"user-agent": "mine/1", "Accept": "application/json", "X-Dup": "a"},
        timeout=httpx.Timeout(30, connect=5),
    ),
    "post-empty": lambda http, base: http.post(f"{base}/echo"),
    "get": lambda http, base: http.get(f"{base}/echo", headers={"X-Trace": "t"}),
    "get-duplicate-headers": lambda http, base: http.get(f"{base}/dup"),
    "get-gzip": lambda http, base: http.get(f"{base}/gzip"),
    "get-404": lambda http, base: http.get(f"{base}/missing", timeout=None),
}


@pytest.mark.parametrize("name", list(PLAIN_CALLS))
async def test_short_path_matches_httpx_s_path(base_url: str, name: str) -> None:
    short, plain = await _both(lambda http: PLAIN_CALLS[name](http, base_url))
    assert _short(short) and not _short(plain)
    assert short.status_code == plain.status_code
    assert _undated(short) == _undated(plain)
    assert short.content == plain.content
    assert (short.http_version, short.reason_phrase) == (plain.http_version, plain.reason_phrase)
    assert short.url == plain.url == short.request.url
    assert short.request.headers.multi_items() == plain.request.headers.multi_items()
    assert short.request.content == plain.request.content
    assert short.request.extensions == plain.request.extensions
    assert short.elapsed.total_seconds() >= 0
    if name.startswith("post") or name == "get":
        assert _seen(short) == _seen(plain)
        assert short.json()["body_sha256"] == plain.json()["body_sha256"]


async def test_short_path_decodes_gzip_once(base_url: str) -> None:
    async with UpstreamClient(transport=AiohttpTransport()) as http:
        response = await http.get(f"{base_url}/gzip")
    assert _short(response)
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == PAYLOAD and response.json() == orjson.loads(PAYLOAD)


async def test_short_path_status_errors_and_redirects(base_url: str) -> None:
    async with UpstreamClient(transport=AiohttpTransport()) as http:
        missing = await http.post(f"{base_url}/missing", content=b"{}")
        assert _short(missing)
        with pytest.raises(httpx.HTTPStatusError) as info:
            missing.raise_for_status()
        assert info.value.request.url == httpx.URL(f"{base_url}/missing")
        assert str(missing.request.url) == f"{base_url}/missing"
        redirect = await http.post(f"{base_url}/redirect", content=b"{}")
        assert _short(redirect) and redirect.status_code == 302
        assert redirect.next_request is not None
        assert str(redirect.next_request.url) == f"{base_url}/echo?redirected=1"


async def test_short_path_raises_what_httpx_s_path_raises(
    base_url: str, upstream_state: Upstream
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/echo"
    for client in (UpstreamClient, httpx.AsyncClient):
        async with client(transport=AiohttpTransport(), timeout=10) as http:
            with pytest.raises(httpx.ReadTimeout) as timed_out:
                await http.post(
                    f"{base_url}/hang", content=b"{}", timeout=httpx.Timeout(5, read=0.2)
                )
            assert timed_out.value.request.url.path == "/hang"
            with pytest.raises(httpx.ReadTimeout):  # stalls mid-body
                await http.get(f"{base_url}/stall-sized", timeout=httpx.Timeout(5, read=0.2))
            with pytest.raises(httpx.ConnectError) as info:
                await http.post(refused, content=b"{}")
            assert str(info.value.request.url) == refused
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(f"{base_url}/echo", headers={"X-Bad": "a\r\nInjected: 1"})
    with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort") as url:
        async with UpstreamClient(transport=AiohttpTransport()) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(f"{url}/x")


async def test_short_path_cancellation_frees_the_connection(
    base_url: str, upstream_state: Upstream
) -> None:
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=1))
    async with UpstreamClient(transport=transport, timeout=httpx.Timeout(10, pool=5)) as http:
        for _ in range(5):
            before = upstream_state.hangs
            task = asyncio.create_task(http.post(f"{base_url}/hang", content=b"{}"))
            while upstream_state.hangs == before:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for _ in range(3):  # a body that stalls, then times out, also gives the slot back
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"{base_url}/stall-sized", timeout=httpx.Timeout(5, read=0.1))
        response = await http.get(f"{base_url}/echo")
        assert _short(response) and response.status_code == 200


async def test_other_calls_take_httpx_s_path(base_url: str) -> None:
    async with UpstreamClient(transport=AiohttpTransport()) as http:
        by_json = await http.post(f"{base_url}/echo", json={"a": 1}, params={"v": "2"})
        assert not _short(by_json)
        assert by_json.json()["query"] == "v=2"
        assert dict(by_json.json()["headers"])["content-type"] == "application/json"
        by_files = await http.post(f"{base_url}/form", data={"n": "1"}, files={"f": ("a", b"x")})
        assert not _short(by_files) and by_files.json() == {
            "n": "1",
            "f": ["a", "application/octet-stream", "78"],
        }
        by_params = await http.get(f"{base_url}/echo", params={"q": "1"})
        assert not _short(by_params) and by_params.json()["query"] == "q=1"
        as_url = await http.get(httpx.URL(f"{base_url}/echo"))
        assert not _short(as_url)
        # A bytes value in a str-keyed dict: httpx takes it, though its annotation does not.
        bytes_value = {"X-B": b"1"}
        with_bytes_header = await http.get(f"{base_url}/echo", headers=bytes_value)  # type: ignore[arg-type]
        assert not _short(with_bytes_header)
    hooked: list[str] = []

    async def hook(request: httpx.Request) -> None:
        hooked.append(request.url.path)

    async with UpstreamClient(transport=AiohttpTransport(), event_hooks={"request": [hook]}) as h:
        assert not _short(await h.post(f"{base_url}/echo", content=b"{}"))
    assert hooked == ["/echo"]
    async with UpstreamClient(transport=AiohttpTransport(), cookies={"sid": "1"}) as http:
        response = await http.post(f"{base_url}/echo", content=b"{}")
        assert not _short(response)
        assert dict(response.json()["headers"])["cookie"] == "sid=1"
    async with UpstreamClient() as http:  # httpx's own transport
        assert not _short(await http.get(f"{base_url}/echo"))


async def test_upstream_cookies_are_not_kept(base_url: str) -> None:
    async with UpstreamClient(transport=AiohttpTransport()) as http:
        assert _short(await http.get(f"{base_url}/dup"))
        assert not _short(await http.get(f"{base_url}/dup", params={"long": "path"}))
        assert not http.cookies
        echo = await http.get(f"{base_url}/echo")
        assert _short(echo)  # still plain: no cookie turned the short path off
        assert "cookie" not in dict(echo.json()["headers"])


def _httpx_private_names() -> set[str]:
    """The private attributes and methods of httpx's client: free to change in any release."""
    names = set(dir(httpx.AsyncClient)) | set(vars(httpx.AsyncClient()))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_upstream_client_uses_only_httpx_s_public_api() -> None:
    """UpstreamClient neither reads httpx's private state nor names its own after it, so an
    httpx release that renames its internals cannot silently break or bypass the short path."""
    source = Path(client_module.__file__).read_text()
    tree = ast.parse(source)
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "UpstreamClient"]
    used = {
        node.attr
        for node in ast.walk(cls)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    assert not used & _httpx_private_names()


async def test_short_path_keeps_client_params_mounts_and_later_settings(base_url: str) -> None:
    async with UpstreamClient(transport=AiohttpTransport(), params={"v": "1"}) as http:
        response = await http.post(f"{base_url}/echo", content=b"{}")
        assert response.json()["query"] == "v=1"  # client-level params, as httpx sends them

    def mounted(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"mounted": str(request.url)})

    mounts = {f"{base_url}/": httpx.MockTransport(mounted)}
    async with UpstreamClient(transport=AiohttpTransport(), mounts=mounts) as http:
        response = await http.post(f"{base_url}/echo", content=b"{}")
        assert response.json() == {"mounted": f"{base_url}/echo"}  # the mount answered

    async with UpstreamClient(transport=AiohttpTransport()) as http:
        http.auth = httpx.BasicAuth("u", "p")  # set after construction: httpx's path
        response = await http.post(f"{base_url}/echo", content=b"{}")
        assert not _short(response)
        assert dict(response.json()["headers"])["authorization"].startswith("Basic ")
        http.auth = None  # type: ignore[assignment]  # httpx's setter takes None, unannotated
        http.follow_redirects = True
        followed = await http.post(f"{base_url}/redirect", content=b"{}")
        assert followed.json()["query"] == "redirected=1"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_short_path_offers_the_redirect_httpx_would(base_url: str, status: int) -> None:
    short, plain = await _both(
        lambda http: http.post(
            f"{base_url}/redirect?status={status}",
            content=b'{"a": 1}',
            headers={"Authorization": "Bearer sk", "Content-Type": "application/json"},
        )
    )
    assert _short(short) and short.status_code == plain.status_code == status
    ours, theirs = short.next_request, plain.next_request
    assert ours is not None and theirs is not None
    assert (ours.method, ours.url) == (theirs.method, theirs.url)
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    assert ours.read() == theirs.read()
