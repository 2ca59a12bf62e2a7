"""``GET /metrics``: Prometheus exposition of every worker's counters.

Open by default, like most exporters, so a scraper needs no key; ``metrics.require_admin:
true`` in the config file makes it need an admin key.
"""

from __future__ import annotations

import inspect

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.api.auth import require_admin
from imagegate.api.state import gateway
from imagegate.obs import metrics


async def prometheus_metrics(request: Request) -> Response:
    gw = gateway(request)
    if gw.settings.metrics_require_admin:
        await require_admin(request)
    snapshot = gw.router.health.snapshot()
    if inspect.isawaitable(snapshot):  # a shared (Redis) health book may answer async
        snapshot = await snapshot
    breakers = metrics.BreakerCollector(lambda: snapshot)
    # Reading many workers' files is blocking I/O; the single-process case is cheap.
    if metrics.multiproc_dir() is None:
        body = metrics.render([breakers])
    else:
        body = await run_in_threadpool(metrics.render, [breakers])
    return Response(body, media_type=metrics.CONTENT_TYPE_LATEST)
