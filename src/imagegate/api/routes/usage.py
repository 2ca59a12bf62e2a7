"""``GET /v1/generations/{id}`` and ``GET /v1/usage``: what a key spent, and on what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounts.usage import GROUP_BY, MAX_KEYS_PAGE
from imagegate.api.auth import authenticate
from imagegate.api.state import gateway
from imagegate.core.errors import InvalidRequest, NotFound

DEFAULT_WINDOW = timedelta(days=30)
DEFAULT_KEYS_PAGE = 100


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def get_generation(request: Request) -> Response:
    """One request's record; a key sees its own, an admin key sees all."""
    key = await authenticate(request)
    generation_id = request.path_params["generation_id"]
    record = await run_in_threadpool(gateway(request).usage.get, generation_id)
    if record is None or (record.key_id != key.id and not key.is_admin):
        raise NotFound(
            f"No generation with id '{generation_id}'.",
            param="generation_id",
            code="generation_not_found",
        )
    return _json(record.to_json(upstream_costs=key.is_admin))


async def get_usage(request: Request) -> Response:
    """Totals over ``[start, end)``, optionally grouped by model, provider, key or day."""
    key = await authenticate(request)
    params = request.query_params
    end = parse_time(params.get("end"), "end") or datetime.now(UTC)
    start = parse_time(params.get("start"), "start") or end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidRequest("'start' must be before 'end'.", param="start")
    group_by = params.get("group_by") or None
    if group_by is not None and group_by not in GROUP_BY:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUP_BY)}.", param="group_by")
    key_id = params.get("key_id") or None
    if not key.is_admin:
        if key_id not in (None, key.id):
            raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
        key_id = key.id
    limit, after = _key_page(params.get("limit"), params.get("after"), group_by, key_id)
    book = gateway(request).usage
    summary = await run_in_threadpool(
        lambda: book.summary(start, end, group_by, key_id, limit=limit, after=after)
    )
    summary["key_id"] = key_id
    if not key.is_admin:  # what upstreams bill the operator is the operator's business
        summary.pop("upstream", None)
    return _json(summary)


def _key_page(
    raw_limit: str | None, raw_after: str | None, group_by: str | None, key_id: str | None
) -> tuple[int | None, str | None]:
    """``limit`` and ``after`` page the keys of a usage grouped by key over every key."""
    if group_by != "key" or key_id is not None:
        for name, raw in (("limit", raw_limit), ("after", raw_after)):
            if raw:
                raise InvalidRequest(
                    f"'{name}' pages a usage grouped by key over every key "
                    "(group_by=key, no key_id).",
                    param=name,
                )
        return None, None
    if not raw_limit:
        return DEFAULT_KEYS_PAGE, raw_after or None
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_KEYS_PAGE:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {MAX_KEYS_PAGE}; got {raw_limit!r}.",
            param="limit",
        )
    return int(raw_limit), raw_after or None


def parse_time(value: str | None, name: str) -> datetime | None:
    """Unix seconds, ``YYYY-MM-DD`` or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        if value.lstrip("-").replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise InvalidRequest(
            f"'{name}' must be unix seconds, YYYY-MM-DD or an ISO 8601 time; got {value!r}.",
            param=name,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
