"""Coarse previews of a finished image, for engines that stream partial images without
intermediate states of their own (the sandbox): the image at increasing detail."""

from __future__ import annotations

from PIL import Image, ImageFilter

from imagegate.core.types import GeneratedImage
from imagegate.media.images import decode, encode


def preview(
    image: GeneratedImage, step: int, steps: int, compression: int | None
) -> GeneratedImage:
    """Preview ``step`` (0-based) of ``steps``: pixelated and blurred, sharper each step.

    Step ``k`` keeps ``1/2**(steps - k + 1)`` of each side's detail (for three steps: 1/16,
    1/8, 1/4), so even the last preview is visibly unfinished. Same size and format as
    ``image``; deterministic.
    """
    if not 0 <= step < steps:
        raise ValueError(f"step {step} is outside 0..{steps - 1}")
    img = decode(image.data, param="upstream")
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    factor = 2 ** (steps - step + 1)
    small = img.resize(
        (max(1, img.width // factor), max(1, img.height // factor)), Image.Resampling.BOX
    )
    # Blur while small (cheap), then let the bilinear upscale soften the blocks.
    small = small.filter(ImageFilter.GaussianBlur(radius=0.75))
    coarse = small.resize(img.size, Image.Resampling.BILINEAR)
    data = encode(coarse, image.format, compression)
    return GeneratedImage(data=data, format=image.format, width=img.width, height=img.height)
