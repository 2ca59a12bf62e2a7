"""Resolve the caller's image inputs (uploads, URLs, data URLs, base64, file ids).

Whatever the source, every input ends as a probed ``InputImage``: type sniffed from the
bytes, dimensions read from the header, size and pixel count capped.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from imagegate.api.body import FilePart
from imagegate.core.errors import InvalidRequest, NotFound
from imagegate.core.types import OUTPUT_FORMATS, InputImage
from imagegate.media.images import probe_image
from imagegate.storage import ownership
from imagegate.storage.base import ImageStore
from imagegate.upstream.fetch import SafeFetcher

MAX_INPUT_IMAGES = 16


@dataclass(slots=True)
class InputLimits:
    max_bytes: int
    max_pixels: int


class InputResolver:
    """Loads image inputs under one set of limits."""

    def __init__(self, fetcher: SafeFetcher, store: ImageStore, limits: InputLimits) -> None:
        self.fetcher = fetcher
        self.store = store
        self.limits = limits

    def probe(self, data: bytes, param: str, filename: str = "image") -> InputImage:
        return probe_image(
            data,
            param=param,
            max_bytes=self.limits.max_bytes,
            max_pixels=self.limits.max_pixels,
            filename=filename,
        )

    async def from_value(self, value: Any, param: str) -> InputImage:
        """One JSON or text-field value: a string, or ``{image_url}`` / ``{file_id}``."""
        if isinstance(value, dict):
            if isinstance(value.get("image_url"), str):
                return await self.from_string(value["image_url"], param)
            if isinstance(value.get("file_id"), str):
                return await self.from_file_id(value["file_id"], param)
            raise InvalidRequest(
                f"Each entry of '{param}' needs an 'image_url' or a 'file_id'.",
                param=param,
                code="invalid_image",
            )
        if isinstance(value, str):
            return await self.from_string(value, param)
        raise InvalidRequest(
            f"'{param}' must be an image URL, a data URL or base64 data.",
            param=param,
            code="invalid_type",
        )

    async def from_string(self, text: str, param: str) -> InputImage:
        text = text.strip()
        lowered = text[:8].lower()
        if lowered.startswith(("http://", "https://")):
            return self.probe(await self.fetcher.fetch(text, param=param), param, "image")
        if lowered.startswith("data:"):
            header, sep, payload = text.partition(",")
            if not sep or ";base64" not in header.lower():
                raise InvalidRequest(
                    f"'{param}' data URL must be base64-encoded (data:image/png;base64,...).",
                    param=param,
                    code="invalid_image",
                )
            return self.probe(_b64decode(payload, param), param)
        if len(text) < 16:
            raise InvalidRequest(
                f"'{param}' is not an image URL, a data URL or base64 image data.",
                param=param,
                code="invalid_image",
            )
        return self.probe(_b64decode(text, param), param)

    async def from_file_id(self, file_id: str, param: str) -> InputImage:
        """A stored file by its id, with or without the format extension the store keeps.
        Only the key that stored it (or an admin key) may use it; any other sees the same
        404 as for an id that does not exist."""
        stored = None
        if ownership.may_read(file_id):
            stored = await self.store.get(file_id)
            if stored is None and "." not in file_id:
                for fmt in OUTPUT_FORMATS:
                    stored = await self.store.get(f"{file_id}.{fmt}")
                    if stored is not None:
                        break
        if stored is None:
            raise NotFound(f"No file with id '{file_id}'.", param=param, code="file_not_found")
        return self.probe(stored.data, param, file_id)

    async def many(self, values: list[Any], param: str) -> list[InputImage]:
        if len(values) > MAX_INPUT_IMAGES:
            raise InvalidRequest(
                f"At most {MAX_INPUT_IMAGES} images may be sent; got {len(values)}.",
                param=param,
                code="too_many_images",
            )
        return [await self.from_value(v, param) for v in values]


def _b64decode(payload: str, param: str) -> bytes:
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"'{param}' is not an image URL, a data URL or valid base64 image data.",
            param=param,
            code="invalid_image",
        ) from None


async def json_inputs(
    resolver: InputResolver, raw: dict[str, Any]
) -> tuple[list[InputImage], InputImage | None]:
    """Images from a JSON edit: OpenAI's ``images`` list, or ``image`` (string or list)."""
    images: list[InputImage] = []
    if raw.get("images") is not None:
        values = raw["images"]
        images = await resolver.many(values if isinstance(values, list) else [values], "images")
    if raw.get("image") is not None:
        values = raw["image"]
        images += await resolver.many(values if isinstance(values, list) else [values], "image")
    mask = await resolver.from_value(raw["mask"], "mask") if raw.get("mask") is not None else None
    return images, mask


async def multipart_inputs(
    resolver: InputResolver, files: list[FilePart], folded: dict[str, Any]
) -> tuple[list[InputImage], InputImage | None]:
    """Images from a multipart body: file parts first, then text fields holding sources."""
    images: list[InputImage] = []
    mask: InputImage | None = None
    for part in files:
        base = part.name.split("[", 1)[0]
        if base == "image":
            if len(images) >= MAX_INPUT_IMAGES:
                raise InvalidRequest(
                    f"At most {MAX_INPUT_IMAGES} images may be sent.",
                    param="image",
                    code="too_many_images",
                )
            images.append(resolver.probe(part.data, "image", part.filename))
        elif base == "mask":
            mask = resolver.probe(part.data, "mask", part.filename)
        else:
            raise InvalidRequest(
                f"Unexpected file field '{part.name}'; only 'image', 'image[]' and 'mask' take "
                "files.",
                param=base,
                code="unknown_parameter",
            )
    text_images = folded.get("image")
    if text_images is not None:
        values = text_images if isinstance(text_images, list) else [text_images]
        images += await resolver.many(values, "image")
    if mask is None and isinstance(folded.get("mask"), str):
        mask = await resolver.from_string(folded["mask"], "mask")
    return images, mask
