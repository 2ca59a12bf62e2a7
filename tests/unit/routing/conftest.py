"""Three loopback fakes of OpenAI's Images API (a, b, c) for the router tests, served once
per module and reset before each test, and the httpx client the adapters share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import httpx
import pytest

from fakes.openai_images import FakeOpenAI, serve_fake


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeOpenAI]]:
    with ExitStack() as stack:
        yield {name: stack.enter_context(serve_fake(FakeOpenAI())) for name in "abc"}


@pytest.fixture
def fakes(servers: dict[str, FakeOpenAI]) -> dict[str, FakeOpenAI]:
    """The module's fake upstreams, healthy and with no recorded calls."""
    for fake in servers.values():
        fake.fail_status, fake.fail_first, fake.retry_after, fake.delay_s = None, 0, None, 0.0
        fake.calls.clear()
    return servers


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client
