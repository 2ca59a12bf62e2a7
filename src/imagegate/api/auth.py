"""Bearer-key authentication, from the key store's in-memory cache: a revocation takes
effect in every process within ``REVOCATION_BOUND_S`` (accounts/key_epoch.py)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from imagegate.accounts.keys import ApiKey, bearer_token
from imagegate.api.state import gateway
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import Forbidden
from imagegate.storage import ownership


async def authenticate(request: Request) -> ApiKey:
    gw = gateway(request)
    token = bearer_token(request.headers.get("authorization"))
    if gw.db.reads_inline:
        key = gw.keys.authenticate(token)
    else:
        key = await run_in_threadpool(gw.keys.authenticate, token)
    request.state.key_id = key.id
    request.state.api_key = key
    ownership.set_caller(key.id, key.is_admin)
    return key


async def require_admin(request: Request) -> ApiKey:
    key = await authenticate(request)
    if not key.is_admin:
        raise Forbidden("This endpoint needs an admin key.", code="admin_required")
    return key


def authorize_model(key: ApiKey, spec: ModelSpec) -> None:
    if not key.allows_model(spec.id, spec.aliases):
        raise Forbidden(
            f"This API key is not allowed to use model '{spec.id}'.",
            param="model",
            code="model_not_allowed",
        )
