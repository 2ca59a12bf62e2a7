"""Attacks on admission: work must not start before a request is admitted (issue 12, 1-2).

Each attack sends only the first few hundred bytes of a huge body: a gateway that
admits first answers at once; one that reads first waits for the rest and the read
times out, so these tests cannot pass by luck of timing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e_support import b64, png_bytes
from fakes.http_server import FakeHTTPServer, Reply, serve_http
from gateway import RunningGateway, run_gateway
from security.support import auth, send_partial

MB = 1024 * 1024
CONFIG = """
limits: {{max_inflight_mb: 8}}
fetch: {{allow_hosts: ["127.0.0.1:{port}"]}}
"""
BOUNDARY = "xXxBOUNDARYxXx"


@pytest.fixture(scope="module")
def images() -> Iterator[FakeHTTPServer]:
    with serve_http({"/a.png": Reply(200, png_bytes(), {"Content-Type": "image/png"})}) as srv:
        yield srv


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, images: FakeHTTPServer
) -> Iterator[RunningGateway]:
    tmp: Path = tmp_path_factory.mktemp("admission")
    with run_gateway(tmp, CONFIG.format(port=images.port)) as running:
        yield running


def _multipart_head(declared: int, key: str) -> dict[str, str]:
    return {
        **auth(key),
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(declared),
    }


def _first_part() -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x89PNG"
        + b"\0" * 200
    )


def test_rate_limited_key_upload_is_refused_after_a_few_hundred_bytes(
    gw: RunningGateway,
) -> None:
    key = gw.create_key(rpm=1)
    first = httpx.post(
        f"{gw.v1}/images/generations",
        json={"model": "sandbox", "prompt": "x", "size": "64x64"},
        headers=auth(key),
        timeout=30,
    )
    assert first.status_code == 200, first.text
    sent = _first_part()
    assert len(sent) < 512
    reply = send_partial(gw.url, "/v1/images/edits", _multipart_head(45 * MB, key), sent)
    assert reply.status == 429
    assert reply.error()["code"] == "requests_per_minute_exceeded"
    assert "retry-after" in reply.headers


def test_key_without_credit_is_refused_before_its_body(gw: RunningGateway) -> None:
    key = gw.create_key(credits=0, models=["openai/gpt-image-1"])
    reply = send_partial(gw.url, "/v1/images/edits", _multipart_head(45 * MB, key), _first_part())
    assert reply.status == 402


def test_oversized_json_is_refused_unparsed(gw: RunningGateway) -> None:
    key = gw.create_key()
    head = {**auth(key), "Content-Type": "application/json", "Content-Length": str(60 * MB)}
    reply = send_partial(gw.url, "/v1/images/generations", head, b'{"junk": [' + b"1," * 100)
    assert reply.status == 413
    assert reply.error()["type"] == "invalid_request_error"


def test_chunked_json_is_cut_at_the_derived_limit(gw: RunningGateway) -> None:
    """No Content-Length: a generation body (no images) stops at about a megabyte."""
    key = gw.create_key()

    def body() -> Iterator[bytes]:
        yield b'{"prompt": "x", "junk": ['
        for _ in range(4 * 64):  # 4 MB, never fully needed
            yield b"1," * 8192

    reply = httpx.post(
        f"{gw.v1}/images/generations",
        content=body(),
        headers={**auth(key), "Content-Type": "application/json"},
        timeout=30,
    )
    assert reply.status_code == 413


def test_whole_multipart_body_is_capped(gw: RunningGateway) -> None:
    """Six 45 MB parts (270 MB) are refused from the declared length, not buffered."""
    key = gw.create_key()
    reply = send_partial(
        gw.url, "/v1/images/edits", _multipart_head(6 * 45 * MB, key), _first_part()
    )
    assert reply.status == 413


def _body_bytes_in_flight(gw: RunningGateway) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    match = re.search(r"^imagegate_request_body_bytes_in_flight (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_bytes_in_flight_are_capped_for_the_process(gw: RunningGateway) -> None:
    """With limits.max_inflight_mb: 8, a second 6 MB upload waits its turn (503)."""
    key = gw.create_key()
    import socket

    host, port = gw.url.removeprefix("http://").split(":")
    holder = socket.create_connection((host, int(port)), timeout=15)
    try:
        head = f"POST /v1/images/edits HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in _multipart_head(6 * MB, key).items()
        )
        holder.sendall(head.encode() + b"\r\n" + _first_part())
        deadline = time.monotonic() + 15
        while _body_bytes_in_flight(gw) < 6 * MB:
            assert time.monotonic() < deadline, "the first upload never reserved its bytes"
            time.sleep(0.05)
        other = gw.create_key()
        reply = send_partial(
            gw.url, "/v1/images/edits", _multipart_head(6 * MB, other), _first_part()
        )
        assert reply.status == 503
        assert reply.error()["code"] == "server_busy"
        assert reply.headers.get("retry-after") == "1"
    finally:
        holder.close()
    deadline = time.monotonic() + 15
    while _body_bytes_in_flight(gw) > 0:
        assert time.monotonic() < deadline, "the reservation was not given back"
        time.sleep(0.05)


def test_inputs_are_counted_together_before_any_fetch(
    gw: RunningGateway, images: FakeHTTPServer
) -> None:
    key = gw.create_key()
    url = f"{images.url}/a.png"
    before = len(images.requests)
    reply = httpx.post(
        f"{gw.v1}/images/edits",
        json={
            "model": "sandbox",
            "prompt": "x",
            "images": [{"image_url": url}] * 16,
            "image": [url] * 16,
        },
        headers=auth(key),
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "too_many_images"
    variation = httpx.post(
        f"{gw.v1}/images/variations",
        json={"model": "sandbox", "image": [url, url]},
        headers=auth(key),
        timeout=30,
    )
    assert variation.status_code == 400, variation.text
    assert variation.json()["error"]["code"] == "too_many_images"
    assert len(images.requests) == before


def test_fetches_count_toward_the_keys_request_limit(
    gw: RunningGateway, images: FakeHTTPServer
) -> None:
    key = gw.create_key(rpm=2)
    url = f"{images.url}/a.png"
    before = len(images.requests)
    reply = httpx.post(
        f"{gw.v1}/images/edits",
        json={"model": "sandbox", "prompt": "x", "image": [url, url, url]},
        headers=auth(key),
        timeout=30,
    )
    assert reply.status_code == 429, reply.text
    assert len(images.requests) == before
    inline = httpx.post(
        f"{gw.v1}/images/edits",
        json={"model": "sandbox", "prompt": "x", "image": [b64(png_bytes())], "size": "64x64"},
        headers=auth(key),
        timeout=30,
    )
    assert inline.status_code == 200, inline.text
