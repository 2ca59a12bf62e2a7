"""What the generation pipeline needs from the running gateway.

A structural type, so that the pipeline never imports the API layer: ``api.state.Gateway``
satisfies it.
"""

from __future__ import annotations

from typing import Protocol

from imagegate.accounts.idempotency import IdempotencyStore
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.ratelimit import RateLimiter
from imagegate.config import Settings
from imagegate.routing.router import Router
from imagegate.storage.base import ImageStore
from imagegate.storage.signing import UrlSigner


class Services(Protocol):
    settings: Settings
    router: Router
    ledger: Ledger
    limiter: RateLimiter
    store: ImageStore
    signer: UrlSigner
    idempotency: IdempotencyStore
