"""Drive imagegate, LiteLLM and Portkey (and the upstream directly) with wrk, in one run.

Usage: ``make bench`` (or ``bench/gateways/.env/py/bin/python bench/gateways/run.py``).
Options: ``--duration S`` per cell, ``--only imagegate,direct``, ``--scenarios "small c=1"``.
Results go to ``bench/results/`` (results.md, results.json, results.png).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateways
import load
import report
import upstream


@dataclass(frozen=True)
class Scenario:
    name: str
    route: str
    connections: int
    response_format: str | None = None
    direct: bool = True  # also run it straight at the upstream


SCENARIOS = [
    Scenario("small c=1", "small", 1),
    Scenario("small c=16", "small", 16),
    Scenario("large c=4", "large", 4),
    Scenario("slow c=500", "slow", 500),
    Scenario("large url c=4", "large", 4, response_format="url", direct=False),
]


def body(gw: gateways.Gateway, sc: Scenario) -> str:
    payload: dict[str, Any] = {
        "model": gw.model(sc.route),
        "prompt": "a lighthouse at dusk, benchmark",
        "size": "1024x1024",
        "n": 1,
    }
    if sc.response_format:
        payload["response_format"] = sc.response_format
    return json.dumps(payload)


def probe(gw: gateways.Gateway, sc: Scenario) -> str:
    """One request, to say what the gateway answers (the load generator only sees statuses)."""
    url, headers = gw.target(sc.route)
    req = urllib.request.Request(url, data=body(gw, sc).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:160]!r}"
    except OSError as exc:
        return f"failed: {exc}"
    try:
        item = json.loads(raw)["data"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"unexpected body: {raw[:120]!r}"
    kinds = [k for k in ("url", "b64_json") if item.get(k)]
    size = f"{len(raw)} B" if len(raw) < 10_000 else f"{len(raw) / 1024:.0f} KB"
    return f"{'+'.join(kinds) or 'no image'}, {size} body"


class RssSampler:
    """Peak resident memory of a process tree while a cell runs, sampled every 0.25 s."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.pid is not None:
            self.peak = max(self.peak, gateways.tree_rss_mb(self.pid))
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", default="direct,imagegate,litellm,portkey")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--out", default=str(gateways.REPO / "bench/results"))
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy imagegate during each of its cells (collapsed stacks in DIR; slows it)",
    )
    args = parser.parse_args()
    wanted = args.only.split(",")
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    raise_fd_limit()

    run = gateways.ENV / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    files = gateways.ENV / "fixtures"
    sizes = upstream.write_fixtures(files)
    port = gateways.free_port()
    nginx = upstream.start_nginx(run / "nginx", files, port)
    base = f"http://127.0.0.1:{port}"
    print(f"upstream nginx on {base}: small {sizes['small']} B, large {sizes['large']} B")

    started: list[gateways.Gateway] = []
    try:
        starters = {
            "imagegate": gateways.start_imagegate,
            # The same, as `imagegate serve --workers 2` (one process per core).
            "imagegate-2w": functools.partial(gateways.start_imagegate, workers=2),
            # The same app under granian (a Rust ASGI server; install it into .venv first).
            "imagegate-granian": functools.partial(gateways.start_imagegate, server="granian"),
            "litellm": gateways.start_litellm,
            "portkey": gateways.start_portkey,
        }
        if "direct" in wanted:
            started.append(gateways.direct(base))
        for name, start in starters.items():
            if name in wanted:
                t0 = time.monotonic()
                started.append(start(base, run))
                print(f"{name} ready in {time.monotonic() - t0:.1f}s")
        rows = []
        for sc in scenarios:
            for gw in started:
                if gw.name == "direct" and not sc.direct:
                    continue
                rows.append(cell(gw, sc, args, run, nginx.pid))
        meta = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpus": os.cpu_count(),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "fixture_bytes": sizes,
            "versions": gateways.versions(),
        }
        report.write(Path(args.out), rows, meta)
        print(report.markdown(rows, meta))
    finally:
        for gw in started:
            gw.stop()
        nginx.terminate()
        nginx.wait(timeout=10)


def cell(
    gw: gateways.Gateway, sc: Scenario, args: argparse.Namespace, run: Path, nginx_pid: int
) -> dict[str, Any]:
    answer = probe(gw, sc)
    url, headers = gw.target(sc.route)
    payload = body(gw, sc)

    def drive(seconds: int) -> load.LoadResult:
        return load.run_wrk(
            url,
            payload,
            headers,
            connections=sc.connections,
            duration_s=seconds,
            timeout_s=30,
            workdir=run,
        )

    if args.warmup:
        drive(args.warmup)
        # wrk drops its connections at the end, but a gateway may go on with the requests
        # they carried (500 of them on the slow route): let that work drain first.
        time.sleep(upstream.SLOW_S + 1 if sc.route == "slow" else 0.5)
    pid = gw.process.pid if gw.process else nginx_pid
    spy = None
    if args.profile and gw.name.startswith("imagegate"):
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        out = Path(args.profile) / f"{sc.name.replace(' ', '_').replace('=', '')}.txt"
        spy_args = ["--format", "raw", "--rate", "200", "--duration", str(args.duration)]
        spy = subprocess.Popen(
            [
                str(gateways.ENV / "py/bin/py-spy"),
                "record",
                "-p",
                str(pid),
                "-o",
                str(out),
                *spy_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    cpu_before = gateways.tree_cpu_s(pid) if pid else 0.0
    with RssSampler(pid) as rss:
        result = drive(args.duration)
    cpu_s = gateways.tree_cpu_s(pid) - cpu_before if pid else 0.0
    if spy is not None:
        spy.wait(timeout=60)
    row = {
        "scenario": sc.name,
        "gateway": gw.name,
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "requests": result.requests,
        "rss_mb": rss.peak,
        # CPU the gateway's processes spent per request: the machine is shared, so this
        # moves less between runs than RPS does (it includes the profiler, if any).
        "cpu_ms_per_req": 1000 * cpu_s / result.requests if result.requests else None,
        "answer": answer,
    }
    print(
        f"{sc.name:14} {gw.name:9} rps={result.rps:8.1f} p50={result.p50_ms:8.2f}ms "
        f"p99={result.p99_ms:8.2f}ms errors={result.errors} rss={rss.peak:.0f}MB "
        f"cpu/req={row['cpu_ms_per_req'] or 0:.2f}ms  [{answer}]",
        flush=True,
    )
    return row


if __name__ == "__main__":
    main()
