"""The SSRF-guarded image fetcher, against real loopback servers.

Refusals are proven to happen before any connection: blocked URLs go through a client
whose transport records and fails every request that reaches it, or at a recording
loopback server that must see nothing. No test ever connects beyond loopback.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.http_server import FakeHTTPServer, Reply, free_port, serve_http
from imagegate.core.errors import InvalidRequest, PayloadTooLarge
from imagegate.upstream.fetch import SafeFetcher, disallowed_address_class
from tls_support import localhost_tls

PARAM = "image_url"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class NoNetwork(httpx.AsyncBaseTransport):
    """A transport that records and fails any request that gets past the guard."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        raise AssertionError(f"the guard let a request through to {request.url}")


@pytest.fixture
def server() -> Iterator[FakeHTTPServer]:
    with serve_http({"/img": Reply(body=PNG, headers={"Content-Type": "image/png"})}) as srv:
        yield srv


@pytest.fixture
async def fetcher(server: FakeHTTPServer) -> AsyncIterator[SafeFetcher]:
    """Trusts the loopback server by IP, as a provider's configured upstream would be."""
    async with SafeFetcher(allow_hosts=["127.0.0.1"], max_bytes=4096, timeout_s=2) as f:
        yield f


async def refusal(fetcher: SafeFetcher, url: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        await fetcher.fetch(url, param=PARAM)
    assert info.value.param == PARAM
    assert info.value.status == 400
    return info.value


# --- addresses and names that must never be fetched ------------------------------------

BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("[::1]", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.100.100.200", "cloud metadata"),
    ("0.0.0.0", "unspecified"),
    ("[::]", "unspecified"),
    ("[fc00::1]", "private"),
    ("[fd00:ec2::254]", "cloud metadata"),
    ("[fe80::1]", "link-local"),
    ("[fec0::1]", "site-local"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:a9fe:a9fe]", "cloud metadata"),
    ("[64:ff9b::a00:1]", "private"),
    ("[64:ff9b:1::1]", "private"),
    ("[2002:7f00:1::]", "loopback"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "reserved"),
    ("2130706433", "loopback"),
    ("0x7f.1", "loopback"),
    ("127.1", "loopback"),
    ("localhost", "loopback"),
    ("LOCALHOST.", "loopback"),
    ("images.localhost", "loopback"),
    ("metadata.google.internal", "cloud metadata"),
]


@pytest.mark.parametrize(("host", "label"), BLOCKED, ids=[h for h, _ in BLOCKED])
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_blocked_destinations_are_refused_before_any_request(
    host: str, label: str, scheme: str
) -> None:
    transport = NoNetwork()
    async with httpx.AsyncClient(transport=transport) as client:
        fetcher = SafeFetcher(max_bytes=1024, client=client)
        error = await refusal(fetcher, f"{scheme}://{host}:8080/cat.png")
    assert error.code == "url_not_allowed"
    assert f"{label} address" in error.message
    assert transport.requests == []


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]", "2130706433"])
async def test_loopback_server_sees_no_request(server: FakeHTTPServer, host: str) -> None:
    async with SafeFetcher(max_bytes=4096) as fetcher:
        error = await refusal(fetcher, f"http://{host}:{server.port}/img")
    assert error.code == "url_not_allowed"
    assert server.paths == []


async def test_allow_list_entry_with_port_covers_only_that_port(server: FakeHTTPServer) -> None:
    async with SafeFetcher(allow_hosts=[f"127.0.0.1:{server.port + 1}"], max_bytes=4096) as f:
        assert (await refusal(f, f"{server.url}/img")).code == "url_not_allowed"
    async with SafeFetcher(allow_hosts=[f"127.0.0.1:{server.port}"], max_bytes=4096) as f:
        assert await f.fetch(f"{server.url}/img", param=PARAM) == PNG
    assert server.paths == ["/img"]


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::"]
)
def test_public_addresses_pass_the_check(ip: str) -> None:
    assert disallowed_address_class(ipaddress.ip_address(ip)) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/cat.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_GET",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "http:///cat.png",
        "cat.png",
        "http://exa mple.com/",
        "http://%2e%2e/",
        "http://127.0.0.1:99999/",
        "http://[zz]/",
    ],
)
async def test_only_absolute_http_urls(url: str) -> None:
    transport = NoNetwork()
    async with httpx.AsyncClient(transport=transport) as client:
        error = await refusal(SafeFetcher(max_bytes=1024, client=client), url)
    assert error.code == "invalid_image_url"
    assert transport.requests == []


