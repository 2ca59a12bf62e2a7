"""The scaffold every adapter test shares: the module's fake upstream, reset for each test;
an httpx client; and the ``ProviderContext`` the gateway gives an adapter, whose URL fetcher
trusts only that fake upstream. Test images, requests and the adapter's config entry:
``tests/adapter_support.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapter_support import fetching_context
from imagegate.providers.base import ProviderContext


@pytest.fixture
def fake(server: Any) -> Any:
    """The module's ``server`` fixture (its fake upstream, started once per module), back to
    a well-behaved upstream with no history (every fake has ``reset``)."""
    server.reset()
    return server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def context(fake: Any, http: httpx.AsyncClient) -> AsyncIterator[ProviderContext]:
    """``fake``: the module's fake upstream (anything with a ``url``)."""
    async with fetching_context(http, fake.url) as provider_context:
        yield provider_context
