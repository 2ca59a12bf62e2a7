"""The three Images API routes: admit, read and resolve the request, then hand it to the
generation pipeline (JSON) or its event stream (SSE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounts import idempotency
from imagegate.accounts.keys import ApiKey
from imagegate.api.admission import admit, count_inputs
from imagegate.api.auth import authorize_model
from imagegate.api.body import content_kind
from imagegate.api.disconnect import cancel_on_disconnect
from imagegate.api.fields import fold_form_fields, parse_fields
from imagegate.api.inputs import json_inputs, multipart_inputs
from imagegate.api.replay import replay
from imagegate.api.state import Gateway
from imagegate.api.streaming import stream_response
from imagegate.catalog import lifecycle
from imagegate.catalog.priceable import priceable
from imagegate.catalog.rules import resolve_request
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import UnsupportedMediaType
from imagegate.core.types import ImageRequest, InputImage, Operation, RequestFields
from imagegate.generation.pipeline import Collected, Generation
from imagegate.generation.record import Record


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
        fields, spec = _prepare(adm.gw, adm.key, "generate", raw)
        await adm.end_body_phase()
        return await _execute(adm.gw, request, fields, spec, raw)
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
            fields, spec = _prepare(gw, adm.key, operation, raw)
            await adm.charge_fetches(count_inputs(operation, spec, raw, []))
            images, mask = await json_inputs(gw.resolver, raw)
        elif kind == "form":
            raw = fold_form_fields(await adm.read_urlencoded())
            fields, spec = _prepare(gw, adm.key, operation, raw)
            await adm.charge_fetches(count_inputs(operation, spec, raw, []))
            images, mask = await multipart_inputs(gw.resolver, [], raw)
        else:
            form = await adm.read_multipart()
            raw = fold_form_fields(form.fields)
            fields, spec = _prepare(gw, adm.key, operation, raw)
            names = [part.name for part in form.files]
            await adm.charge_fetches(count_inputs(operation, spec, raw, names))
            images, mask = await multipart_inputs(gw.resolver, form.files, raw)
            files = [part.data for part in form.files]
        await adm.end_body_phase()
        return await _execute(gw, request, fields, spec, raw, files, images, mask)
    finally:
        await adm.close()


def _prepare(
    gw: Gateway, key: ApiKey, operation: Operation, raw: dict[str, Any]
) -> tuple[RequestFields, ModelSpec]:
    """Scalar fields, model lookup and the key's model permission — before any fetch."""
    fields = parse_fields(operation, raw, gw.settings.defaults.get(operation))
    spec = gw.catalog.resolve(fields.model)
    authorize_model(key, spec)
    lifecycle.refuse_if_retired(spec)  # before any input fetch or upstream call
    return fields, lifecycle.live_endpoints(spec)


async def _execute(
    gw: Gateway,
    request: Request,
    fields: RequestFields,
    spec: ModelSpec,
    raw: dict[str, Any],
    files: Sequence[bytes] = (),
    images: Sequence[InputImage] = (),
    mask: InputImage | None = None,
) -> Response:
    """Complete the request (``catalog.rules.resolve_request``: from here on nothing changes
    what the caller asked for), keep to endpoints that can price it, and answer it."""
    request.state.model = spec.id
    req = resolve_request(spec, fields, images, mask)
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
    """The JSON response of the generation pipeline (``generation.pipeline``)."""

    def routed_to(provider: str) -> None:
        request.state.provider = provider

    gen = await Generation.open(
        gw,
        req,
        spec,
        key,
        record,
        guard=lambda work: cancel_on_disconnect(request, work),
        base_url=gw.public_base(request),
        on_routed=routed_to,
    )
    body = Collected()
    await gen.run(body)
    return Response(body.content, media_type="application/json", headers=gen.headers)
