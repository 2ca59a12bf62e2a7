"""The scaffold every adapter test shares: an httpx client, and the ``ProviderContext`` the
gateway gives an adapter, whose URL fetcher trusts only the test module's fake upstream
(its ``fake`` fixture). Test images: ``tests/adapter_support.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from imagegate.providers.base import ProviderContext
from imagegate.upstream.fetch import SafeFetcher


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def context(fake: Any, http: httpx.AsyncClient) -> AsyncIterator[ProviderContext]:
    """``fake`` is the module's own fixture: any fake upstream with a ``url``."""
    host = urlsplit(fake.url).netloc
    async with SafeFetcher(allow_hosts=[host], max_bytes=16 << 20, timeout_s=5) as fetcher:
        yield ProviderContext(http, lambda url: fetcher.fetch(url, param="upstream"))
