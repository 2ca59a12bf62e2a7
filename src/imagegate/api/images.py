"""The three Images API routes and the pipeline they share."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounts import idempotency
from imagegate.accounts.keys import ApiKey
from imagegate.api.admission import admit, count_inputs
from imagegate.api.auth import authorize_model
from imagegate.api.body import content_kind
from imagegate.api.disconnect import cancel_on_disconnect
from imagegate.api.fields import build_request, fold_form_fields
from imagegate.api.inputs import json_inputs, multipart_inputs
from imagegate.api.replay import Record, replay
from imagegate.api.state import Gateway
from imagegate.api.streaming import stream_response
from imagegate.catalog import lifecycle
from imagegate.catalog.priceable import priceable
from imagegate.catalog.rules import check_request
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import (
    UnsupportedMediaType,
)
from imagegate.core.types import GeneratedImage, ImageRequest, Operation
from imagegate.generation.charging import Charge
from imagegate.generation.output import conform_output, output_bytes
from imagegate.generation.render import response_body
from imagegate.obs import metrics
from imagegate.routing.router import Routed


async def create_image(request: Request) -> Response:
    """POST /v1/images/generations (JSON)."""
    adm = await admit(request, "generate")
    try:
        if content_kind(request) != "json":
            raise UnsupportedMediaType(
                "/v1/images/generations takes a JSON body (Content-Type: application/json).",
                code="unsupported_content_type",
            )
        raw = await adm.read_json()
        req, spec = _prepare(adm.gw, adm.key, "generate", raw)
        await adm.end_body_phase()
        return await _execute(adm.gw, request, req, spec, raw)
    finally:
        await adm.close()


async def create_image_edit(request: Request) -> Response:
    """POST /v1/images/edits, as multipart or JSON."""
    return await _with_images(request, "edit")


async def create_image_variation(request: Request) -> Response:
    """POST /v1/images/variations, as multipart (JSON with an image URL also works)."""
    return await _with_images(request, "variation")


async def _with_images(request: Request, operation: Operation) -> Response:
    """Admission (api.admission) first; then the body, the inputs counted, then fetched."""
    adm = await admit(request, operation)
    try:
        kind = content_kind(request)
        gw, files = adm.gw, []
        if kind == "json":
            raw = await adm.read_json()
            req, spec = _prepare(gw, adm.key, operation, raw)
            await adm.charge_fetches(count_inputs(operation, spec, raw, []))
            req.images, req.mask = await json_inputs(gw.resolver, raw)
        elif kind == "form":
            raw = fold_form_fields(await adm.read_urlencoded())
            req, spec = _prepare(gw, adm.key, operation, raw)
            await adm.charge_fetches(count_inputs(operation, spec, raw, []))
            req.images, req.mask = await multipart_inputs(gw.resolver, [], raw)
        else:
            form = await adm.read_multipart()
            raw = fold_form_fields(form.fields)
            req, spec = _prepare(gw, adm.key, operation, raw)
            names = [part.name for part in form.files]
            await adm.charge_fetches(count_inputs(operation, spec, raw, names))
            req.images, req.mask = await multipart_inputs(gw.resolver, form.files, raw)
            files = [part.data for part in form.files]
        await adm.end_body_phase()
        return await _execute(gw, request, req, spec, raw, files)
    finally:
        await adm.close()


def _prepare(
    gw: Gateway, key: ApiKey, operation: Operation, raw: dict[str, Any]
) -> tuple[ImageRequest, ModelSpec]:
    """Scalar fields, model lookup and the key's model permission — before any fetch."""
    req = build_request(operation, raw, gw.settings.defaults.get(operation))
    spec = gw.catalog.resolve(req.model)
    authorize_model(key, spec)
    lifecycle.refuse_if_retired(spec)  # before any input fetch or upstream call
    spec = lifecycle.live_endpoints(spec)
    if raw.get("response_format") is None and not req.stream:  # streams carry b64_json only
        req.response_format = "url" if spec.default_response_format == "url" else "b64_json"
    return req, spec


async def _execute(
    gw: Gateway,
    request: Request,
    req: ImageRequest,
    spec: ModelSpec,
    raw: dict[str, Any],
    files: Sequence[bytes] = (),
) -> Response:
    request.state.model = spec.id
    check_request(spec, req)
    spec = priceable(spec, req)
    response = await _respond(gw, request, req, spec, raw, files)
    response.headers.update(lifecycle.headers(spec))
    return response


async def _respond(
    gw: Gateway,
    request: Request,
    req: ImageRequest,
    spec: ModelSpec,
    raw: dict[str, Any],
    files: Sequence[bytes],
) -> Response:
    """Run the request once per ``Idempotency-Key`` (streams too): a repeat gets the first
    response, whichever path produced it."""
    key: ApiKey = request.state.api_key
    header = request.headers.get(idempotency.HEADER)
    if header is None:
        return await _run(gw, request, req, spec, key, None)
    idem_key = idempotency.check_key(header)
    digest = idempotency.request_hash({"operation": req.operation, **raw}, list(files))
    stored = await run_in_threadpool(gw.idempotency.begin, key.id, idem_key, digest)
    if stored is not None:
        return await replay(gw, stored)
    record = Record(gw, key.id, idem_key)
    try:
        return await _run(gw, request, req, spec, key, record)
    except BaseException:
        await record.abandon()  # a no-op once the request was charged (record completed)
        raise


async def _run(
    gw: Gateway,
    request: Request,
    req: ImageRequest,
    spec: ModelSpec,
    key: ApiKey,
    record: Record | None,
) -> Response:
    if req.stream:
        return await stream_response(gw, request, req, spec, record)
    return await _generate(gw, request, req, spec, key, record)


async def _generate(
    gw: Gateway,
    request: Request,
    req: ImageRequest,
    spec: ModelSpec,
    key: ApiKey,
    record: Record | None = None,
) -> Response:
    """Hold, route, settle: the request is charged exactly when it returns a response.

    The response (and its idempotency record) is ready before the settlement, which stores
    the record in its own transaction; nothing after the settlement can fail the request.
    """
    started = time.perf_counter()
    charge = await Charge.open(gw, key, spec, req)
    assert charge.plan is not None
    try:
        routed = await cancel_on_disconnect(request, gw.router.route(spec, req, charge.plan))
        request.state.provider = routed.provider.id
        images = await conform_output(routed.result.images, req, routed.provider.capabilities)
        urls: list[str | None] = [None] * len(images)
        if req.response_format == "url":
            base = gw.public_base(request)
            urls = [await _host(gw, base, img) for img in images]
        produced = dataclasses.replace(routed.result, images=images)
        # The ledger charges exactly this (an excess over the hold by an adjust row), so the
        # response is complete before the settlement, which also stores its replay.
        cost_micro = routed.endpoint.pricing.cost_micro(req, produced)
        content, headers = _render(req, spec, charge, routed, images, urls, cost_micro, started)
        also = None
        if record is not None:
            also = record.writer(await record.prepare(200, headers, orjson.loads(content)))
    except BaseException as exc:
        await charge.fail(exc)
        raise
    settle = charge.succeed(
        routed.provider.id, routed.endpoint.upstream_model, cost_micro, len(images), also
    )
    await _to_the_end(settle, record)
    metrics.record_generation(spec.id, routed.provider.id, len(images), cost_micro / 1e6)
    return Response(content, media_type="application/json", headers=headers)


def _render(
    req: ImageRequest,
    spec: ModelSpec,
    charge: Charge,
    routed: Routed,
    images: list[GeneratedImage],
    urls: list[str | None],
    cost_micro: int,
    started: float,
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers, at the cost the settlement will charge."""
    cost = cost_micro / 1_000_000
    body = response_body(
        req,
        routed,
        images,
        urls,
        model_id=spec.id,
        generation_id=charge.generation_id,
        cost_usd=cost,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    headers = {
        **charge.headers,
        "x-imagegate-provider": routed.provider.id,
        "x-imagegate-cost-usd": f"{cost:.6f}",
        "x-imagegate-generation-id": charge.generation_id,
    }
    return orjson.dumps(body), headers


async def _to_the_end(settle: Coroutine[Any, Any, int], record: Record | None) -> None:
    """Run the settlement to its end even if this request is cancelled meanwhile, so that
    whether the idempotency record may be abandoned is known, never guessed."""
    task = asyncio.ensure_future(settle)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        if record is not None and task.done() and task.exception() is None:
            record.settled()
        raise
    if record is not None:
        record.settled()


async def _host(gw: Gateway, base: str, image: GeneratedImage) -> str:
    file_id = await gw.store.put(output_bytes(image), image.format)
    direct = await gw.store.public_url(file_id, gw.settings.url_ttl_s)
    if direct is not None:  # e.g. a presigned S3 URL: downloads bypass the gateway
        return direct
    exp = int(time.time()) + gw.settings.url_ttl_s
    sig = gw.signer.sign(file_id, exp)
    return f"{base}/v1/files/{file_id}?exp={exp}&sig={sig}"
