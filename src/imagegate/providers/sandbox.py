"""``imagegate/sandbox``: the built-in offline engine.

A real engine, not a mock: integration tests, demos and load tests run the whole gateway
against it with no network and no keys. Its outputs are deterministic for a given
``(prompt, size, seed)`` (image ``i`` of ``n`` uses ``seed + i``; no seed means 0):

* generate renders a labelled placeholder (seeded gradient, shapes, and a card reading
  "imagegate sandbox", the prompt and the seed);
* edit paints that render inside the edit region only; pixels outside are kept exactly;
* variation applies a seeded crop, mirror, hue shift and tint to the input image.

With ``stream: true`` it sends ``partial_images`` progressive renders of each final image
(pixelated and blurred, sharper each time; ``media/preview.py``) before the result.

Rendering is CPU work, so it runs in a worker thread; generate renders are cached because
load tests repeat the same prompt.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import random
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import ClassVar

import anyio.to_thread
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from imagegate.core.errors import InvalidRequest
from imagegate.core.types import (
    GeneratedImage,
    ImageRequest,
    ImageResult,
    OutputFormat,
    PartialImage,
    StreamEvent,
)
from imagegate.media.images import decode, encode, has_alpha
from imagegate.media.mask import edit_region, edit_region_from_image_alpha
from imagegate.media.preview import preview
from imagegate.providers.base import Capabilities, Provider

_TITLE = "imagegate sandbox"
_MAX_PROMPT_CHARS = 160
_MAX_PROMPT_LINES = 4
_CARD_COLOUR = (16, 18, 28, 215)

_Rendered = tuple[list[GeneratedImage], bool]  # images, and whether they are transparent
_CacheKey = tuple[str, int, int, int, bool, str, int | None]
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


class SandboxProvider(Provider):
    """The offline engine behind ``imagegate/sandbox``; needs no credentials."""

    type_name: ClassVar[str] = "sandbox"
    requires_credentials: ClassVar[bool] = False
    # Everything the gateway offers (the defaults), compression included.
    capabilities: ClassVar[Capabilities] = Capabilities(native_compression=True)

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        rendered = await anyio.to_thread.run_sync(_generate, request)
        return _result(request, upstream_model, rendered)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        rendered = await anyio.to_thread.run_sync(_edit, request)
        return _result(request, upstream_model, rendered)

    async def variation(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        rendered = await anyio.to_thread.run_sync(_variation, request)
        return _result(request, upstream_model, rendered)

    async def stream(
        self, request: ImageRequest, upstream_model: str
    ) -> AsyncIterator[StreamEvent]:
        """``partial_images`` progressive renders of each final image (pixelated, then
        sharper), then the result itself; as deterministic as the final render."""
        result = await self.run(request, upstream_model)
        steps = request.partial_images or 0
        for index, image in enumerate(result.images):
            for step in range(steps):
                partial = await anyio.to_thread.run_sync(
                    preview, image, step, steps, request.output_compression
                )
                yield PartialImage(index, step, partial)
        yield result


def _result(request: ImageRequest, upstream_model: str, rendered: _Rendered) -> ImageResult:
    images, transparent = rendered
    return ImageResult(
        images=images,
        upstream_model=upstream_model,
        quality=request.quality,
        background="transparent" if transparent else "opaque",
    )


# -- operations (run in a worker thread) ---------------------------------------------------


def _generate(request: ImageRequest) -> _Rendered:
    fmt = _format(request)
    transparent = _wants_transparency(request, fmt)
    size = (request.width, request.height)
    prompt = request.prompt or ""
    # PNG ignores compression, so it must not split the cache.
    compression = None if fmt == "png" else request.output_compression
    images = []
    for seed in _seeds(request):
        key: _CacheKey = (prompt, *size, seed, transparent, fmt, compression)
        data = _CACHE.get(key)
        if data is None:
            data = encode(_render(prompt, size, seed, transparent=transparent), fmt, compression)
            _CACHE.put(key, data)
        images.append(GeneratedImage(data=data, format=fmt, width=size[0], height=size[1]))
    return images, transparent


def _edit(request: ImageRequest) -> _Rendered:
    fmt = _format(request)
    source, size = _source(request, "An edit needs an 'image'.")
    base = source.convert("RGBA")
    if base.size != size:
        base = base.resize(size, Image.Resampling.LANCZOS)
    if request.mask is not None:
        region = edit_region(decode(request.mask, param="mask"), size)
    else:
        region = _own_alpha_region(source, size)
    thumbs = [_thumbnail(decode(img, param="image")) for img in request.images[1:]]
    render_transparent = _wants_transparency(request, fmt)
    keep_alpha = has_alpha(source) or render_transparent
    outputs = []
    for seed in _seeds(request):
        edited = _paint_region(
            base, region, request.prompt or "", seed, thumbs, transparent=render_transparent
        )
        outputs.append(edited if keep_alpha else edited.convert("RGB"))
    return _encode_all(outputs, fmt, request.output_compression)


def _variation(request: ImageRequest) -> _Rendered:
    fmt = _format(request)
    source, size = _source(request, "A variation needs an 'image'.")
    digest = hashlib.sha256(request.images[0].data).hexdigest()
    keep_alpha = has_alpha(source)
    outputs = []
    for seed in _seeds(request):
        varied = _vary(source, size, _rng("variation", digest, seed))
        outputs.append(varied if keep_alpha else varied.convert("RGB"))
    return _encode_all(outputs, fmt, request.output_compression)


def _format(request: ImageRequest) -> OutputFormat:
    return request.output_format or "png"


def _wants_transparency(request: ImageRequest, fmt: OutputFormat) -> bool:
    # JPEG cannot carry alpha; validation refuses that pairing, but never crash on it.
    return request.background == "transparent" and fmt != "jpeg"


def _seeds(request: ImageRequest) -> range:
    first = request.seed if request.seed is not None else 0
    return range(first, first + request.n)


def _source(request: ImageRequest, missing: str) -> tuple[Image.Image, tuple[int, int]]:
    """The first input image, decoded, and the output size: the input's for ``auto``."""
    if not request.images:
        raise InvalidRequest(missing, param="image")
    source = decode(request.images[0], param="image")
    return source, source.size if request.size == "auto" else (request.width, request.height)


def _encode_all(
    outputs: list[Image.Image], fmt: OutputFormat, compression: int | None
) -> _Rendered:
    images = [
        GeneratedImage(
            data=encode(img, fmt, compression), format=fmt, width=img.width, height=img.height
        )
        for img in outputs
    ]
    transparent = fmt != "jpeg" and any(_has_transparent_pixel(img) for img in outputs)
    return images, transparent


def _has_transparent_pixel(img: Image.Image) -> bool:
    return img.mode == "RGBA" and img.getchannel("A").histogram()[255] < img.width * img.height


# -- edit and variation --------------------------------------------------------------------


def _own_alpha_region(source: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The image's transparent pixels, or the whole image when it has none."""
    region = edit_region_from_image_alpha(source)
    if region is None:
        return Image.new("L", size, 255)
    if region.size != size:
        region = region.resize(size, Image.Resampling.NEAREST)
    return region


def _paint_region(
    base: Image.Image,
    region: Image.Image,
    prompt: str,
    seed: int,
    thumbs: list[Image.Image],
    *,
    transparent: bool,
) -> Image.Image:
    """Paint a render over the region's bounding box; pixels outside stay exactly as is."""
    bbox = region.getbbox()
    if bbox is None:
        return base.copy()
    left, top, right, bottom = bbox
    render = _render(prompt, (right - left, bottom - top), seed, transparent=transparent)
    render = render.convert("RGBA")
    _paste_thumbnails(render, thumbs)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(render, (left, top))
    return Image.composite(layer, base, region)


def _thumbnail(img: Image.Image, side: int = 256) -> Image.Image:
    thumb = img.convert("RGBA")
    thumb.thumbnail((side, side))
    return thumb


def _paste_thumbnails(render: Image.Image, thumbs: list[Image.Image]) -> None:
    """Lay further input images out as a grid of small thumbnails from the top left."""
    if not thumbs:
        return
    side = max(8, min(render.size) // 6)
    pad = max(2, side // 8)
    cols = max(1, (render.width - pad) // (side + pad))
    for index, thumb in enumerate(thumbs):
        small = thumb.copy()
        small.thumbnail((side, side))
        row, col = divmod(index, cols)
        xy = (pad + col * (side + pad), pad + row * (side + pad))
        render.paste(small, xy, small)


def _vary(source: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A seeded crop-and-zoom, mirror, hue rotation, contrast change and tint."""
    rgba = source.convert("RGBA")
    width, height = rgba.size
    keep = 1 - rng.uniform(0.04, 0.15)
    crop_w, crop_h = max(1, round(width * keep)), max(1, round(height * keep))
    x0, y0 = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    img = rgba.resize(size, Image.Resampling.BICUBIC, box=(x0, y0, x0 + crop_w, y0 + crop_h))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    alpha = img.getchannel("A")
    shift = rng.randint(24, 232)
    hue, sat, val = img.convert("RGB").convert("HSV").split()
    hue = hue.point([(v + shift) % 256 for v in range(256)])
    rgb = Image.merge("HSV", (hue, sat, val)).convert("RGB")
    rgb = ImageEnhance.Contrast(rgb).enhance(rng.uniform(0.85, 1.2))
    # The tint guarantees a visible change even for grey or flat images.
    rgb = Image.blend(rgb, Image.new("RGB", size, _colour(rng)), rng.uniform(0.12, 0.25))
    rgb.putalpha(alpha)
    return rgb


# -- the placeholder render ----------------------------------------------------------------


def _render(prompt: str, size: tuple[int, int], seed: int, *, transparent: bool) -> Image.Image:
    """The labelled placeholder: RGB, or RGBA on a fully transparent background."""
    rng = _rng("render", prompt, size, seed)
    first, second = _colour(rng), _colour(rng)  # drawn either way: same shapes as opaque
    if transparent:
        img = Image.new("RGBA", size, (0, 0, 0, 0))
    else:
        img = ImageOps.colorize(_gradient(size, rng.uniform(0, 2 * math.pi)), first, second)
    draw = ImageDraw.Draw(img, "RGBA")
    _draw_shapes(draw, size, rng)
    _draw_label(draw, size, prompt, seed)
    return img


def _gradient(size: tuple[int, int], angle: float) -> Image.Image:
    """A linear 0-255 ramp along ``angle``: a tiny grid upscaled bilinearly (fast)."""
    grid = 8
    dx, dy = math.cos(angle), math.sin(angle)
    reach = 0.5 * (abs(dx) + abs(dy))
    values = []
    for y in range(grid):
        for x in range(grid):
            along = (x / (grid - 1) - 0.5) * dx + (y / (grid - 1) - 0.5) * dy
            values.append(round(255 * (along + reach) / (2 * reach)))
    small = Image.new("L", (grid, grid))
    small.putdata(values)
    return small.resize(size, Image.Resampling.BILINEAR)


def _draw_shapes(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: random.Random) -> None:
    width, height = size
    for _ in range(rng.randint(3, 6)):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.06, 0.22) * width, rng.uniform(0.06, 0.22) * height
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        fill = (*_colour(rng), 255)
        kind = rng.choice(("ellipse", "rectangle", "triangle"))
        if kind == "ellipse":
            draw.ellipse(box, fill=fill)
        elif kind == "rectangle":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)], fill=fill)


def _draw_label(draw: ImageDraw.ImageDraw, size: tuple[int, int], prompt: str, seed: int) -> None:
    """A centred card with the title, the wrapped prompt and the seed."""
    width, height = size
    unit = max(9, min(width, height) // 20)
    title_size = round(unit * 1.35)
    title_font = ImageFont.load_default(size=title_size)
    body_font = ImageFont.load_default(size=unit)
    title_h, body_h = round(title_size * 1.25), round(unit * 1.25)
    pad = max(4, unit // 2)
    max_text = max(1, width - 4 * pad)
    lines: list[tuple[str, _Font, tuple[int, int, int], int]] = []
    lines += [
        (t, title_font, (255, 255, 255), title_h) for t in _wrap(_TITLE, title_font, max_text)
    ]
    lines += [
        (t, body_font, (214, 218, 230), body_h) for t in _prompt_lines(prompt, body_font, max_text)
    ]
    footer = _wrap(f"seed {seed} {width}x{height}", body_font, max_text)
    lines += [(t, body_font, (150, 200, 255), body_h) for t in footer]
    text_w = max(font.getlength(text) for text, font, _, _ in lines)
    card_w, card_h = text_w + 2 * pad, sum(line[3] for line in lines) + 2 * pad
    x0, y0 = (width - card_w) / 2, (height - card_h) / 2
    draw.rounded_rectangle((x0, y0, x0 + card_w, y0 + card_h), radius=pad, fill=_CARD_COLOUR)
    y = y0 + pad
    for text, font, colour, line_h in lines:
        draw.text((x0 + pad, y), text, font=font, fill=colour)
        y += line_h


def _prompt_lines(prompt: str, font: _Font, max_width: float) -> list[str]:
    text = " ".join(_printable(prompt).split())
    if len(text) > _MAX_PROMPT_CHARS:
        text = text[: _MAX_PROMPT_CHARS - 3].rstrip() + "..."
    lines = _wrap(text, font, max_width)
    if len(lines) > _MAX_PROMPT_LINES:
        lines = [*lines[: _MAX_PROMPT_LINES - 1], lines[_MAX_PROMPT_LINES - 1] + " ..."]
    return lines


def _printable(text: str) -> str:
    """The embedded font covers ASCII only: fold accents away, replace the rest with "?"."""
    folded = unicodedata.normalize("NFKD", text)
    return "".join(
        c if c.isascii() and (c.isprintable() or c.isspace()) else "?"
        for c in folded
        if not unicodedata.combining(c)
    )


def _wrap(text: str, font: _Font, max_width: float) -> list[str]:
    """Greedy word wrap; a word wider than a line stands alone (and is clipped)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= max_width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _colour(rng: random.Random) -> tuple[int, int, int]:
    """A seeded, reasonably saturated colour."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.95))
    return round(r * 255), round(g * 255), round(b * 255)


def _rng(*parts: object) -> random.Random:
    """A generator seeded from a stable digest (``hash()`` is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


# -- render cache --------------------------------------------------------------------------


class _RenderCache:
    """A thread-safe LRU of encoded generate renders, bounded by entries and bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._entries: OrderedDict[_CacheKey, bytes] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: _CacheKey) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: _CacheKey, data: bytes) -> None:
        if len(data) > self._max_bytes // 4:
            return  # one huge render must not evict everything else
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = data
            self._bytes += len(data)
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)


_CACHE = _RenderCache(max_entries=64, max_bytes=256 * 1024 * 1024)