# --- what an allowed fetch does ------------------------------------------------------


async def test_fetches_bytes_from_allowed_host(
    fetcher: SafeFetcher, server: FakeHTTPServer
) -> None:
    assert await fetcher.fetch(f"{server.url}/img", param=PARAM) == PNG
    assert server.paths == ["/img"]
    assert server.requests[0].headers["Accept"] == "image/*"


async def test_hostname_is_pinned_to_the_checked_address_and_keeps_its_host_header(
    server: FakeHTTPServer,
) -> None:
    async with SafeFetcher(allow_hosts=["localhost"], max_bytes=4096) as fetcher:
        assert await fetcher.fetch(f"http://localhost:{server.port}/img", param=PARAM) == PNG
    assert server.requests[0].headers["Host"] == f"localhost:{server.port}"


async def test_connects_to_the_address_it_checked_not_a_fresh_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the first answer is checked and used; a second lookup would differ."""
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding_dns(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        if len(lookups) == 1:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    with (
        serve_http({"/img": Reply(body=PNG)}) as checked,
        serve_http({"/img": Reply(body=b"rebound")}, host="::1", port=checked.port) as rebound,
    ):
        async with SafeFetcher(allow_hosts=["rebind.test"], max_bytes=4096) as fetcher:
            url = f"http://rebind.test:{checked.port}/img"
            assert await fetcher.fetch(url, param=PARAM) == PNG
    assert lookups == ["rebind.test"]
    assert checked.requests[0].headers["Host"] == f"rebind.test:{checked.port}"
    assert rebound.paths == []


async def test_https_pins_the_address_but_verifies_the_name(tmp_path: Path) -> None:
    server_tls, client_tls = localhost_tls(tmp_path)
    with serve_http({"/img": Reply(body=PNG)}, ssl_context=server_tls) as srv:
        async with httpx.AsyncClient(verify=client_tls, trust_env=False) as client:
            fetcher = SafeFetcher(
                allow_hosts=["localhost", "127.0.0.1"], max_bytes=4096, client=client
            )
            # Control first (a failed handshake pools nothing): the certificate, valid for
            # "localhost" only, does not cover the bare IP, so verification is on.
            error = await refusal(fetcher, f"https://127.0.0.1:{srv.port}/img")
            # Connected to 127.0.0.1 all the same, the name travels in SNI and verifies.
            assert await fetcher.fetch(f"https://localhost:{srv.port}/img", param=PARAM) == PNG
    assert error.code == "image_url_unreachable"
    assert srv.paths == ["/img"]


async def test_derived_fetcher_trusts_extra_hosts_and_shares_the_client(
    server: FakeHTTPServer,
) -> None:
    async with SafeFetcher(max_bytes=4096) as base:
        assert (await refusal(base, f"{server.url}/img")).code == "url_not_allowed"
        first = base.with_extra_allowed_hosts([f"{server.url}/v1"])
        second = base.with_extra_allowed_hosts([f"127.0.0.1:{server.port}"])
        assert await first.fetch(f"{server.url}/img", param=PARAM) == PNG
        await first.aclose()  # must not close the shared client
        assert await second.fetch(f"{server.url}/img", param=PARAM) == PNG
        assert (await refusal(base, f"{server.url}/img")).code == "url_not_allowed"
    assert server.paths == ["/img", "/img"]


# --- redirects ---------------------------------------------------------------------


async def test_relative_redirect_is_followed(fetcher: SafeFetcher, server: FakeHTTPServer) -> None:
    server.routes["/old"] = Reply(status=301, headers={"Location": "/img"})
    assert await fetcher.fetch(f"{server.url}/old", param=PARAM) == PNG
    assert server.paths == ["/old", "/img"]


async def test_redirect_to_internal_host_is_refused(
    fetcher: SafeFetcher, server: FakeHTTPServer
) -> None:
    server.routes["/hop"] = Reply(
        status=302, headers={"Location": f"http://localhost:{server.port}/img"}
    )
    error = await refusal(fetcher, f"{server.url}/hop")
    assert error.code == "url_not_allowed"
    assert server.paths == ["/hop"]


async def test_redirect_to_other_scheme_is_refused(
    fetcher: SafeFetcher, server: FakeHTTPServer
) -> None:
    server.routes["/hop"] = Reply(status=307, headers={"Location": "file:///etc/passwd"})
    assert (await refusal(fetcher, f"{server.url}/hop")).code == "invalid_image_url"


async def test_redirect_loop_stops_at_the_limit(server: FakeHTTPServer) -> None:
    server.routes["/loop"] = Reply(status=302, headers={"Location": "/loop"})
    async with SafeFetcher(allow_hosts=["127.0.0.1"], max_bytes=4096, max_redirects=3) as f:
        error = await refusal(f, f"{server.url}/loop")
    assert error.code == "too_many_redirects"
    assert server.paths == ["/loop"] * 4


# --- size, time and upstream failures ----------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversize_body_is_refused(
    fetcher: SafeFetcher, server: FakeHTTPServer, chunked: bool
) -> None:
    server.routes["/big"] = Reply(body=b"x" * 10_000, chunked=chunked, chunk_size=1000)
    with pytest.raises(PayloadTooLarge) as info:
        await fetcher.fetch(f"{server.url}/big", param=PARAM)
    assert info.value.status == 413
    assert info.value.param == PARAM


async def test_body_of_exactly_max_bytes_is_accepted(
    fetcher: SafeFetcher, server: FakeHTTPServer
) -> None:
    server.routes["/edge"] = Reply(body=b"y" * 4096, chunked=True, chunk_size=1000)
    assert await fetcher.fetch(f"{server.url}/edge", param=PARAM) == b"y" * 4096


async def test_slow_server_times_out(server: FakeHTTPServer) -> None:
    server.routes["/slow"] = Reply(body=PNG, delay_s=3)
    async with SafeFetcher(allow_hosts=["127.0.0.1"], max_bytes=4096, timeout_s=0.3) as f:
        started = time.monotonic()
        error = await refusal(f, f"{server.url}/slow")
    assert error.code == "image_url_timeout"
    assert error.message.startswith("Timed out fetching")
    assert time.monotonic() - started < 2


async def test_deadline_covers_the_whole_body_not_each_read(server: FakeHTTPServer) -> None:
    # Each chunk arrives well within the deadline; together they exceed it.
    server.routes["/drip"] = Reply(body=b"z" * 40, chunked=True, chunk_size=2, chunk_delay_s=0.1)
    async with SafeFetcher(allow_hosts=["127.0.0.1"], max_bytes=4096, timeout_s=0.5) as f:
        started = time.monotonic()
        error = await refusal(f, f"{server.url}/drip")
    assert error.code == "image_url_timeout"
    assert time.monotonic() - started < 1.5


async def test_upstream_error_status_names_the_status_not_the_body(
    fetcher: SafeFetcher, server: FakeHTTPServer
) -> None:
    server.routes["/gone"] = Reply(status=404, body=b"secret internal detail")
    error = await refusal(fetcher, f"{server.url}/gone")
    assert error.code == "image_url_unreachable"
    assert "404" in error.message
    assert "secret" not in error.message


async def test_connection_refused_is_unreachable(fetcher: SafeFetcher) -> None:
    error = await refusal(fetcher, f"http://127.0.0.1:{free_port()}/img")
    assert error.code == "image_url_unreachable"
