"""Time ``image_from_b64`` on the gateway bench's large upstream response (not a test).

Usage:
    .venv/bin/python bench/b64_decode.py [--fixture /tmp/mb/files/large.json] [--runs 200]

The fixture is the 3.6 MB ``b64_json`` body that ``bench/gateways/upstream.py``
``write_fixtures`` writes (a 1024x1024 noisy PNG); it is written to a temporary folder when
the given path does not exist. Prints median and p90 milliseconds, and median CPU
milliseconds, for the probe alone (``image_from_b64``), the probe plus rendering
``b64_json`` (what a pass-through costs), and the probe plus the bytes (what
``response_format: url`` or a format conversion needs), and for comparison what
``image_from_b64`` did before it decoded lazily (a full ``b64decode(validate=True)``, then
``image_from_bytes``). Then the whole pass-through of the body as the gateway does it:
parse the upstream's JSON (``orjson.loads``, or ``b64json.loads``, which copies the long
``b64_json`` string out instead of parsing it), probe, and serialise the response body
with ``orjson.dumps``.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from imagegate.providers._shared import b64json
from imagegate.providers._shared.common import image_from_b64, image_from_bytes


def load_body(fixture: Path) -> bytes:
    if not fixture.exists():
        sys.path.insert(0, str(Path(__file__).parent / "gateways"))
        from upstream import write_fixtures  # bench/gateways/upstream.py

        root = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
        write_fixtures(root)
        fixture = root / "large.json"
    return fixture.read_bytes()


def pass_through(loads: Callable[[bytes], Any], raw: bytes) -> bytes:
    """Upstream body in, response body out, as a ``b64_json`` pass-through does it."""
    item = loads(raw)["data"][0]
    image = image_from_b64("bench", item["b64_json"])
    return orjson.dumps({"created": 1, "data": [{"b64_json": image.b64}], "size": "1024x1024"})


def timed(label: str, runs: int, call: Callable[[], object]) -> None:
    """Median and p90 wall ms, and median CPU ms of this thread (steadier on a busy host)."""
    call()  # warm
    samples, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.thread_time()
        call()
        cpu.append((time.thread_time() - started_cpu) * 1000)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p90 = samples[int(len(samples) * 0.9)]
    print(f"| {label} | {p50:.3f} | {p90:.3f} | {statistics.median(cpu):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixture", type=Path, default=Path("/tmp/mb/files/large.json"))
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    raw = load_body(args.fixture)
    b64: str = orjson.loads(raw)["data"][0]["b64_json"]
    image = image_from_b64("bench", b64)
    print(f"{len(b64):,} base64 chars, {image.format} {image.width}x{image.height}")
    print(f"| step | p50 ms | p90 ms | CPU p50 ms |  ({args.runs} runs)")
    print("|---|---|---|---|")
    timed(
        "before: full decode + image_from_bytes",
        args.runs,
        lambda: image_from_bytes("bench", base64.b64decode(b64, validate=True), b64=b64),
    )
    timed("image_from_b64", args.runs, lambda: image_from_b64("bench", b64))
    timed("image_from_b64 + b64_json", args.runs, lambda: image_from_b64("bench", b64).b64)
    timed("image_from_b64 + bytes", args.runs, lambda: image_from_b64("bench", b64).data)
    timed("parse body: orjson.loads", args.runs, lambda: orjson.loads(raw))
    timed("parse body: b64json.loads", args.runs, lambda: b64json.loads(raw))
    timed("pass-through with orjson.loads", args.runs, lambda: pass_through(orjson.loads, raw))
    timed("pass-through with b64json.loads", args.runs, lambda: pass_through(b64json.loads, raw))


if __name__ == "__main__":
    main()
