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
                raise UpstreamFailed(
                    f"The upstream returned an unusable image: {exc.message}"
                ) from exc

        out.append(image)
    return out
