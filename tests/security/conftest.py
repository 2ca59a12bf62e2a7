"""One gateway with the default configuration, shared by the attack tests that need no
special configuration (each starts in seconds on a loaded machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway import RunningGateway, run_gateway


@pytest.fixture(scope="session")
def plain_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("security")) as running:
        yield running
