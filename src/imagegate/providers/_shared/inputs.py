"""Building upstream requests the same way in every adapter: edit-input checks, headers,
per-model overrides and numbered fan-out. Each adapter keeps its own limits and wording."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import orjson

from imagegate.core.errors import InvalidRequest
from imagegate.core.types import ImageRequest
from imagegate.providers._shared.common import data_url, fan_out, white_edit_mask

T = TypeVar("T")
Spec = TypeVar("Spec")


def refuse_mask(
    request: ImageRequest, message: str, *, code: str = "unsupported_parameter"
) -> None:
    """A 400 naming ``mask`` when the caller sent one to a model that takes none."""
    if request.mask is not None:
        raise InvalidRequest(message, param="mask", code=code)


def limit_images(request: ImageRequest, limit: int, message: str) -> None:
    """A 400 naming ``image`` when the caller sent more input images than ``limit``."""
    if len(request.images) > limit:
        raise InvalidRequest(message, param="image", code="too_many_images")


def edit_fields(
    provider_id: str,
    request: ImageRequest,
    image_field: str | None,
    mask_field: str | None,
    *,
    no_mask: str,
) -> dict[str, Any]:
    """The single input image (and a white-means-edit mask) as data URLs under a model's
    own field names (fal, Replicate). No ``image_field``: the model cannot edit; no
    ``mask_field``: a mask is refused with the message ``no_mask``."""
    if image_field is None:
        raise InvalidRequest(
            f"Provider '{provider_id}' cannot edit with this model.",
            param="model",
            code="unsupported_operation",
        )
    limit_images(
        request, 1, f"This model takes at most 1 input image; {len(request.images)} were given."
    )
    image = request.images[0]
    fields: dict[str, Any] = {image_field: data_url(image.data, image.mime_type)}
    if mask_field is not None:
        fields[mask_field] = data_url(white_edit_mask(image, request.mask), "image/png")
    else:
        refuse_mask(request, no_mask, code="mask_not_supported")
    return fields


def auth_headers(
    api_key: str | None,
    header: str = "Authorization",
    scheme: str = "Bearer ",
    *,
    json_body: bool = True,
) -> dict[str, str]:
    """``Accept: application/json`` (and the JSON ``Content-Type`` for a JSON body; a
    multipart one is httpx's to set) plus the key in the upstream's own header, none when
    the provider has no key configured."""
    headers = {"Accept": "application/json"}
    if json_body:
        headers["Content-Type"] = "application/json"
    if api_key:
        headers[header] = f"{scheme}{api_key}"
    return headers


def with_overrides(spec: Spec, models: Mapping[str, Any] | None, upstream_model: str) -> Spec:
    """``spec`` with the operator's ``options.models[upstream_model]`` fields applied (lists
    become tuples), so a changed input schema needs no release."""
    override = (models or {}).get(upstream_model)
    if not isinstance(override, dict):
        return spec
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in override.items()}
    return replace(spec, **fields)  # type: ignore[type-var]


async def fan_out_numbered(
    n: int, per_call: int, call: Callable[[int, int], Awaitable[list[T]]]
) -> list[T]:
    """``fan_out`` where ``call(index, k)`` also gets its call's number (0, 1, ...), so
    call ``i`` can use ``seed + i`` and seeded outputs differ."""
    numbers = iter(range(n))  # fan_out starts its calls in order
    return await fan_out(n, per_call, lambda k: call(next(numbers), k))


async def post_body(
    http: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str],
    timeout_s: float,
    params: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
    form: dict[str, str] | None = None,
    files: list[Any] | None = None,
) -> httpx.Response:
    """POST a JSON body, or else multipart ``form`` fields and ``files`` (OpenAI-shaped
    APIs take JSON for generations and forms for edits)."""
    if json_body is not None:
        json_headers = {**headers, "Content-Type": "application/json"}
        content = orjson.dumps(json_body)
        return await http.post(
            url, params=params, content=content, headers=json_headers, timeout=timeout_s
        )
    return await http.post(
        url, params=params, data=form, files=files, headers=headers, timeout=timeout_s
    )
