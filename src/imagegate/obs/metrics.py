"""Prometheus metrics for ``GET /metrics``, correct with one worker or many.

With several worker processes (``imagegate serve --workers N``) every worker writes its
counters to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode,
chosen when that variable is set before this module is first imported) and a scrape, answered
by whichever worker, adds them all up. Breaker state is read from the answering worker's
health book at scrape time; it is the same on every worker once breaker state lives in Redis.

Only bounded label values are used: catalog model ids, provider ids and HTTP statuses.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from imagegate.core.errors import UpstreamError

__all__ = [
    "CONTENT_TYPE_LATEST",
    "MULTIPROC_ENV",
    "clean_multiproc_dir",
    "hold_finished",
    "hold_started",
    "observe_request",
    "record_attempt",
    "record_charge_above_hold",
    "record_generation",
    "record_upstream_cost",
    "render",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Image generation takes seconds to minutes; the buckets reach the router's 300 s deadline.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
BREAKER_STATES = ("closed", "half_open", "open")
_OPERATIONS = {
    "/v1/images/generations": "generations",
    "/v1/images/edits": "edits",
    "/v1/images/variations": "variations",
}
_DB_FILE = re.compile(r"_(\d+)\.db$")

if os.environ.get(MULTIPROC_ENV):  # prometheus_client writes there from the first metric on
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

# Metric objects register with this private registry (never the global one), which is what a
# single-process scrape exposes; in multiprocess mode a scrape reads the files instead.
_REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "imagegate_requests",
    "Images API requests answered, by operation, model, provider and HTTP status.",
    ["operation", "model", "provider", "status"],
    registry=_REGISTRY,
)
LATENCY = Histogram(
    "imagegate_request_duration_seconds",
    "Images API request latency from first byte in to response sent.",
    ["operation", "model", "provider", "status"],
    buckets=LATENCY_BUCKETS,
    registry=_REGISTRY,
)
ATTEMPTS = Counter(
    "imagegate_upstream_attempts",
    "Upstream attempts by provider and outcome (ok, retryable_error, caller_error, timeout).",
    ["provider", "outcome"],
    registry=_REGISTRY,
)
IMAGES = Counter(
    "imagegate_images",
    "Images returned to callers, by model and provider.",
    ["model", "provider"],
    registry=_REGISTRY,
)
COST = Counter(
    "imagegate_cost_usd",
    "Cost charged for returned images in US dollars, by model and provider.",
    ["model", "provider"],
    registry=_REGISTRY,
)
UPSTREAM_COST = Counter(
    "imagegate_upstream_cost_usd",
    "What upstreams bill for the gateway's calls, in US dollars, by provider and outcome "
    "(ok, failed, cancelled: hedge losers and calls cut short); compare with "
    "imagegate_cost_usd (what callers were charged) for margin and leakage.",
    ["provider", "outcome"],
    registry=_REGISTRY,
)
ABOVE_HOLD = Counter(
    "imagegate_charge_above_hold",
    "Settlements whose cost exceeded their credit hold (a pricing error: the excess is "
    "charged by an 'adjust' ledger entry).",
    registry=_REGISTRY,
)
STORAGE_ERRORS = Counter(
    "imagegate_storage_errors",
    "Image storage calls that failed (the caller got 503), by storage operation.",
    ["operation"],
    registry=_REGISTRY,
)
HOLDS = Gauge(
    "imagegate_holds_in_flight",
    "Credit holds taken and not yet settled or released, summed over live workers.",
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)

BODY_BYTES = Gauge(
    "imagegate_request_body_bytes_in_flight",
    "Request-body bytes reserved by requests being read or served (limits.max_inflight_mb).",
    registry=_REGISTRY,
    multiprocess_mode="livesum",
)


def body_bytes_changed(delta: int) -> None:
    BODY_BYTES.inc(delta)


def multiproc_dir() -> str | None:
    """The multiprocess directory when multiprocess mode is on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def observe_request(
    path: str, model: str | None, provider: str | None, status: int, seconds: float
) -> None:
    """Count one request if it was an Images API call (other routes are not by model)."""
    operation = _OPERATIONS.get(path.rstrip("/"))
    if operation is None:
        return
    labels = (operation, model or "none", provider or "none", str(status))
    REQUESTS.labels(*labels).inc()
    LATENCY.labels(*labels).observe(seconds)


