"""The running gateway's shared parts, built once at start-up and reached by routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.requests import Request

from imagegate.accounts.idempotency import IdempotencyStore
from imagegate.accounts.keys import KeyStore
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.ratelimit import RateLimiter
from imagegate.accounts.usage import UsageBook
from imagegate.api.inputs import InputResolver
from imagegate.catalog.catalog import Catalog
from imagegate.config import Settings
from imagegate.db.session import Database
from imagegate.providers.base import Provider
from imagegate.routing.router import Router
from imagegate.routing.shared_health import RedisBreakerSync
from imagegate.storage.base import ImageStore
from imagegate.storage.signing import UrlSigner
from imagegate.upstream.fetch import SafeFetcher


@dataclass(slots=True)
class Gateway:
    settings: Settings
    db: Database
    keys: KeyStore
    catalog: Catalog
    providers: dict[str, Provider]
    router: Router
    store: ImageStore
    signer: UrlSigner
    fetcher: SafeFetcher
    resolver: InputResolver
    http: httpx.AsyncClient
    ledger: Ledger
    usage: UsageBook
    limiter: RateLimiter
    idempotency: IdempotencyStore
    breaker_sync: RedisBreakerSync | None = None  # shares breaker state via Redis
    body_budget: Any = None  # api.admission.BodyBudget, made on first use
    body_limits: dict[str, int] = field(default_factory=dict)  # per operation, derived once
    redis: Any = None  # the shared Redis client when IMAGEGATE_REDIS_URL is set (for /readyz)

    def public_base(self, request: Request) -> str:
        """Base of returned URLs: IMAGEGATE_PUBLIC_URL, else the URL the client used."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}"


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw
