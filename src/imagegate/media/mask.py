"""Edit-region conventions: turn masks into one canonical region and back.

The gateway's canonical region is an "L" image where 255 means "edit here" and 0 means
"keep". Callers speak two dialects and both are accepted:

* OpenAI: a PNG whose fully transparent pixels (alpha == 0) mark the edit region.
* Stability/BFL: an opaque black-and-white image where white marks the edit region.

A mask that has no transparency at all (no alpha band, or an alpha band that is opaque
everywhere, as many tools export) is read by luminance: white (>= 128) means edit.
"""

from __future__ import annotations

from PIL import Image

from imagegate.media.images import encode, has_alpha

_EDIT = 255
# Lookup tables for Image.point on "L" images.
_TRANSPARENT_IS_EDIT = [_EDIT] + [0] * 255
_WHITE_IS_EDIT = [0] * 128 + [_EDIT] * 128


def edit_region(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The canonical region ("L", 255 = edit) of a mask, resized (NEAREST) to ``size``."""
    alpha = _alpha(mask)
    # An alpha band that is opaque everywhere says nothing: fall back to luminance.
    if alpha is not None and alpha.histogram()[255] < alpha.width * alpha.height:
        region = alpha.point(_TRANSPARENT_IS_EDIT)
    else:
        region = mask.convert("L").point(_WHITE_IS_EDIT)
    if region.size != size:
        region = region.resize(size, Image.Resampling.NEAREST)
    return region


def edit_region_from_image_alpha(img: Image.Image) -> Image.Image | None:
    """The region marked by an image's own fully transparent pixels, if it has any.

    OpenAI's rule: an edit without a mask changes where the image itself is transparent.
    Returns None when the image has no alpha or no fully transparent pixel.
    """
    alpha = _alpha(img)
    if alpha is None or alpha.histogram()[0] == 0:
        return None
    return alpha.point(_TRANSPARENT_IS_EDIT)


def to_white_means_edit(region: Image.Image) -> bytes:
    """Encode a canonical region as a PNG for providers that want white = edit."""
    return encode(region if region.mode == "L" else region.convert("L"), "png")


def _alpha(img: Image.Image) -> Image.Image | None:
    if not has_alpha(img):
        return None
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    return rgba.getchannel("A")
