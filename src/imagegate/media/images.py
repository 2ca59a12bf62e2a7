"""Probe, decode and encode images, with the size guards the gateway relies on.

Everything the caller sends goes through ``probe_image`` (cheap: header only) before a
request is accepted; full decodes go through ``decode``. Both map whatever Pillow raises
on hostile input to a 4xx ``GatewayError``, so a bad upload can never become a 500.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from imagegate.core.errors import (
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    UpstreamError,
)
from imagegate.core.types import GeneratedImage, InputImage, OutputFormat
from imagegate.media.sniff import sniff_format

# 36 megapixels: a 6000x6000 photo fits, a decompression bomb does not. Pillow's own bomb
# check (about 179 megapixels) is a ceiling above this; it is mapped the same way.
DEFAULT_MAX_PIXELS = 36_000_000
# zlib level 1: several times faster than Pillow's default 6, files only slightly larger.
PNG_COMPRESS_LEVEL = 1
DEFAULT_QUALITY = 90

_PIL_FORMATS: dict[str, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_WHITE = (255, 255, 255)


def probe_image(
    data: bytes,
    *,
    param: str,
    max_bytes: int,
    max_pixels: int,
    filename: str = "image",
) -> InputImage:
    """Check an upload's size, type and header dimensions without decoding its pixels."""
    _check_bytes(len(data), param=param, max_bytes=max_bytes)
    fmt = _sniff_or_raise(data, param)
    with (
        _pillow_guard(param, max_pixels),
        Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img,
    ):
        width, height = img.size
    _check_pixels(width, height, param=param, max_pixels=max_pixels)
    return InputImage(data=data, format=fmt, width=width, height=height, filename=filename)


def probe_head(
    head: bytes, *, size: int, param: str, max_bytes: int, max_pixels: int
) -> tuple[OutputFormat, int, int] | None:
    """``probe_image`` from an image's first bytes and its total ``size`` alone.

    For images held as base64, where decoding only a prefix is much cheaper. Returns
    (format, width, height), or None when ``head`` is too short to tell (a JPEG whose
    metadata runs past it, a PNG with large chunks before its pixels): probe the whole
    image then. Raises as ``probe_image`` does when the head already shows the image is
    unacceptable. Pillow reads PNG and JPEG headers from a prefix; WebP's is parsed here,
    as Pillow's WebP reader wants the whole file.
    """
    _check_bytes(size, param=param, max_bytes=max_bytes)
    fmt = _sniff_or_raise(head, param)
    dims = _webp_size(head) if fmt == "webp" else _pillow_size(head, fmt, param, max_pixels)
    if dims is None:
        return None
    _check_pixels(*dims, param=param, max_pixels=max_pixels)
    return fmt, *dims


def decode(
    image: InputImage | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    param: str = "image",
) -> Image.Image:
    """Fully decode an image, with the same guards as ``probe_image``.

    ``param`` names the request field in error messages (e.g. "mask").
    """
    if isinstance(image, InputImage):
        data, fmt = image.data, image.format
    else:
        data, fmt = image, _sniff_or_raise(image, param)
    with _pillow_guard(param, max_pixels):
        img = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
        _check_pixels(img.width, img.height, param=param, max_pixels=max_pixels)
        img.load()  # inside the guard: truncated pixel data raises here
    return img


def encode(img: Image.Image, fmt: OutputFormat, compression: int | None = None) -> bytes:
    """Encode to ``fmt``; ``compression`` (0-100, higher is better) is JPEG/WebP quality.

    PNG ignores ``compression`` and uses a fast zlib level. JPEG flattens transparency
    onto white. WebP keeps alpha and is lossless only when ``compression`` is 100.
    """
    buf = io.BytesIO()
    quality = DEFAULT_QUALITY if compression is None else max(0, min(100, compression))
    if fmt == "png":
        _png_ready(img).save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        _jpeg_ready(img).save(buf, "JPEG", quality=max(1, quality))
    elif fmt == "webp":
        _webp_ready(img).save(buf, "WEBP", quality=quality, lossless=compression == 100)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buf.getvalue()


def conform(image: GeneratedImage, fmt: OutputFormat, compression: int | None) -> GeneratedImage:
    """Return ``image`` in ``fmt`` (and at ``compression``), re-encoding only if needed.

    This honours ``output_format``/``output_compression`` when the upstream did not. An
    image already in ``fmt`` is returned as the same object unless a JPEG/WebP
    compression was asked for. Bytes that cannot be decoded are the upstream's fault and
    raise a retryable ``UpstreamError``.
    """
    if sniff_format(image.data) == fmt and (fmt == "png" or compression is None):
        return image
    try:
        img = decode(image.data)
    except GatewayError as exc:
        raise UpstreamError(
            f"Upstream returned an image that cannot be decoded: {exc.message}", retryable=True
        ) from exc
    return GeneratedImage(
        data=encode(img, fmt, compression),
        format=fmt,
        width=img.width,
        height=img.height,
        revised_prompt=image.revised_prompt,
    )


def has_alpha(img: Image.Image) -> bool:
    """True when the image carries transparency (an alpha band or a transparent colour)."""
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def _sniff_or_raise(data: bytes, param: str) -> OutputFormat:
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(f"'{param}' must be a PNG, JPEG or WebP image.", param=param)
    return fmt


def _check_bytes(size: int, *, param: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise PayloadTooLarge(
            f"'{param}' is larger than the {max_bytes / 1_048_576:.3g} MB limit.", param=param
        )


def _pillow_size(
    head: bytes, fmt: OutputFormat, param: str, max_pixels: int
) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(head), formats=[_PIL_FORMATS[fmt]]) as img:
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(param, max_pixels) from exc
    except Exception:
        return None  # truncated here, or broken: the whole image will tell
    return width, height


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas size from the first chunk of a WebP (RIFF) file: VP8X (extended), VP8L
    (lossless) or VP8 (lossy) headers, as libwebp's ``WebPGetInfo`` reads them."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
        return (width, height) if width and height else None
    return None


def _check_pixels(width: int, height: int, *, param: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise _too_many_pixels(param, max_pixels)


def _too_many_pixels(param: str, max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"'{param}' has more than {max_pixels:,} pixels.", code="image_too_large", param=param
    )


@contextmanager
def _pillow_guard(param: str, max_pixels: int) -> Iterator[None]:
    """Map Pillow's errors on hostile or broken input to caller-facing 4xx errors."""
    try:
        yield
    except GatewayError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is an exception only when warnings are errors; either way it is a bomb.
        raise _too_many_pixels(param, max_pixels) from exc
    except Exception as exc:
        # Pillow's decoders raise a zoo of types on corrupt data (OSError, SyntaxError,
        # ValueError, EOFError, struct.error, ...); all mean "not a valid image".
        raise InvalidRequest(
            f"'{param}' is not a valid image or is truncated.", param=param, code="invalid_image"
        ) from exc


def _png_ready(img: Image.Image) -> Image.Image:
    if img.mode in _PNG_MODES:
        return img
    return img.convert("RGBA" if has_alpha(img) else "RGB")


def _jpeg_ready(img: Image.Image) -> Image.Image:
    if has_alpha(img):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img if img.mode == "RGB" else img.convert("RGB")


def _webp_ready(img: Image.Image) -> Image.Image:
    mode = "RGBA" if has_alpha(img) else "RGB"
    return img if img.mode == mode else img.convert(mode)
