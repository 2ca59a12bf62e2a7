"""Client CPU per upstream call: httpx, httpx over aiohttp, imagegate's UpstreamClient, aiohttp.

With ``httpx-aiohttp`` installed (``.venv/bin/pip install httpx-aiohttp``; not a dependency),
its transport (the one openai-python offers) is measured too, under a plain httpx client:
what adopting it in place of ``UpstreamClient`` would cost per call.

Starts the gateway bench's nginx fixture upstream (``bench/gateways/upstream.py``; needs
nginx with the echo module, as ``make bench`` installs) and POSTs the same JSON body with
16 calls in flight, in interleaved rounds, printing the median requests/s and CPU time per
request of this process for each client::

    .venv/bin/python bench/upstream_client.py [--route small|large] [--requests 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).parent / "gateways"))
import upstream

from imagegate.upstream.client import UpstreamClient
from imagegate.upstream.transport import AiohttpTransport

try:
    import httpx_aiohttp
except ImportError:  # optional: only its rows are left out
    httpx_aiohttp = None

BODY = orjson.dumps({"model": "x", "prompt": "a cat", "n": 1, "size": "1024x1024"})
HEADERS = {"Authorization": "Bearer x", "Content-Type": "application/json"}
LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128)
CONCURRENCY = 16

Call = Callable[[], Awaitable[None]]


async def _drive(call: Call, n: int) -> tuple[float, float]:
    """(requests/s, CPU µs per request) for ``n`` calls, ``CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            await call()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, cpu / n * 1e6


def _httpx_call(client: httpx.AsyncClient, url: str) -> Call:
    async def call() -> None:
        response = await client.post(url, content=BODY, headers=HEADERS, timeout=60)
        orjson.loads(response.content)

    return call


async def main(url: str, n: int, rounds: int) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))

    async def aiohttp_call() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            orjson.loads(await response.read())

    clients = {
        "httpx (httpcore)": httpx.AsyncClient(limits=LIMITS),
        "httpx + AiohttpTransport": httpx.AsyncClient(transport=AiohttpTransport(limits=LIMITS)),
        "UpstreamClient (imagegate)": UpstreamClient(transport=AiohttpTransport(limits=LIMITS)),
    }
    if httpx_aiohttp is not None:
        version = importlib.metadata.version("httpx-aiohttp")
        clients[f"httpx + httpx-aiohttp {version}"] = httpx.AsyncClient(
            transport=httpx_aiohttp.AiohttpTransport(limits=LIMITS)
        )
    calls: dict[str, Call] = {name: _httpx_call(c, url) for name, c in clients.items()}
    calls["aiohttp"] = aiohttp_call
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for call in calls.values():  # warm the pools
        await _drive(call, CONCURRENCY * 4)
    for _ in range(rounds):
        for name, call in calls.items():
            results[name].append(await _drive(call, n))
    print(f"| client | req/s (median of {rounds}) | client CPU µs/request |")
    print("|---|---:|---:|")
    for name, rows in results.items():
        rps = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"| {name} | {rps:,.0f} | {cpu:,.0f} |")
    for client in clients.values():
        await client.aclose()
    await session.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--route", default="small", choices=["small", "large"])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="imagegate-client-bench-"))
    root.chmod(0o755)  # nginx's worker runs as another user
    upstream.write_fixtures(root / "files")
    port = 18_000 + int(time.time()) % 1000
    nginx = upstream.start_nginx(root / "nginx", root / "files", port)
    try:
        url = f"http://127.0.0.1:{port}/{args.route}/v1/images/generations"
        uvloop.run(main(url, args.requests, args.rounds))
    finally:
        nginx.terminate()
