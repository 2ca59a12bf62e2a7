"""The three Images API routes and the pipeline they share."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagegate.accounts.keys import ApiKey
from imagegate.api.auth import authenticate, authorize_model
from imagegate.api.body import content_kind, read_json, read_multipart, read_urlencoded
from imagegate.api.fields import build_request, fold_form_fields
from imagegate.api.inputs import json_inputs, multipart_inputs
from imagegate.api.render import response_body
from imagegate.api.state import Gateway, gateway
from imagegate.catalog.rules import check_request
from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import (
    InvalidRequest,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamFailed,
)
from imagegate.core.types import GeneratedImage, ImageRequest, Operation
from imagegate.media.images import conform
from imagegate.providers.base import Capabilities

MAX_PARTS_OVERHEAD = 16


async def create_image(request: Request) -> Response:
    """POST /v1/images/generations (JSON)."""
    gw = gateway(request)
    key = await authenticate(request)
    if content_kind(request) != "json":
        raise UnsupportedMediaType(
            "/v1/images/generations takes a JSON body (Content-Type: application/json).",
            code="unsupported_content_type",
        )
    raw = await read_json(request, gw.settings.limits.max_json_bytes)
    req, spec = _prepare(gw, key, "generate", raw)
    return await _execute(gw, request, req, spec)


async def create_image_edit(request: Request) -> Response:
    """POST /v1/images/edits, as multipart or JSON."""
    return await _with_images(request, "edit")


async def create_image_variation(request: Request) -> Response:
    """POST /v1/images/variations, as multipart (JSON with an image URL also works)."""
    return await _with_images(request, "variation")


async def _with_images(request: Request, operation: Operation) -> Response:
    gw = gateway(request)
    key = await authenticate(request)
    limits = gw.settings.limits
    kind = content_kind(request)
    if kind == "json":
        raw = await read_json(request, limits.max_json_bytes)
        req, spec = _prepare(gw, key, operation, raw)
        req.images, req.mask = await json_inputs(gw.resolver, raw)
    elif kind == "form":
        raw = fold_form_fields(await read_urlencoded(request, limits.max_json_bytes))
        req, spec = _prepare(gw, key, operation, raw)
        req.images, req.mask = await multipart_inputs(gw.resolver, [], raw)
    else:
        form = await read_multipart(
            request,
            max_file_bytes=limits.max_image_bytes,
            max_parts=limits.max_form_fields,
            max_total_bytes=limits.max_image_bytes * 17 + 16 * 1024 * 1024,
        )
        raw = fold_form_fields(form.fields)
        req, spec = _prepare(gw, key, operation, raw)
        req.images, req.mask = await multipart_inputs(gw.resolver, form.files, raw)
    return await _execute(gw, request, req, spec)


def _prepare(
    gw: Gateway, key: ApiKey, operation: Operation, raw: dict[str, Any]
) -> tuple[ImageRequest, ModelSpec]:
    """Scalar fields, model lookup and the key's model permission — before any fetch."""
    req = build_request(operation, raw)
    spec = gw.catalog.resolve(req.model)
    authorize_model(key, spec)
    if raw.get("response_format") is None:
        req.response_format = "url" if spec.default_response_format == "url" else "b64_json"
    return req, spec


async def _execute(gw: Gateway, request: Request, req: ImageRequest, spec: ModelSpec) -> Response:
    started = time.perf_counter()
    request.state.model = spec.id
    check_request(spec, req)
    if req.stream:
        raise InvalidRequest(
            "Streaming responses are not available in this version of the gateway yet.",
            param="stream",
            code="unsupported_parameter",
        )
    routed = await gw.router.route(spec, req)
    request.state.provider = routed.provider.id
    images = await _conform_all(routed.result.images, req, routed.provider.capabilities)
    urls: list[str | None] = [None] * len(images)
    if req.response_format == "url":
        base = gw.public_base(request)
        urls = [await _host(gw, base, img) for img in images]
    cost = routed.endpoint.pricing.cost(len(images))
    generation_id = "gen_" + secrets.token_hex(12)
    body = response_body(
        req,
        routed,
        images,
        urls,
        model_id=spec.id,
        generation_id=generation_id,
        cost_usd=cost,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
    headers = {
        "x-imagegate-provider": routed.provider.id,
        "x-imagegate-cost-usd": f"{cost:.6f}",
        "x-imagegate-generation-id": generation_id,
    }
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


async def _conform_all(
    images: list[GeneratedImage], req: ImageRequest, caps: Capabilities
) -> list[GeneratedImage]:
    """Re-encode to the requested format/compression where the upstream did not."""
    fmt = req.output_format
    if fmt is None and req.output_compression is None:
        return images
    out: list[GeneratedImage] = []
    for image in images:
        target = fmt or image.format
        needs_work = image.format != target or (
            req.output_compression is not None
            and target in ("jpeg", "webp")
            and not caps.native_compression
        )
        if needs_work:
            try:
                image = await run_in_threadpool(conform, image, target, req.output_compression)
            except UpstreamError as exc:
                raise UpstreamFailed(
                    f"The upstream returned an unusable image: {exc.message}"
                ) from exc

        out.append(image)
    return out


async def _host(gw: Gateway, base: str, image: GeneratedImage) -> str:
    file_id = await gw.store.put(image.data, image.format)
    exp = int(time.time()) + gw.settings.url_ttl_s
    sig = gw.signer.sign(file_id, exp)
    return f"{base}/v1/files/{file_id}?exp={exp}&sig={sig}"
