"""Admin API: create, list and revoke API keys."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounts.key_push import push_key_change
from imagegate.accounts.keys import ApiKey
from imagegate.accounts.limits import micro_in_range, top_up_amount
from imagegate.api.auth import require_admin
from imagegate.api.body import read_json
from imagegate.api.fields import as_bool, as_int, as_str_list
from imagegate.api.state import gateway
from imagegate.core.errors import InvalidRequest, NotFound

_KEY_FIELDS = {"name", "models", "admin", "credits", "rpm", "ipm", "max_concurrent"}
MAX_LIMIT = 2**31 - 1  # rpm, ipm and max_concurrent are 32-bit integer columns


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "name": key.name,
        "admin": key.is_admin,
        "models": list(key.models) if key.models is not None else None,
        "credits_usd": key.credits_micro / 1_000_000 if key.credits_micro is not None else None,
        "rpm": key.rpm,
        "ipm": key.ipm,
        "max_concurrent": key.max_concurrent,
        "created_at": int(key.created_at.timestamp()),
        "revoked_at": int(key.revoked_at.timestamp()) if key.revoked_at else None,
    }


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def create_key(request: Request) -> Response:
    await require_admin(request)
    gw = gateway(request)
    raw = await read_json(request, 64 * 1024)
    unknown = set(raw) - _KEY_FIELDS
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequest(f"Unknown field '{field}'.", param=field, code="unknown_parameter")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("'name' is required.", param="name", code="missing_required_parameter")
    models = as_str_list("models", raw["models"]) if raw.get("models") is not None else None
    if models is not None:
        for model in models:
            gw.catalog.resolve(model)
    credits = raw.get("credits")
    if credits is not None and (
        isinstance(credits, bool) or not isinstance(credits, int | float) or not credits >= 0
    ):
        raise InvalidRequest("'credits' must be a number of USD >= 0.", param="credits")
    if credits is not None:
        micro_in_range(credits, "credits")
    rpm, ipm, concurrent = (_positive_int(raw, name) for name in ("rpm", "ipm", "max_concurrent"))
    admin = as_bool("admin", raw.get("admin", False))
    key, plaintext = await run_in_threadpool(
        lambda: gw.keys.create(
            name.strip(),
            models=models,
            admin=admin,
            credits_usd=credits,
            rpm=rpm,
            ipm=ipm,
            max_concurrent=concurrent,
        )
    )
    return _json({**key_json(key), "key": plaintext}, status=201)


async def list_keys(request: Request) -> Response:
    await require_admin(request)
    keys = await run_in_threadpool(gateway(request).keys.list)
    return _json({"object": "list", "data": [key_json(k) for k in keys]})


async def revoke_key(request: Request) -> Response:
    await require_admin(request)
    key_id = request.path_params["key_id"]
    if not await run_in_threadpool(gateway(request).keys.revoke, key_id):
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id", code="key_not_found")
    await push_key_change(gateway(request).redis, key_id)
    return _json({"id": key_id, "object": "api_key", "deleted": True})


def _positive_int(raw: dict[str, Any], name: str) -> int | None:
    if raw.get(name) is None:
        return None
    value = as_int(name, raw[name])
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"'{name}' must be between 1 and {MAX_LIMIT}.", param=name)
    return value


async def top_up(request: Request) -> Response:
    """POST /v1/admin/keys/{key_id}/credits ``{"amount": USD, "note": ...}``."""
    await require_admin(request)
    gw = gateway(request)
    key_id = request.path_params["key_id"]
    raw = await read_json(request, 64 * 1024)
    unknown = set(raw) - {"amount", "note"}
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequest(f"Unknown field '{field}'.", param=field, code="unknown_parameter")
    amount = raw.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0:
        raise InvalidRequest("'amount' must be a positive number of USD.", param="amount")
    note = raw.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 200):
        raise InvalidRequest("'note' must be a string of at most 200 characters.", param="note")
    micro_in_range(amount, "amount")  # a body that cannot fit is refused whatever the key
    key = await run_in_threadpool(gw.keys.get, key_id)
    micro = top_up_amount(key, key_id, amount)
    balance = await run_in_threadpool(gw.ledger.top_up, key_id, micro, note)
    gw.keys.invalidate()
    await push_key_change(gw.redis, key_id)
    return _json(
        {
            "id": key_id,
            "object": "credit_top_up",
            "amount_usd": micro / 1_000_000,
            "balance_usd": balance / 1_000_000,
        }
    )


LEDGER_PAGE_MAX = 1000


def _ledger_page(request: Request) -> tuple[int, int | None]:
    """``limit`` (1..1000, default 1000) and ``after`` (the last entry id seen)."""
    raw_limit = request.query_params.get("limit") or str(LEDGER_PAGE_MAX)
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LEDGER_PAGE_MAX:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {LEDGER_PAGE_MAX}; got {raw_limit!r}.",
            param="limit",
        )
    raw_after = request.query_params.get("after") or None
    if raw_after is not None and not (raw_after.isdigit() and len(raw_after) < 19):
        raise InvalidRequest(
            f"'after' must be a ledger entry id; got {raw_after!r}.", param="after"
        )
    return int(raw_limit), None if raw_after is None else int(raw_after)


async def ledger(request: Request) -> Response:
    """GET /v1/admin/keys/{key_id}/ledger: the key's credit movements, oldest first."""
    await require_admin(request)
    gw = gateway(request)
    key_id = request.path_params["key_id"]
    if await run_in_threadpool(gw.keys.get, key_id) is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id", code="key_not_found")
    limit, after = _ledger_page(request)
    entries = await run_in_threadpool(gw.ledger.entries, key_id, limit + 1, after)
    has_more, entries = len(entries) > limit, entries[:limit]
    return _json(
        {
            "object": "list",
            "has_more": has_more,
            "last_id": entries[-1].id if entries else None,
            "data": [
                {
                    "id": e.id,
                    "kind": e.kind,
                    "amount_usd": e.amount_micro / 1_000_000,
                    "balance_usd": None if e.balance_micro is None else e.balance_micro / 1e6,
                    "hold_id": e.hold_id,
                    "generation_id": e.generation_id,
                    "note": e.note,
                    "created_at": int(e.created_at.timestamp()),
                }
                for e in entries
            ],
        }
    )
