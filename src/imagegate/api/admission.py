"""Admission before work: a request is let in before its body is read or an input fetched.

The order for every image request is: authenticate -> rate/concurrency check (the key's
buckets must cover one request, and a concurrency slot is taken while the body is read) ->
cheap credit pre-check -> read the body under a limit derived from the catalog, with its
bytes reserved against the process-wide in-flight budget -> count the inputs and charge URL
fetches to the key's request bucket -> fetch. A refused request costs a few hundred bytes
of reading, not megabytes. The credit hold and the request's own permit follow in
:class:`imagegate.generation.charging.Charge`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from imagegate.accounts.keys import ApiKey
from imagegate.accounts.ratelimit import Permit
from imagegate.api.auth import authenticate
from imagegate.api.body import (
    Multipart,
    declared_length,
    read_json,
    read_multipart,
    read_urlencoded,
)
from imagegate.api.state import Gateway, gateway
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import GatewayError, InsufficientCredits, InvalidRequest
from imagegate.core.types import Operation
from imagegate.obs import metrics

MB = 1024 * 1024
FIELDS_BYTES = 1 * MB  # every field of a request but its images (prompts are <= 32k chars)


class ServerBusy(GatewayError):
    """The process already holds its cap of request-body bytes; retry shortly."""

    status = 503
    type = "server_error"
    code = "server_busy"


class BodyBudget:
    """Bytes of request bodies this process holds at once (``limits.max_inflight_mb``).

    A request reserves its declared length (or each chunk, when none is declared) before
    reading it, and gives the reservation back when it is answered, so N parallel uploads
    cannot hold more than the cap however they are spread over keys.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0

    def reserve(self, n: int) -> None:
        if n <= 0:
            return
        if self.used + n > self.cap:
            raise ServerBusy(
                "The gateway is receiving as many request bytes as it accepts at once; "
                "retry shortly.",
                headers={"Retry-After": "1"},
            )
        self.used += n
        metrics.body_bytes_changed(n)

    def release(self, n: int) -> None:
        if n > 0:
            self.used -= n
            metrics.body_bytes_changed(-n)


def body_budget(gw: Gateway) -> BodyBudget:
    if gw.body_budget is None:
        gw.body_budget = BodyBudget(gw.settings.limits.max_inflight_bytes)
    budget: BodyBudget = gw.body_budget
    return budget


def b64_len(n: int) -> int:
    return (n + 2) // 3 * 4


def images_accepted(spec: ModelSpec, operation: Operation) -> int:
    """How many image inputs (mask included) a request for ``spec`` may carry."""
    if operation == "generate":
        return 0
    if operation == "variation":
        return 1
    return spec.max_input_images + (1 if spec.supports_mask else 0)


def body_limit(gw: Gateway, operation: Operation) -> int:
    """The largest body for ``operation``: its fields plus, for the model that accepts the
    most, every image it takes base64-encoded; never past ``limits.max_body_mb``."""
    cache: dict[str, int] = gw.body_limits
    if operation not in cache:
        limits = gw.settings.limits
        image_bytes = 0
        for spec in gw.catalog:
            if operation not in spec.operations:
                continue
            largest = min(spec.max_image_bytes or limits.max_image_bytes, limits.max_image_bytes)
            image_bytes = max(image_bytes, images_accepted(spec, operation) * b64_len(largest))
        derived = FIELDS_BYTES + image_bytes
        cap = min(derived, limits.max_body_bytes)
        if limits.max_json_bytes is not None:
            cap = min(cap, limits.max_json_bytes)
        cache[operation] = cap
    return cache[operation]


