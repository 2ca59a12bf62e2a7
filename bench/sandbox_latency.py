"""Sequential latency of the gateway hot path against the sandbox engine.

Usage (with a gateway running, e.g. `make serve`):
    .venv/bin/python bench/sandbox_latency.py --url http://127.0.0.1:8080 \
        --key "$(cat .imagegate/admin-key)" --requests 300

Prints a table: p50/p99 milliseconds and requests/s for a few request shapes. The sandbox
caches deterministic renders, so repeated identical prompts measure the gateway itself.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

SHAPES = {
    "gen 256 b64": {"size": "256x256"},
    "gen 1024 b64": {"size": "1024x1024"},
    "gen 1024 url": {"size": "1024x1024", "response_format": "url"},
    "gen 256 jpeg": {"size": "256x256", "output_format": "jpeg", "output_compression": 80},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--key", required=True)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.key}"}
    print(f"| shape | p50 ms | p99 ms | req/s |  ({args.requests} sequential requests)")
    print("|---|---|---|---|")
    with httpx.Client(base_url=args.url, headers=headers, timeout=60) as client:
        for name, extra in SHAPES.items():
            body = {"model": "imagegate/sandbox", "prompt": "benchmark", **extra}
            client.post("/v1/images/generations", json=body).raise_for_status()  # warm
            samples = []
            started = time.perf_counter()
            for _ in range(args.requests):
                t0 = time.perf_counter()
                client.post("/v1/images/generations", json=body).raise_for_status()
                samples.append((time.perf_counter() - t0) * 1000)
            total = time.perf_counter() - started
            samples.sort()
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            print(
                f"| {name} | {statistics.median(samples):.2f} | {p99:.2f} | "
                f"{args.requests / total:.0f} |"
            )


if __name__ == "__main__":
    main()
