"""Turn request models into what goes on the wire: JSON, or multipart when files are sent.

Image inputs that are URLs (or data URLs) need no upload, so an edit or variation whose
inputs are all URLs is sent as JSON (``images: [{"image_url": ...}]``); anything else is
multipart with ``image``/``image[]`` file parts, as the OpenAI SDKs send it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagegate_client.models import (
    ImageGenerationRequest,
    ImageInput,
    ImagesEditRequest,
    ImageVariationRequest,
)

FilePart = tuple[str, tuple[str, bytes, str]]


@dataclass
class Outgoing:
    """One prepared request body; bytes are read up front so retries can resend it."""

    path: str
    json: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    files: list[FilePart] = field(default_factory=list)
    stream: bool = False


@dataclass
class _Source:
    url: str | None = None
    filename: str = "image.png"
    content: bytes = b""


def generation(request: ImageGenerationRequest) -> Outgoing:
    if not request.prompt:
        raise ValueError("prompt is required")
    return Outgoing("/images/generations", json=request.to_dict(), stream=request.streaming)


def edit(request: ImagesEditRequest) -> Outgoing:
    if request.image is None:
        raise ValueError("image is required")
    images = request.image if isinstance(request.image, list) else [request.image]
    return _with_images("/images/edits", request.to_dict(), images, request.mask, request.streaming)


def variation(request: ImageVariationRequest) -> Outgoing:
    if request.image is None:
        raise ValueError("image is required")
    return _with_images("/images/variations", request.to_dict(), [request.image], None, False)


def _with_images(
    path: str,
    body: dict[str, Any],
    images: list[ImageInput],
    mask: ImageInput | None,
    stream: bool,
) -> Outgoing:
    sources = [_source(i) for i in images]
    mask_source = _source(mask) if mask is not None else None
    everything = [*sources, *([mask_source] if mask_source else [])]
    if all(s.url is not None for s in everything):
        body = {**body, "images": [{"image_url": s.url} for s in sources]}
        if mask_source is not None:
            body["mask"] = {"image_url": mask_source.url}
        return Outgoing(path, json=body, stream=stream)
    data: dict[str, Any] = {k: _form_value(v) for k, v in body.items()}
    files: list[FilePart] = []
    name = "image[]" if len(sources) > 1 else "image"
    urls = [s.url for s in sources if s.url is not None]
    for s in sources:
        if s.url is None:
            files.append((name, (s.filename, s.content, _content_type(s.content))))
    if urls:
        data["image[]"] = urls
    if mask_source is not None:
        if mask_source.url is not None:
            data["mask"] = mask_source.url
        else:
            content = mask_source.content
            files.append(("mask", (mask_source.filename, content, _content_type(content))))
    return Outgoing(path, data=data, files=files, stream=stream)


def _source(value: ImageInput) -> _Source:
    if isinstance(value, (bytes, bytearray)):
        return _Source(content=bytes(value), filename=f"image{_extension(bytes(value))}")
    if isinstance(value, str) and value[:8].lower().startswith(("http://", "https://", "data:")):
        return _Source(url=value)
    if isinstance(value, (str, Path)):
        path = Path(value)
        return _Source(content=path.read_bytes(), filename=path.name)
    if hasattr(value, "read"):
        content = value.read()
        if not isinstance(content, bytes):
            raise TypeError("image file objects must be opened in binary mode ('rb')")
        name = Path(str(getattr(value, "name", "") or "")).name
        return _Source(content=content, filename=name or f"image{_extension(content)}")
    raise TypeError(f"unsupported image input: {type(value).__name__}")


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _extension(data: bytes) -> str:
    return {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(
        _content_type(data), ".png"
    )