@dataclass(slots=True)
class Admission:
    """One admitted request: its key, its body-phase slot and its reserved body bytes."""

    gw: Gateway
    request: Request
    key: ApiKey
    operation: Operation
    permit: Permit | None = None
    reserved: int = 0
    fetch_id: str = field(default_factory=lambda: "adm_" + secrets.token_hex(8))

    @property
    def limit(self) -> int:
        return body_limit(self.gw, self.operation)

    def _reserve_declared(self) -> None:
        declared = declared_length(self.request)
        if declared is not None and declared <= self.limit:
            body_budget(self.gw).reserve(declared)
            self.reserved += declared

    def _on_chunk(self, n: int) -> None:
        """Chunked bodies (no Content-Length) reserve as they arrive."""
        body_budget(self.gw).reserve(n)
        self.reserved += n

    async def read_json(self) -> dict[str, Any]:
        self._reserve_declared()
        hook = self._on_chunk if not self.reserved else None
        return await read_json(self.request, self.limit, on_chunk=hook)

    async def read_urlencoded(self) -> list[tuple[str, str]]:
        self._reserve_declared()
        hook = self._on_chunk if not self.reserved else None
        return await read_urlencoded(self.request, self.limit, on_chunk=hook)

    async def read_multipart(self) -> Multipart:
        self._reserve_declared()
        limits = self.gw.settings.limits
        return await read_multipart(
            self.request,
            max_file_bytes=limits.max_image_bytes,
            max_parts=limits.max_form_fields,
            max_total_bytes=self.limit,
            on_chunk=self._on_chunk if not self.reserved else None,
        )

    async def charge_fetches(self, urls: int) -> None:
        """Each input the gateway must fetch costs the key one request token (429 first)."""
        if urls > 0:
            await self.gw.limiter.acquire(
                self.key, 0, self.fetch_id, requests=urls, slot=False, consume=True
            )

    async def end_body_phase(self) -> None:
        """Give back the body-phase slot: the request's own permit is taken by Charge."""
        if self.permit is not None:
            permit, self.permit = self.permit, None
            await self.gw.limiter.release(permit)

    async def close(self) -> None:
        await self.end_body_phase()
        budget = body_budget(self.gw)
        budget.release(self.reserved)
        self.reserved = 0


async def admit(request: Request, operation: Operation) -> Admission:
    """Authenticate, check the key's buckets and slot, and pre-check its credit."""
    gw = gateway(request)
    key = await authenticate(request)
    adm = Admission(gw, request, key, operation)
    adm.permit = await gw.limiter.acquire(key, 1, adm.fetch_id, consume=False)
    try:
        _precheck_credit(gw, key, operation)
    except BaseException:
        await adm.close()
        raise
    return adm


def _precheck_credit(gw: Gateway, key: ApiKey, operation: Operation) -> None:
    """402 for a key with nothing left, unless some model it may use is free."""
    if key.credits_micro is None or key.credits_micro > 0:
        return
    for spec in gw.catalog:
        usable = operation in spec.operations and key.allows_model(spec.id, spec.aliases)
        if usable and any(e.pricing.free or not e.pricing.configured for e in spec.endpoints):
            return
    raise InsufficientCredits(
        "This API key has no credit left; top it up before sending requests.",
        code="insufficient_credits",
    )


def count_inputs(
    operation: Operation, spec: ModelSpec, raw: dict[str, Any], file_names: list[str]
) -> int:
    """Count every image input (``image``, ``image[]``, ``images``, file parts) and the mask
    against the model's limit before any is fetched; returns how many are URLs to fetch."""
    limit = 1 if operation == "variation" else spec.max_input_images
    values: list[Any] = [n for n in file_names if n.split("[", 1)[0] == "image"]
    for name in ("images", "image"):
        value = raw.get(name)
        if value is not None:
            values += value if isinstance(value, list) else [value]
    if len(values) > limit:
        raise InvalidRequest(
            f"At most {limit} input image{'s' if limit != 1 else ''} may be sent to "
            f"'{spec.id}' for this operation; got {len(values)} (image, image[] and images "
            "are counted together).",
            param="image",
            code="too_many_images",
        )
    masks = [n for n in file_names if n.split("[", 1)[0] == "mask"]
    if raw.get("mask") is not None:
        masks.append(raw["mask"])
    if len(masks) > 1:
        raise InvalidRequest("Only one 'mask' may be sent.", param="mask", code="too_many_masks")
    return sum(_is_url(v) for v in values + masks)


def _is_url(value: Any) -> bool:
    if isinstance(value, dict):
        value = value.get("image_url")
    return isinstance(value, str) and value.strip()[:8].lower().startswith(("http://", "https://"))
