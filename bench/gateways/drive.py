"""One wrk cell against a gateway held by ``hold.py``: RPS, p50, p99, errors and the
gateway's CPU ms per request (its process tree, from /proc).

    bench/gateways/.env/py/bin/python bench/gateways/drive.py DIR small 16 8 [--warm 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateways
import load
import run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("route", choices=gateways.ROUTES)
    parser.add_argument("connections", type=int)
    parser.add_argument("seconds", type=int)
    parser.add_argument("--warm", type=int, default=2, help="seconds of warm-up first")
    args = parser.parse_args()
    run.raise_fd_limit()
    info = json.loads((args.dir / "info.json").read_text())
    target = info["targets"][args.route]

    def drive(seconds: int) -> load.LoadResult:
        return load.run_wrk(
            target["url"],
            target["body"],
            target["headers"],
            connections=args.connections,
            duration_s=seconds,
            timeout_s=30,
            workdir=args.dir,
        )

    if args.warm:
        drive(args.warm)
        time.sleep(3 if args.route == "slow" else 0.5)  # let the cut requests drain
    pid = info["pid"]
    before = gateways.tree_cpu_s(pid)
    result = drive(args.seconds)
    cpu_s = gateways.tree_cpu_s(pid) - before
    print(
        f"{args.route} c={args.connections} rps={result.rps:.1f} p50={result.p50_ms:.1f}"
        f" p99={result.p99_ms:.1f} err={result.errors} n={result.requests}"
        f" cpu/req={1000 * cpu_s / max(result.requests, 1):.2f}ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
