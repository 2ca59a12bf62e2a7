"""One request's accounting: rate-limit permit, credit hold, settlement and usage record.

Both the JSON and the streaming paths go through :class:`Charge`: ``open`` before any
upstream call (429 / 402 refuse the request there), then exactly one of ``succeed`` or
``fail``. The ledger writes go through its write batcher (shared commits); they are
shielded so that a cancelled request (client gone) still settles or returns its hold.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import Connection

from imagegate.accounts.keys import ApiKey
from imagegate.accounts.ledger import Hold
from imagegate.accounts.ratelimit import Permit
from imagegate.accounts.usage import UsageRecord
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import GatewayError
from imagegate.core.types import ImageRequest
from imagegate.generation.services import Services
from imagegate.obs import metrics
from imagegate.routing.plan import CANCELLED, Plan

log = logging.getLogger("imagegate.charging")

# Recorded for a request that ended without an HTTP status of its own.
CLIENT_CLOSED = 499
INTERNAL = 500


def new_generation_id() -> str:
    return "gen_" + secrets.token_hex(12)


# Releases of holds whose request was cancelled while they were being taken.
_orphans: set[asyncio.Future[None]] = set()


class Charge:
    def __init__(
        self, gw: Services, key: ApiKey, spec: ModelSpec, req: ImageRequest, generation_id: str
    ) -> None:
        self.gw = gw
        self.key = key
        self.req = req
        self.generation_id = generation_id
        self.permit: Permit | None = None
        self.hold: Hold | None = None
        self.plan: Plan | None = None
        self.started = time.perf_counter()
        self.usage = UsageRecord(generation_id, key.id, spec.id, req.operation)
        self.closed = False

    @classmethod
    async def open(
        cls,
        gw: Services,
        key: ApiKey,
        spec: ModelSpec,
        req: ImageRequest,
        generation_id: str | None = None,
    ) -> Charge:
        """Take a rate-limit permit, plan the route and hold the plan's worst-case cost
        (429 / 402 otherwise). The router then follows ``charge.plan``."""
        charge = cls(gw, key, spec, req, generation_id or new_generation_id())
        charge.permit = await gw.limiter.acquire(key, req.n, charge.generation_id)
        try:
            charge.plan = gw.router.plan(spec, req)
            if key.credits_micro is not None:
                amount = charge.plan.max_cost_micro()
                charge.hold = await charge._take_hold(amount)
                if charge.hold is not None:
                    metrics.hold_started()
        except BaseException:
            await gw.limiter.release(charge.permit)
            raise
        return charge

    async def _take_hold(self, amount: int) -> Hold | None:
        """Hold ``amount``; if the request is cancelled meanwhile, return it once taken."""
        task = asyncio.ensure_future(
            self.gw.ledger.hold_async(self.key.id, amount, self.generation_id)
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_orphan)
            raise

    def _release_orphan(self, task: asyncio.Future[Hold | None]) -> None:
        if task.cancelled() or task.exception() is not None or task.result() is None:
            return
        self.closed = True
        self.usage.status, self.usage.error_code = CLIENT_CLOSED, "client_disconnected"
        release = asyncio.ensure_future(self.gw.ledger.release_async(task.result(), self.usage))
        _orphans.add(release)
        release.add_done_callback(_orphans.discard)

    @property
    def headers(self) -> dict[str, str]:
        """The rate-limit headers to send with the response."""
        return dict(self.permit.headers) if self.permit else {}

    async def succeed(
        self,
        provider: str,
        upstream_model: str,
        cost_micro: int,
        images: int,
        also: Callable[[Connection], None] | None = None,
    ) -> int:
        """Settle ``cost_micro`` and record the request (``also`` writes in the same
        transaction: its idempotency record); returns what was charged."""
        usage = self.usage
        usage.provider, usage.upstream_model = provider, upstream_model
        usage.images, usage.status = images, 200
        self._record_attempts()
        await self._close(self.gw.ledger.settle_async(self.hold, cost_micro, usage, also))
        return usage.cost_micro

    async def fail(self, exc: BaseException) -> None:
        """Release the hold and record why the request failed, with every upstream call
        made for it (the operator paid for those whatever the caller got)."""
        usage = self.usage
        if isinstance(exc, GatewayError):
            usage.status, usage.error_code = exc.status, exc.code
        elif isinstance(exc, asyncio.CancelledError):
            usage.status, usage.error_code = CLIENT_CLOSED, "client_disconnected"
        else:
            usage.status, usage.error_code = INTERNAL, "internal_error"
        self._record_attempts()
        await self._close(self.gw.ledger.release_async(self.hold, usage))

    async def refund(self, reason: str, status: int = 503) -> None:
        """The request was settled but its response cannot be delivered: reverse the
        charge (a ``refund`` ledger row) and record why. Best effort: it never raises."""
        usage = self.usage
        usage.status, usage.error_code = status, reason
        try:
            await asyncio.shield(self.gw.ledger.refund_async(self.hold, usage))
        except Exception:
            log.exception(
                "could not refund an undelivered response", extra={"gen": usage.generation_id}
            )

    def _record_attempts(self) -> None:
        usage = self.usage
        usage.latency_ms = (time.perf_counter() - self.started) * 1000
        attempts = self.plan.attempts if self.plan is not None else []
        usage.attempts = [a.to_dict() for a in attempts]
        if usage.provider is None and attempts:
            answered = [a for a in attempts if a.status == 200] or attempts
            usage.provider, usage.upstream_model = (
                answered[-1].provider,
                answered[-1].upstream_model,
            )

    def _count_upstream_spend(self) -> None:
        for a in self.plan.attempts if self.plan is not None else []:
            outcome = (
                "ok" if a.status == 200 else "cancelled" if a.status == CANCELLED else "failed"
            )
            metrics.record_upstream_cost(a.provider, outcome, a.cost_micro)

    async def _close(self, write: Coroutine[Any, Any, None]) -> None:
        if self.closed:
            write.close()
            return
        self.closed = True
        self._count_upstream_spend()
        try:
            # Shielded: a cancelled request (client gone) still settles or returns its hold.
            await asyncio.shield(write)
        except Exception as exc:  # the database is gone: the hold expires, nothing charged
            log.error(
                "ledger write failed: this request's upstream calls are not on the books",
                extra={
                    "generation_id": self.generation_id,
                    "attempts": self.usage.attempts,
                    "error": str(exc),
                },
            )
            raise
        finally:
            if self.hold is not None:
                metrics.hold_finished()
            if self.permit is not None:
                # Best effort: a charged request must get its response even if Redis is gone.
                try:
                    await self.gw.limiter.release(self.permit)
                except Exception as exc:
                    log.warning("could not release a rate-limit permit", extra={"error": str(exc)})
