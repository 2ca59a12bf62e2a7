"""The router tests' scaffold (``tests/unit/routing/``): a router over real adapters on the
loopback fakes a, b and c (fixtures in ``tests/unit/routing/conftest.py``), the model
``t/m`` with one priced endpoint per fake, and a request with routing preferences."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from adapter_support import no_fetch
from fakes.openai_images import FakeOpenAI
from imagegate.catalog.spec import parse_model
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest, RoutingPreferences
from imagegate.providers.base import Provider, ProviderContext
from imagegate.providers.openai.compatible import OpenAICompatibleProvider
from imagegate.routing.health import HealthBook
from imagegate.routing.router import Router, RouterSettings
from request_support import image_request

PRICES: dict[str, Any] = {"a": 0.04, "b": 0.01, "c": 0.02}


def build_router(
    fakes: dict[str, FakeOpenAI],
    http: httpx.AsyncClient,
    health: HealthBook,
    *,
    kinds: Mapping[str, type[Provider]] = {},
    in_alpha: tuple[str, ...] = (),
    unavailable: tuple[str, ...] = (),
    timeouts: Mapping[str, float] = {},
    **settings: Any,
) -> Router:
    """One ``openai_compatible`` provider per fake, named after it (or of ``kinds[name]``);
    those ``in_alpha`` have status alpha, those ``unavailable`` no credentials."""
    context = ProviderContext(http, no_fetch)
    providers: dict[str, Provider] = {}
    for name, fake in fakes.items():
        config = ProviderConfig(
            id=name,
            type="openai_compatible",
            base_url=f"{fake.url}/v1",
            api_key=None if name in unavailable else "sk-fake",
            # its key comes from a variable that is not set: no credentials, not available
            api_key_env="IMAGEGATE_TEST_UNSET_KEY" if name in unavailable else None,
            status="alpha" if name in in_alpha else "stable",
            timeout_s=timeouts.get(name, 120.0),
        )
        providers[name] = kinds.get(name, OpenAICompatibleProvider)(config, context)
    return Router(providers, RouterSettings(**settings), health)


def model(prices: dict[str, Any] | None = None) -> Any:
    """``t/m`` with an endpoint ``up-<p>`` on each provider ``p`` of ``prices`` (default
    ``PRICES``), at that price per image (``None``: no pricing)."""
    return parse_model(
        {
            "id": "t/m",
            "sizes": ["256x256"],
            "endpoints": [
                {"provider": p, "upstream_model": f"up-{p}", "pricing": pricing}
                for p, pricing in (
                    (p, {"per_image": price} if price is not None else None)
                    for p, price in (prices or PRICES).items()
                )
            ],
        }
    )


def request(**prefs: Any) -> ImageRequest:
    return image_request(
        operation="generate",
        model="t/m",
        prompt="p",
        size="256x256",
        width=256,
        height=256,
        provider=RoutingPreferences(**prefs),
    )
