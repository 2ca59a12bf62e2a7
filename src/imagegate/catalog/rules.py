"""Checks a request against what its model accepts, and completes it: the one place where
the caller's fields and fetched inputs become an ``ImageRequest``.

Every failure is a 400 (or 413 for an oversized input) whose ``param`` names the field,
so a caller can fix the request without reading our source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from imagegate.catalog.spec import FreeSizeRule, ModelSpec
from imagegate.core.errors import InvalidRequest, PayloadTooLarge
from imagegate.core.fields import Field, declared
from imagegate.core.size import Size
from imagegate.core.types import (
    ImageRequest,
    InputImage,
    Operation,
    RequestFields,
    ResponseFormat,
)

_CALLER_FIELDS = tuple(f.name for f in dataclasses.fields(RequestFields))


def resolve_request(
    spec: ModelSpec,
    fields: RequestFields,
    images: Sequence[InputImage] = (),
    mask: InputImage | None = None,
) -> ImageRequest:
    """The complete request: ``fields`` and the fetched inputs checked against ``spec``, the
    output size resolved and the response format defaulted to the model's. Nothing after
    this changes what the caller asked for."""
    if fields.operation not in spec.operations:
        supported = ", ".join(sorted(spec.operations))
        raise InvalidRequest(
            f"Model '{spec.id}' does not support {_op_name(fields.operation)} "
            f"(it supports: {supported}).",
            param="model",
            code="unsupported_operation",
        )
    _check_prompt(spec, fields)
    _check_n(spec, fields)
    _check_choices(spec, fields)
    _check_inputs(spec, fields.operation, images, mask)
    width, height = resolve_size(spec, fields.size, images)
    caller = {name: getattr(fields, name) for name in _CALLER_FIELDS}
    caller["response_format"] = _response_format(spec, fields)
    return ImageRequest(**caller, width=width, height=height, images=list(images), mask=mask)


def _response_format(spec: ModelSpec, fields: RequestFields) -> ResponseFormat:
    """The caller's choice, else the model's default; streams carry ``b64_json`` only."""
    if fields.response_format is not None:
        return fields.response_format
    if spec.default_response_format == "url" and not fields.stream:
        return "url"
    return "b64_json"


def resolve_size(spec: ModelSpec, size: str, images: Sequence[InputImage] = ()) -> tuple[int, int]:
    """The output's pixel size for the caller's ``size`` ("auto": the input's when the model
    takes free sizes and it fits, else the model's default)."""
    if size == "auto":
        if not spec.auto_size:
            raise _size_error(spec, size)
        if images and _free_fits(spec.free_size, images[0].width, images[0].height):
            return images[0].width, images[0].height
        return parse_size(spec.default_size) or (1024, 1024)
    dims = parse_size(size)
    if dims is None:
        raise InvalidRequest(
            f"Invalid size '{size}': expected 'auto' or WIDTHxHEIGHT such as 1024x1024.",
            param="size",
            code="invalid_size",
        )
    if size in spec.sizes:
        return dims
    rule = spec.free_size
    if rule is None:
        raise _size_error(spec, size)
    problem = _free_problem(rule, *dims)
    if problem:
        raise InvalidRequest(
            f"Invalid size '{size}' for model '{spec.id}': {problem}.",
            param="size",
            code="invalid_size",
        )
    return dims


def parse_size(size: str) -> tuple[int, int] | None:
    parsed = Size.parse(size)
    return (parsed.width, parsed.height) if parsed is not None else None


def _free_fits(rule: FreeSizeRule | None, width: int, height: int) -> bool:
    return rule is not None and _free_problem(rule, width, height) is None


def _free_problem(rule: FreeSizeRule, width: int, height: int) -> str | None:
    if not (rule.min_side <= width <= rule.max_side and rule.min_side <= height <= rule.max_side):
        return f"each side must be between {rule.min_side} and {rule.max_side} pixels"
    if width % rule.multiple_of or height % rule.multiple_of:
        return f"width and height must be multiples of {rule.multiple_of}"
    if rule.max_aspect and max(width, height) / min(width, height) > rule.max_aspect:
        ratio = f"{rule.max_aspect:g}"
        return f"the aspect ratio must be between 1:{ratio} and {ratio}:1"
    pixels = width * height
    if rule.max_pixels and pixels > rule.max_pixels:
        return f"at most {rule.max_pixels} pixels in total"
    if rule.min_pixels and pixels < rule.min_pixels:
        return f"at least {rule.min_pixels} pixels in total"
    return None


def _size_error(spec: ModelSpec, size: str) -> InvalidRequest:
    options = list(spec.sizes) + (["auto"] if spec.auto_size else [])
    if spec.free_size:
        rule = spec.free_size
        options.append(f"WIDTHxHEIGHT with sides {rule.min_side}-{rule.max_side}")
    return InvalidRequest(
        f"Invalid size '{size}' for model '{spec.id}'. Supported: {', '.join(options)}.",
        param="size",
        code="invalid_size",
    )


def _check_prompt(spec: ModelSpec, req: RequestFields) -> None:
    if req.operation == "variation":
        return
    if not req.prompt or not req.prompt.strip():
        raise InvalidRequest(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if len(req.prompt) > spec.prompt_max_chars:
        raise InvalidRequest(
            f"The prompt is {len(req.prompt)} characters long; model '{spec.id}' accepts at most "
            f"{spec.prompt_max_chars}.",
            param="prompt",
            code="string_above_max_length",
        )


def _check_n(spec: ModelSpec, req: RequestFields) -> None:
    limit = spec.max_n(req.operation)
    if not 1 <= req.n <= limit:
        only = "only n=1 is supported" if limit == 1 else f"n must be between 1 and {limit}"
        raise InvalidRequest(
            f"Invalid n={req.n} for model '{spec.id}': {only}.", param="n", code="invalid_value"
        )


def _choice(
    value: str | None, allowed: tuple[str, ...] | None, param: str, spec: ModelSpec
) -> None:
    if value is None or allowed is None or value in allowed:
        return
    if not allowed:
        message = f"Model '{spec.id}' does not support the '{param}' parameter."
        raise InvalidRequest(message, param=param, code="unsupported_parameter")
    raise InvalidRequest(
        f"Invalid {param} '{value}' for model '{spec.id}'. Supported: {', '.join(allowed)}.",
        param=param,
        code="invalid_value",
    )


def _check_choices(spec: ModelSpec, req: RequestFields) -> None:
    _choice(req.quality, spec.qualities, "quality", spec)
    _choice(req.style, spec.styles, "style", spec)
    _choice(req.output_format, spec.output_formats, "output_format", spec)
    _choice(req.background, spec.backgrounds, "background", spec)
    _choice(req.moderation, spec.moderations, "moderation", spec)
    _check_range(req.output_compression, declared("output_compression"))
    if req.output_compression is not None and req.output_format in (None, "png"):
        raise InvalidRequest(
            "output_compression applies only to output_format 'jpeg' or 'webp', not png.",
            param="output_compression",
            code="unsupported_parameter",
        )
    if req.background == "transparent" and req.output_format == "jpeg":
        raise InvalidRequest(
            "A transparent background needs output_format 'png' or 'webp'; jpeg has no alpha.",
            param="background",
            code="unsupported_parameter",
        )
    _check_range(req.partial_images, declared("partial_images"))


def _check_range(value: int | None, field: Field) -> None:
    """The declared limits (``core.fields``) of a field every model bounds alike."""
    low, high = field.minimum, field.maximum
    assert low is not None and high is not None
    if value is not None and not low <= value <= high:
        raise InvalidRequest(f"{field.name} must be between {low} and {high}.", param=field.name)


def _check_inputs(
    spec: ModelSpec, operation: Operation, images: Sequence[InputImage], mask: InputImage | None
) -> None:
    if operation == "generate":
        if images or mask:
            raise InvalidRequest(
                "Image generation takes no input image; use /v1/images/edits.", param="image"
            )
        return
    if not images:
        raise InvalidRequest(
            "Missing required parameter: 'image'.",
            param="image",
            code="missing_required_parameter",
        )
    limit = 1 if operation == "variation" else spec.max_input_images
    if len(images) > limit:
        raise InvalidRequest(
            f"Model '{spec.id}' accepts at most {limit} input image(s); got {len(images)}.",
            param="image",
            code="too_many_images",
        )
    for image in images:
        _check_input_image(spec, image.format, len(image.data), image.width, image.height, "image")
    if mask is not None:
        if not spec.supports_mask or operation != "edit":
            raise InvalidRequest(
                f"Model '{spec.id}' does not accept a mask.",
                param="mask",
                code="unsupported_parameter",
            )
        first = images[0]
        if (mask.width, mask.height) != (first.width, first.height):
            raise InvalidRequest(
                f"The mask is {mask.width}x{mask.height} but the image is "
                f"{first.width}x{first.height}; they must have the same dimensions.",
                param="mask",
                code="invalid_mask",
            )
        _check_input_image(spec, mask.format, len(mask.data), 0, 0, "mask")


def _check_input_image(
    spec: ModelSpec, fmt: str, size: int, width: int, height: int, param: str
) -> None:
    if fmt not in spec.input_formats:
        raise InvalidRequest(
            f"Model '{spec.id}' accepts {param} files in {', '.join(spec.input_formats)} "
            f"format only; got {fmt}.",
            param=param,
            code="invalid_image_format",
        )
    if spec.max_image_bytes is not None and size > spec.max_image_bytes:
        limit_mb = spec.max_image_bytes / (1024 * 1024)
        raise PayloadTooLarge(
            f"The {param} is larger than {limit_mb:g} MB, the limit for model '{spec.id}'.",
            param=param,
        )
    if spec.square_inputs_only and width and width != height:
        raise InvalidRequest(
            f"Model '{spec.id}' needs a square {param}; got {width}x{height}.",
            param=param,
            code="invalid_image",
        )


def _op_name(operation: str) -> str:
    return {"generate": "image generation", "edit": "image edits"}.get(operation, "variations")
