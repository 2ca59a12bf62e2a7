"""Host header (issue 12, 6): without public_url, returned URLs and redirects use an
allow-listed Host (bound address, localhost) and never whatever the client sent."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway import RunningGateway, run_gateway
from security.support import auth


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    config = "server: {allowed_hosts: [images.example.com]}\n"
    with run_gateway(tmp_path_factory.mktemp("host"), config) as running:
        yield running


def _image_url(gw: RunningGateway, host: str) -> str:
    reply = httpx.post(
        f"{gw.v1}/images/generations",
        json={"model": "sandbox", "prompt": "x", "size": "64x64", "response_format": "url"},
        headers={**auth(gw.admin_key), "Host": host},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    url: str = reply.json()["data"][0]["url"]
    return url


def test_a_forged_host_is_not_echoed_in_image_urls(gw: RunningGateway) -> None:
    assert _image_url(gw, "evil.example").startswith(f"{gw.url}/v1/files/")


def test_allow_listed_hosts_are_kept(gw: RunningGateway) -> None:
    port = gw.url.rsplit(":", 1)[1]
    assert _image_url(gw, f"localhost:{port}").startswith(f"http://localhost:{port}/v1/files/")
    assert _image_url(gw, "images.example.com").startswith("http://images.example.com/v1/")


def test_redirects_do_not_point_at_a_forged_host(gw: RunningGateway) -> None:
    reply = httpx.get(
        f"{gw.url}/healthz/", headers={**auth(gw.admin_key), "Host": "evil.example"}, timeout=30
    )
    assert reply.status_code == 307  # the trailing-slash redirect
    assert reply.headers["location"] == f"{gw.url}/healthz"