def record_attempt(provider: str, error: Exception | None) -> None:
    """Count one upstream attempt; ``error`` is what it raised, None for a success."""
    if error is None:
        outcome = "ok"
    elif isinstance(error, UpstreamError) and error.timeout:
        outcome = "timeout"
    elif isinstance(error, UpstreamError) and error.retryable:
        outcome = "retryable_error"
    else:
        outcome = "caller_error"
    ATTEMPTS.labels(provider, outcome).inc()


def record_generation(model: str, provider: str, images: int, cost_usd: float) -> None:
    """Count images returned and what they cost."""
    IMAGES.labels(model, provider).inc(max(0, images))
    if cost_usd > 0:
        COST.labels(model, provider).inc(cost_usd)


def record_upstream_cost(provider: str, outcome: str, cost_micro: int) -> None:
    """Count what one upstream call is billed (``outcome``: ok, failed or cancelled)."""
    if cost_micro > 0:
        UPSTREAM_COST.labels(provider, outcome).inc(cost_micro / 1_000_000)


def record_charge_above_hold() -> None:
    ABOVE_HOLD.inc()


def record_storage_error(operation: str) -> None:
    """Count one failed call to image storage (e.g. ``put_object``)."""
    STORAGE_ERRORS.labels(operation).inc()


def hold_started() -> None:
    HOLDS.inc()


def hold_finished() -> None:
    HOLDS.dec()


class BreakerCollector(Collector):
    """Breaker state per (provider, upstream model), read from a health snapshot at scrape.

    ``snapshot`` returns ``{"provider/upstream_model": {"state": ...}, ...}`` (the shape of
    ``HealthBook.snapshot``); entries that name ``provider``/``upstream_model`` explicitly
    are read as such, so an upstream model containing ``/`` is never split wrongly.
    """

    def __init__(self, snapshot: Callable[[], Mapping[str, Mapping[str, object]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "imagegate_breaker_state",
            "Circuit breaker state per endpoint: 1 for the current state, 0 for the others.",
            labels=["provider", "upstream_model", "state"],
        )
        ewma = GaugeMetricFamily(
            "imagegate_endpoint_success_ewma",
            "Moving average of upstream success (1 = all recent attempts succeeded).",
            labels=["provider", "upstream_model"],
        )
        for name, entry in sorted(self._snapshot().items()):
            provider = str(entry.get("provider") or name.split("/", 1)[0])
            model = str(entry.get("upstream_model") or name.split("/", 1)[-1])
            current = str(entry.get("state", "closed"))
            for candidate in BREAKER_STATES:
                state.add_metric([provider, model, candidate], 1.0 if candidate == current else 0)
            success = entry.get("success_ewma")
            if isinstance(success, int | float):
                ewma.add_metric([provider, model], float(success))
        yield state
        yield ewma


def render(extra: Iterable[Collector] = ()) -> bytes:
    """The exposition text: every worker's metrics in multiprocess mode, else this one's."""
    path = multiproc_dir()
    if path is None:
        registry = _REGISTRY
        added = list(extra)
        for collector in added:
            registry.register(collector)
        try:
            return generate_latest(registry)
        finally:
            for collector in added:
                registry.unregister(collector)
    _forget_dead_workers(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


def _forget_dead_workers(path: str) -> None:
    """Drop live-gauge files of workers that died without cleaning up (killed, OOM).

    Counters of dead workers stay: their requests happened. A gauge such as holds in flight
    must not, or a killed worker's holds would read as in flight forever.
    """
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _DB_FILE.search(file)
        if match and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_exiting() -> None:
    """A worker's clean shutdown: its live gauges stop counting at once."""
    path = multiproc_dir()
    if path is not None:
        mark_process_dead(os.getpid(), path)


def clean_multiproc_dir(path: str) -> None:
    """Remove metric files left by earlier processes, keeping this process's own.

    Called by ``serve`` before workers start so a restart begins from zero, as
    prometheus_client requires; files of the current process (already open) stay.
    """
    os.makedirs(path, exist_ok=True)
    own = os.getpid()
    for file in glob.glob(os.path.join(path, "*.db")):
        match = _DB_FILE.search(file)
        if match and int(match.group(1)) == own:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(file)
