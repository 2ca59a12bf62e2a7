"""``GET /healthz`` and ``GET /readyz``: liveness and readiness probes.

``/healthz`` is liveness (the process answers), with its providers' and endpoints' state.
``/readyz`` says whether this process should get traffic (a load balancer's probe): it checks
what a request needs: the database, Redis (when configured) and image storage, each with a short
timeout, and turns 503 at once when the process starts draining (SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.api.drain import drain_of
from imagegate.api.state import Gateway, gateway

log = logging.getLogger("imagegate.ready")
RETRY_AFTER_S = 5


async def healthz(request: Request) -> Response:
    gw = gateway(request)
    providers = {
        pid: {"available": p.available, "status": p.config.status, **p.stats()}
        for pid, p in gw.providers.items()
    }
    body = {"status": "ok", "providers": providers, "endpoints": gw.router.health.snapshot()}
    return Response(orjson.dumps(body), media_type="application/json")


async def readyz(request: Request) -> Response:
    """200 ``{"status": "ready", "checks": {...}}``, or 503 naming what failed."""
    gw = gateway(request)
    if drain_of(request.app).draining:
        return _reply(503, {"status": "draining", "checks": {}})
    checks = _checks(gw)
    names = list(checks)
    results = await asyncio.gather(*(_run(gw, name, checks[name]) for name in names))
    report = dict(zip(names, results, strict=True))
    failed = sorted(name for name, result in report.items() if result != "ok")
    if failed:
        body: dict[str, object] = {"status": "unavailable", "failed": failed, "checks": report}
        return _reply(503, body)
    return _reply(200, {"status": "ready", "checks": report})


def _checks(gw: Gateway) -> dict[str, Callable[[], Awaitable[None]]]:
    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "database": lambda: run_in_threadpool(gw.db.ping),
        "storage": gw.store.check,
    }
    if gw.redis is not None:
        redis = gw.redis

        async def ping_redis() -> None:
            await redis.ping()

        checks["redis"] = ping_redis
    return checks


async def _run(gw: Gateway, name: str, check: Callable[[], Awaitable[None]]) -> str:
    timeout = gw.settings.timeouts.ready_s
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        outcome = detail = f"timed out after {timeout:g} s"
    except Exception as exc:  # any failure means "not ready"; say which and why
        # The probe is unauthenticated: it names the kind of error, the log has the rest
        # (messages can carry internal host names).
        outcome = f"failed: {type(exc).__name__}"
        detail = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    else:
        return "ok"
    log.warning("readiness check %s failed: %s", name, detail, extra={"check": name})
    return outcome


def _reply(status: int, body: dict[str, object]) -> Response:
    headers = {"cache-control": "no-store"}
    if status == 503:
        headers["retry-after"] = str(RETRY_AFTER_S)
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )
