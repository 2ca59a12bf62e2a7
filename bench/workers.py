"""``imagegate serve --workers N`` on PostgreSQL + Redis: throughput at N = 1 and 2.

Everything a deployment runs stays on (auth, Redis rate limits and key push, credit holds,
usage records in PostgreSQL). The upstream is one nginx worker serving the bench's canned
small ``ImagesResponse`` (bench/gateways/upstream.py); the load is wrk (bench/gateways/load.py).
Runs alternate N = 1 and N = 2, ``--repeat`` times each, so background load on a shared
machine falls on both; the table gives the median of the runs (and every run).

    .venv/bin/python bench/workers.py --repeat 3 --duration 10

Needs nginx with the echo module and wrk (see bench/README.md), PostgreSQL at
127.0.0.1:5432 (a fresh database is created and dropped) and Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent / "gateways"))

import gateways
import load
import upstream

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"
BODY = json.dumps(
    {"model": "bench/small", "prompt": "a lighthouse at dusk, benchmark", "size": "1024x1024"}
)


def start(workers: int, up: str, run: Path, database: str) -> gateways.Gateway:
    """``imagegate serve --workers N`` from this checkout's interpreter, with a fresh key."""
    config = run / "imagegate.yaml"
    config.write_text(
        "providers:\n"
        f"  - {{id: bench-small, type: openai_compatible, base_url: {up}/small/v1,"
        f" api_key: {gateways.UPSTREAM_KEY}, timeout_s: 60}}\n"
        "models:\n  - id: bench/small\n    operations: [generate]\n    sizes: [1024x1024]\n"
        "    endpoints:\n      - provider: bench-small\n        upstream_model: gpt-image-1\n"
        "        pricing: {per_image: 0.001}\n"
    )
    env = {
        "IMAGEGATE_DATA_DIR": str(run / f"data-{workers}"),
        "IMAGEGATE_CONFIG": str(config),
        "IMAGEGATE_DATABASE_URL": database,
        "IMAGEGATE_REDIS_URL": REDIS,
    }
    port = gateways.free_port()
    log = run / f"imagegate-{workers}w.log"
    imagegate = [sys.executable, "-m", "imagegate"]
    serve = [*imagegate, "serve", "--port", str(port), "--workers", str(workers)]
    proc = gateways._spawn([*serve, "--config", str(config)], log, env)
    gateways._wait(f"http://127.0.0.1:{port}/healthz", proc, log)
    created = subprocess.run(
        [*imagegate, *gateways._KEY_CREATE, "--config", str(config)],
        capture_output=True,
        text=True,
        env=gateways._environ(env),
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}/v1/images/generations"
    return gateways.Gateway(f"imagegate-{workers}w", url, headers, proc, log)


def probe(gw: gateways.Gateway) -> None:
    """One request first: the load generator only sees statuses."""
    req = urllib.request.Request(gw.url, data=BODY.encode(), headers=gw.headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            json.loads(resp.read())["data"][0]["b64_json"]
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{gw.name}: HTTP {exc.code}: {exc.read()[:300]!r}") from None


def one_run(workers: int, up: str, run: Path, database: str, args: argparse.Namespace) -> dict:
    gw = start(workers, up, run, database)
    try:
        probe(gw)
        out: dict[str, float] = {}
        for conns in args.connections:
            load.run_wrk(  # warm-up: connections, pools, key cache
                gw.url, BODY, gw.headers, connections=conns, duration_s=2, timeout_s=30, workdir=run
            )
            res = load.run_wrk(
                gw.url,
                BODY,
                gw.headers,
                connections=conns,
                duration_s=args.duration,
                timeout_s=30,
                workdir=run,
            )
            out[f"c={conns} rps"] = res.rps
            out[f"c={conns} p50_ms"] = res.p50_ms
            out[f"c={conns} p99_ms"] = res.p99_ms
            out[f"c={conns} errors"] = res.errors
        return out
    finally:
        gw.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[16])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"))
    args = parser.parse_args()
    name = f"imagegate_workers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database = f"postgresql://postgres@127.0.0.1:5432/{name}"
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        run.chmod(0o755)  # nginx's workers (another user when run as root) read the fixtures
        files = run / "files"
        upstream.write_fixtures(files)
        port = gateways.free_port()
        nginx = upstream.start_nginx(run / "nginx", files, port)
        up = f"http://127.0.0.1:{port}"
        try:
            for i in range(args.repeat):
                for workers in (1, 2):
                    result = one_run(workers, up, run, database, args)
                    runs[workers].append(result)
                    print(f"run {i + 1} N={workers}: {result}", flush=True)
                    time.sleep(1)
        finally:
            nginx.terminate()
            nginx.wait(10)
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    write(args, runs)


def write(args: argparse.Namespace, runs: dict[int, list[dict]]) -> None:
    lines = [
        f"# bench/workers.py --repeat {args.repeat} --duration {args.duration}",
        "",
        "`imagegate serve --workers N`, PostgreSQL + Redis, auth, rate limits, holds and usage "
        "records on; nginx upstream (small body); wrk. Median of "
        f"{args.repeat} alternating runs (each run in brackets). Measured "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on the shared 2-core machine under load from "
        "other sessions.",
        "",
        "| figure | N = 1 | N = 2 |",
        "|---|---:|---:|",
    ]
    for figure in runs[1][0]:
        cells = []
        for workers in (1, 2):
            values = [r[figure] for r in runs[workers]]
            every = ", ".join(f"{v:,.1f}" for v in values)
            cells.append(f"{statistics.median(values):,.1f} ({every})")
        lines.append(f"| {figure} | {cells[0]} | {cells[1]} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workers.md").write_text("\n".join(lines) + "\n")
    (args.out / "workers.json").write_text(json.dumps({str(k): v for k, v in runs.items()}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
