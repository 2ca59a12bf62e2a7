"""Output formatting shared by plain and streamed responses."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from imagegate.core.errors import UpstreamError, UpstreamFailed
from imagegate.core.types import GeneratedImage, ImageRequest
from imagegate.media.images import conform
from imagegate.providers.base import Capabilities


async def conform_output(
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
                raise _unusable(exc) from exc

        out.append(image)
    return out


def output_bytes(image: GeneratedImage) -> bytes:
    """``image.data`` for a response that stores the image (``response_format: url``).

    An upstream's base64 is decoded only when first needed (see ``image_from_b64``), so
    base64 found invalid here is a 502 like an undecodable image, never a 500.
    """
    try:
        return image.data
    except UpstreamError as exc:
        raise _unusable(exc) from exc


def _unusable(exc: UpstreamError) -> UpstreamFailed:
    return UpstreamFailed(f"The upstream returned an unusable image: {exc.message}")
