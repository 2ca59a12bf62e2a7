"""Dynamic batching: group queued compatible requests into one pipeline call.

Requests wait in one FIFO queue. The worker takes the oldest job and waits up to
``max_wait_s`` (from when that job arrived) for more jobs with the same batch key (same
pipeline, operation, size, steps, guidance), until ``max_batch_size`` images are ready;
then it runs them as one call in the device's worker thread. A job is never split, so a
request with ``n`` above the batch size runs alone.

The queue is bounded in images; a request that does not fit is refused with a 429 whose
``Retry-After`` is estimated from the queue depth and recent batch times. A cancelled
request (the client went away) leaves the queue at once; in a running batch it is marked
so the runner can interrupt the call when nobody in it is still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Generic, TypeVar

from imagegate.core.errors import RateLimited

log = logging.getLogger("imagegate.local")

P = TypeVar("P")
# Called from the worker thread with (image index within the job, partial index, preview).
PartialSink = Callable[[int, int, Any], None]


@dataclass(eq=False, slots=True)
class Job(Generic[P]):
    """One request's share of a batch: ``n`` images described by ``payload``."""

    key: Hashable
    n: int
    payload: P
    on_partial: PartialSink | None = None
    cancelled: bool = False  # read by the runner in the worker thread
    enqueued: float = 0.0
    future: asyncio.Future[list[Any]] | None = None


@dataclass(slots=True)
class BatchOutcome:
    """What a runner returns: per-job outputs, and whether the call was cut short."""

    outputs: list[list[Any]]
    interrupted: bool = False


Runner = Callable[[Sequence[Job[Any]]], BatchOutcome]


@dataclass(slots=True)
class BatchStats:
    """Counters shown on ``/healthz``, so batching can be watched (and tested) from outside."""

    batches: int = 0
    images: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # images per batch -> batches
    interrupted: int = 0
    cancelled: dict[str, int] = field(default_factory=dict)  # queued / running / done
    rejected: int = 0

    def record(self, images: int) -> None:
        self.batches += 1
        self.images += images
        self.sizes[images] = self.sizes.get(images, 0) + 1


@dataclass(eq=False)
class BatchScheduler:
    """The queue and worker of one provider; runs batches on ``executor`` (one thread)."""

    runner: Runner
    executor: Executor
    _: KW_ONLY
    name: str
    max_batch_size: int
    max_wait_s: float
    max_queue: int
    stats: BatchStats = field(default_factory=BatchStats, init=False)
    _pending: deque[Job[Any]] = field(default_factory=deque, init=False)
    _queued_images: int = field(default=0, init=False)
    _running: list[Job[Any]] = field(default_factory=list, init=False)
    _batch_s: float | None = field(default=None, init=False)  # EWMA of recent batch durations
    _wake: asyncio.Event | None = field(default=None, init=False)
    _worker: asyncio.Task[None] | None = field(default=None, init=False)

    def snapshot(self) -> dict[str, Any]:
        return {
            "queued_images": self._queued_images,
            "running_images": sum(job.n for job in self._running),
            "batches": self.stats.batches,
            "batched_images": self.stats.images,
            "batch_sizes": {str(k): v for k, v in sorted(self.stats.sizes.items())},
            "interrupted_batches": self.stats.interrupted,
            "cancelled": dict(self.stats.cancelled),
            "rejected": self.stats.rejected,
            "recent_batch_ms": None if self._batch_s is None else round(self._batch_s * 1000, 1),
        }

    async def submit(
        self, key: Hashable, n: int, payload: Any, on_partial: PartialSink | None = None
    ) -> list[Any]:
        """Queue ``n`` images and wait for them; raises ``RateLimited`` when the queue is full."""
        if self._queued_images and self._queued_images + n > self.max_queue:
            self.stats.rejected += 1
            raise RateLimited(
                f"The local engine '{self.name}' is busy ({self._queued_images} images queued); "
                "retry after the Retry-After delay.",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after_s())},
            )
        loop = asyncio.get_running_loop()
        job: Job[Any] = Job(key, n, payload, on_partial, enqueued=loop.time())
        job.future = loop.create_future()
        self._pending.append(job)
        self._queued_images += n
        self._ensure_worker()
        assert self._wake is not None
        self._wake.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._cancel(job)
            raise

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: batches ahead times recent batch time."""
        ahead = math.ceil(self._queued_images / self.max_batch_size) + (1 if self._running else 0)
        return max(1, math.ceil(ahead * (self._batch_s or 1.0)))

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    # -- worker ------------------------------------------------------------------------

    def _cancel(self, job: Job[Any]) -> None:
        job.cancelled = True
        if job in self._pending:
            self._pending.remove(job)
            self._queued_images -= job.n
            state = "queued"
            if self._wake is not None:
                self._wake.set()
        else:
            state = "running" if job in self._running else "done"
        self.stats.cancelled[state] = self.stats.cancelled.get(state, 0) + 1
        log.info("local job cancelled", extra={"provider": self.name, "state": state})

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = asyncio.create_task(self._work(), name=f"local-batcher-{self.name}")

    async def _work(self) -> None:
        while True:
            batch = await self._gather()
            if batch:
                await self._run(batch)

    async def _gather(self) -> list[Job[Any]]:
        """Wait for a head job and its companions; an empty list means start over."""
        assert self._wake is not None
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        head = self._pending[0]
        loop = asyncio.get_running_loop()
        deadline = head.enqueued + self.max_wait_s
        while self._ready_images(head.key) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
            if not self._pending or self._pending[0] is not head:
                return []  # the head was cancelled: its companions get their own deadline
        return self._take(head.key)

    def _ready_images(self, key: Hashable) -> int:
        return sum(job.n for job in self._pending if job.key == key)

    def _take(self, key: Hashable) -> list[Job[Any]]:
        batch: list[Job[Any]] = []
        images = 0
        for job in list(self._pending):
            if job.key != key:
                continue
            if batch and images + job.n > self.max_batch_size:
                continue
            batch.append(job)
            images += job.n
            self._pending.remove(job)
            self._queued_images -= job.n
            if images >= self.max_batch_size:
                break
        return batch

    async def _run(self, batch: list[Job[Any]]) -> None:
        images = sum(job.n for job in batch)
        self._running = batch
        self.stats.record(images)
        extra = {"provider": self.name, "batch_requests": len(batch), "batch_images": images}
        log.info("local batch started", extra=extra)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self.executor, self.runner, batch)
        except Exception as exc:
            for job in batch:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(exc)
            log.warning("local batch failed", extra={**extra, "error": repr(exc)})
            return
        finally:
            self._running = []
        elapsed = time.perf_counter() - started
        if outcome.interrupted:
            self.stats.interrupted += 1
        else:
            last = self._batch_s
            self._batch_s = elapsed if last is None else 0.7 * last + 0.3 * elapsed
        for job, output in zip(batch, outcome.outputs, strict=True):
            if job.future is not None and not job.future.done():
                job.future.set_result(output)
        log.info(
            "local batch finished",
            extra={
                **extra,
                "batch_ms": round(elapsed * 1000, 1),
                "interrupted": outcome.interrupted,
            },
        )
