"""In-process A/B (an experiment, not adopted): CPU per image request through the whole
ASGI app, without and with ``api.plain.PlainRoutes`` (switched on by ``IG_PLAIN``), rounds
interleaved in one process; then Python function calls per request from cProfile.

Usage: PYTHONPATH=src .venv/bin/python bench/asgi_stack.py PER_ROUND ROUNDS CONCURRENCY
"""

import asyncio, os, sys, time, tempfile, statistics, contextlib, cProfile, pstats

KEY = "sk-admin-" + "Qx7pL2mN9vR4tY8wK3jH6fD1sA5gZ0cB"
os.environ["IMAGEGATE_ADMIN_KEY"] = KEY
from imagegate.app import create_app, tune_gc_for_serving
from imagegate.config import load_settings


def make(plain: bool):
    os.environ["IMAGEGATE_DATA_DIR"] = tempfile.mkdtemp(prefix="pt-stack-")
    if plain:
        os.environ["IG_PLAIN"] = "1"
    else:
        os.environ.pop("IG_PLAIN", None)
    return create_app(load_settings())


BODY = b'{"model": "imagegate/sandbox", "prompt": "bench", "size": "64x64"}'
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/v1/images/generations",
    "raw_path": b"/v1/images/generations",
    "query_string": b"",
    "root_path": "",
    "client": ("127.0.0.1", 5555),
    "server": ("127.0.0.1", 8080),
    "headers": [
        (b"host", b"127.0.0.1:8080"),
        (b"authorization", b"Bearer " + KEY.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}


async def call(app) -> int:
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()

    status = 0

    async def send(m):
        nonlocal status
        if m["type"] == "http.response.start":
            status = m["status"]

    await app(dict(SCOPE, headers=list(SCOPE["headers"])), receive, send)
    return status


def calls_per_request(app, loop_n=200):
    prof = cProfile.Profile()

    async def run():
        prof.enable()
        for _ in range(loop_n):
            await call(app)
        prof.disable()

    return run, prof


async def main() -> None:
    per_round, rounds, conc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    apps = {"router": make(False), "plain": make(True)}
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        tune_gc_for_serving()
        for app in apps.values():
            for _ in range(200):
                assert await call(app) == 200
        res = {k: [] for k in apps}
        for _ in range(rounds):
            for name, app in apps.items():
                c0 = time.process_time()
                for _ in range(per_round // conc):
                    await asyncio.gather(*[call(app) for _ in range(conc)])
                res[name].append((time.process_time() - c0) / per_round * 1e6)
        for name, r in res.items():
            print(
                f"{name}: CPU us/request over {rounds} interleaved rounds of {per_round} (c={conc}): median {statistics.median(r):.0f}, min {min(r):.0f}"
            )
        for name, app in apps.items():
            run, prof = calls_per_request(app)
            await run()
            st = pstats.Stats(prof)
            print(
                f"{name}: Python function calls per request (sequential): {st.total_calls / 200:.0f}"
            )


asyncio.run(main())
