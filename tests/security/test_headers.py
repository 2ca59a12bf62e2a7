"""Security headers and offline docs (issue 12, 7): nosniff and Referrer-Policy on every
response, a restrictive CSP on HTML pages, and /docs with no asset from another origin."""

from __future__ import annotations

import re

import httpx
import pytest

from gateway import RunningGateway


@pytest.fixture
def gw(plain_gateway: RunningGateway) -> RunningGateway:
    return plain_gateway


@pytest.mark.parametrize("path", ["/healthz", "/v1/models", "/docs", "/openapi.json"])
def test_every_response_carries_nosniff_and_a_referrer_policy(
    gw: RunningGateway, path: str
) -> None:
    reply = httpx.get(f"{gw.url}{path}", timeout=30)
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "no-referrer"


def test_html_pages_have_a_restrictive_csp(gw: RunningGateway) -> None:
    reply = httpx.get(f"{gw.url}/docs", timeout=30)
    assert reply.status_code == 200
    csp = reply.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no other origin
    assert directives["frame-ancestors"] == "'none'"
    assert "<script>" not in reply.text  # every script is a file, so the CSP can forbid inline


def test_docs_load_every_asset_from_the_gateway_itself(gw: RunningGateway) -> None:
    page = httpx.get(f"{gw.url}/docs", timeout=30).text
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs, page
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), ref  # nothing from a CDN
        asset = httpx.get(f"{gw.url}{ref}", timeout=30)
        assert asset.status_code == 200, ref
