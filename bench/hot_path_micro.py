"""Two per-request costs on the event loop, before and after: the key lookup and the
access log line.

    .venv/bin/python bench/hot_path_micro.py

- key lookup: ``KeyStore.authenticate`` served from its cache (the change counter read at
  most once per ``REVOCATION_BOUND_S``) against a database read per call (``bound_s=0``
  and the cache dropped every call: what every request did before);
- access log: one ``imagegate.access`` line through ``configure_logging``'s queue (the loop
  only enqueues; a thread formats and writes) against a ``StreamHandler`` formatting and
  writing in the caller, both to a file.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imagegate.accounts.keys import KeyStore
from imagegate.db.session import Database
from imagegate.obs import log_queue
from imagegate.obs.logs import JsonFormatter

N = 20_000


def per_call_us(fn: Callable[[], object], n: int = N, rounds: int = 5) -> float:
    """CPU time of the calling thread (the event loop's, in the gateway) per call."""
    samples = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        samples.append((time.thread_time() - t0) / n * 1e6)
    return statistics.median(samples)


def keys(tmp: Path) -> tuple[float, float]:
    db = Database(f"sqlite:///{tmp / 'k.db'}")
    db.migrate()
    cached = KeyStore(db)
    _, token = cached.create("bench")
    uncached = KeyStore(db, bound_s=0)

    def read_every_time() -> object:
        uncached.invalidate()
        return uncached.authenticate(token)

    result = per_call_us(read_every_time, 2000), per_call_us(lambda: cached.authenticate(token))
    db.dispose()
    return result


def access_log(tmp: Path) -> tuple[float, float]:
    log = logging.getLogger("imagegate.access")
    log.propagate = False
    log.setLevel(logging.INFO)
    extra = {"method": "POST", "path": "/v1/images/generations", "status": 200, "ms": 1.2}
    inline = logging.StreamHandler((tmp / "inline.log").open("w"))
    inline.setFormatter(JsonFormatter())
    log.handlers[:] = [inline]
    t0 = time.process_time()
    before = per_call_us(lambda: log.info("request", extra=extra))
    inline_cpu_us = (time.process_time() - t0) / (5 * N) * 1e6
    stream = logging.StreamHandler((tmp / "queued.log").open("w"))
    stream.setFormatter(JsonFormatter())
    log.handlers[:] = [log_queue.threaded(stream)]
    t0 = time.process_time()
    after = per_call_us(lambda: log.info("request", extra=extra))
    log_queue.stop()
    total_cpu_us = (time.process_time() - t0) / (5 * N) * 1e6
    print(
        f"  process CPU per line, every thread: inline {inline_cpu_us:.1f} µs, "
        f"queued {total_cpu_us:.1f} µs (writer thread included)"
    )
    return before, after


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        read, cached = keys(Path(tmp))
        print(f"key lookup, caller's CPU: database read {read:.1f} µs, cached {cached:.1f} µs")
        inline, queued = access_log(Path(tmp))
        print(f"access log line, caller's CPU: inline {inline:.1f} µs, queued {queued:.1f} µs")


if __name__ == "__main__":
    main()
