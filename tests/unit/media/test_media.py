"""media/: sniffing, probing limits, decode guards, encoding, conform and mask conventions."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib

import pytest
from PIL import Image, ImageChops

from imagegate.core.errors import (
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    UpstreamError,
)
from imagegate.core.types import GeneratedImage
from imagegate.media.images import conform, decode, encode, probe_image
from imagegate.media.mask import edit_region, edit_region_from_image_alpha, to_white_means_edit
from imagegate.media.sniff import sniff_format

MB = 1024 * 1024
MAX_BYTES = 20 * MB
MAX_PIXELS = 36_000_000


def noise(size: tuple[int, int] = (64, 48), mode: str = "RGB", seed: int = 1) -> Image.Image:
    channels = len(mode)
    raw = random.Random(seed).randbytes(size[0] * size[1] * channels)
    return Image.frombytes(mode, size, raw)


def save(img: Image.Image, pil_format: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, pil_format, **params)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# -- sniffing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pil_format", "expected"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")]
)
def test_sniff_recognises_supported_formats(pil_format: str, expected: str) -> None:
    assert sniff_format(save(noise(), pil_format)) == expected


@pytest.mark.parametrize(
    "data",
    [
        save(noise(), "GIF"),
        save(noise(), "BMP"),
        b"",
        b"RIFF",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        random.Random(3).randbytes(256),
    ],
)
def test_sniff_rejects_everything_else(data: bytes) -> None:
    assert sniff_format(data) is None


# -- probe_image ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pil_format", "expected"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")]
)
def test_probe_reads_format_and_header_dimensions(pil_format: str, expected: str) -> None:
    data = save(noise((300, 200)), pil_format)
    image = probe_image(
        data, param="image", filename="cat.bin", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    assert (image.format, image.width, image.height) == (expected, 300, 200)
    assert image.data is data
    assert image.filename == "cat.bin"
    assert image.mime_type == f"image/{expected}"


def test_probe_rejects_too_many_bytes() -> None:
    data = save(noise(), "PNG")
    with pytest.raises(PayloadTooLarge) as info:
        probe_image(data, param="mask", max_bytes=len(data) - 1, max_pixels=10**6)
    assert info.value.status == 413
    assert info.value.param == "mask"
    assert "'mask'" in info.value.message
    assert "MB" in info.value.message


def test_probe_limit_message_names_megabytes() -> None:
    with pytest.raises(PayloadTooLarge, match="50 MB"):
        probe_image(b"x" * (50 * MB + 1), param="image", max_bytes=50 * MB, max_pixels=10**6)


@pytest.mark.parametrize("data", [save(noise(), "GIF"), b"not an image at all"])
def test_probe_rejects_unsupported_types(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        probe_image(data, param="image[]", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert info.value.status == 415
    assert info.value.param == "image[]"
    assert "must be a PNG, JPEG or WebP image" in info.value.message


def test_probe_rejects_a_bomb_beyond_pillows_own_limit() -> None:
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 200
    with pytest.raises(PayloadTooLarge) as info:
        probe_image(bomb, param="image", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert info.value.code == "image_too_large"
    assert info.value.param == "image"


def test_pillows_bomb_error_is_mapped_even_above_our_limit() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        probe_image(png_header_only(20000, 20000), param="image", max_bytes=MB, max_pixels=10**12)
    assert info.value.code == "image_too_large"


def test_pillows_bomb_warning_as_error_is_mapped() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(PayloadTooLarge) as info:
            probe_image(
                png_header_only(10000, 10000), param="image", max_bytes=MB, max_pixels=10**12
            )
    assert info.value.code == "image_too_large"


def test_probe_enforces_max_pixels_on_a_real_compressible_image() -> None:
    data = save(Image.new("1", (3000, 3000)), "PNG")
    assert len(data) < 10_000
    with pytest.raises(PayloadTooLarge) as info:
        probe_image(data, param="image", max_bytes=MB, max_pixels=1_000_000)
    assert info.value.code == "image_too_large"
    assert probe_image(data, param="image", max_bytes=MB, max_pixels=9_000_000).width == 3000


def test_probe_rejects_a_cut_header_as_invalid_image() -> None:
    data = save(noise(), "PNG")[:20]
    with pytest.raises(InvalidRequest) as info:
        probe_image(data, param="image", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert info.value.code == "invalid_image"
    assert info.value.status == 400


def test_probe_is_header_only_but_decode_catches_truncated_pixels() -> None:
    data = save(noise((128, 128)), "PNG")
    truncated = data[: len(data) // 2]
    image = probe_image(
        truncated, param="image", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )  # header is intact
    with pytest.raises(InvalidRequest) as info:
        decode(image)
    assert info.value.code == "invalid_image"
    assert info.value.param == "image"


# -- decode ---------------------------------------------------------------------------------


def test_decode_accepts_bytes_and_input_images() -> None:
    original = noise((40, 30))
    data = save(original, "PNG")
    from_bytes = decode(data)
    from_input = decode(
        probe_image(data, param="image", max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    )
    assert from_bytes.size == from_input.size == (40, 30)
    assert ImageChops.difference(from_bytes, original).getbbox() is None


def test_decode_guards_pixels_and_types() -> None:
    with pytest.raises(PayloadTooLarge):
        decode(save(Image.new("L", (100, 100)), "PNG"), max_pixels=9_999)
    with pytest.raises(UnsupportedMediaType) as info:
        decode(save(noise(), "GIF"), param="mask")
    assert info.value.param == "mask"
    with pytest.raises(InvalidRequest):
        decode(b"\xff\xd8\xff" + b"\x00" * 50)


# -- encode ---------------------------------------------------------------------------------


def transparent_square() -> Image.Image:
    img = Image.new("RGBA", (32, 32), (200, 10, 10, 255))
    img.paste((0, 0, 0, 0), (0, 0, 16, 32))
    return img


def test_png_round_trip_is_lossless_and_keeps_alpha() -> None:
    img = transparent_square()
    data = encode(img, "png", compression=10)  # ignored for PNG
    assert sniff_format(data) == "png"
    assert ImageChops.difference(decode(data), img).getbbox() is None


def test_jpeg_flattens_alpha_onto_white() -> None:
    back = decode(encode(transparent_square(), "jpeg"))
    assert back.mode == "RGB"
    r, g, b = back.getpixel((4, 16))  # type: ignore[misc]
    assert min(r, g, b) > 240
    r, g, b = back.getpixel((28, 16))  # type: ignore[misc]
    assert r > 150 and g < 60


@pytest.mark.parametrize("mode", ["L", "P", "LA", "CMYK", "1"])
def test_jpeg_and_webp_accept_any_mode(mode: str) -> None:
    img = noise((16, 16)).convert(mode)
    assert sniff_format(encode(img, "jpeg")) == "jpeg"
    assert sniff_format(encode(img, "webp")) == "webp"
    assert sniff_format(encode(img, "png")) == "png"


def test_jpeg_compression_sets_quality() -> None:
    img = noise((128, 128))
    assert len(encode(img, "jpeg", 20)) < len(encode(img, "jpeg", 95))
    assert len(encode(img, "jpeg", 0)) > 0


def test_webp_keeps_alpha_and_is_lossless_at_100() -> None:
    img = transparent_square()
    lossy = decode(encode(img, "webp"))
    assert lossy.mode == "RGBA"
    assert lossy.getpixel((4, 4))[3] == 0  # type: ignore[index]
    exact = noise((64, 64))
    assert ImageChops.difference(decode(encode(exact, "webp", 100)), exact).getbbox() is None


# -- conform --------------------------------------------------------------------------------


def generated(img: Image.Image, fmt: str) -> GeneratedImage:
    return GeneratedImage(
        data=encode(img, fmt),  # type: ignore[arg-type]
        format=fmt,  # type: ignore[arg-type]
        width=img.width,
        height=img.height,
        revised_prompt="a revised prompt",
    )


def test_conform_is_a_no_op_when_nothing_to_do() -> None:
    png = generated(noise(), "png")
    jpeg = generated(noise(), "jpeg")
    assert conform(png, "png", None) is png
    assert conform(png, "png", 40) is png  # compression does not apply to PNG
    assert conform(jpeg, "jpeg", None) is jpeg


def test_conform_converts_format() -> None:
    png = generated(transparent_square(), "png")
    out = conform(png, "jpeg", None)
    assert out is not png
    assert (out.format, sniff_format(out.data)) == ("jpeg", "jpeg")
    assert (out.width, out.height) == (32, 32)
    assert out.revised_prompt == "a revised prompt"
    assert decode(out.data).mode == "RGB"
    webp = conform(png, "webp", None)
    assert sniff_format(webp.data) == "webp"
    assert decode(webp.data).mode == "RGBA"


def test_conform_applies_requested_compression() -> None:
    jpeg = generated(noise((128, 128)), "jpeg")
    out = conform(jpeg, "jpeg", 10)
    assert out is not jpeg
    assert sniff_format(out.data) == "jpeg"
    assert len(out.data) < len(jpeg.data)


def test_conform_trusts_bytes_not_the_label() -> None:
    mislabelled = GeneratedImage(data=encode(noise(), "jpeg"), format="png", width=64, height=48)
    out = conform(mislabelled, "png", None)
    assert sniff_format(out.data) == "png"


def test_conform_of_undecodable_upstream_bytes_is_a_retryable_upstream_error() -> None:
    broken = GeneratedImage(data=b"<html>oops</html>", format="png", width=1, height=1)
    with pytest.raises(UpstreamError) as info:
        conform(broken, "jpeg", None)
    assert info.value.retryable


# -- masks ----------------------------------------------------------------------------------

HOLE = (8, 4, 24, 20)


def region_values(region: Image.Image) -> set[int]:
    return {v for v, count in enumerate(region.histogram()) if count}


def test_openai_mask_transparent_pixels_mark_the_edit() -> None:
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((255, 255, 255, 0), HOLE)
    region = edit_region(mask, (32, 32))
    assert region.mode == "L"
    assert region.getbbox() == HOLE
    assert region_values(region) == {0, 255}


def test_openai_mask_partial_alpha_is_kept() -> None:
    mask = Image.new("RGBA", (32, 32), (255, 255, 255, 128))
    mask.paste((0, 0, 0, 0), HOLE)
    assert edit_region(mask, (32, 32)).getbbox() == HOLE


def test_mask_without_alpha_uses_white_means_edit() -> None:
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, HOLE)
    assert edit_region(mask, (32, 32)).getbbox() == HOLE
    rgb = Image.new("RGB", (32, 32), (0, 0, 0))
    rgb.paste((250, 250, 250), HOLE)
    assert edit_region(rgb, (32, 32)).getbbox() == HOLE


def test_opaque_rgba_mask_falls_back_to_luminance() -> None:
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((255, 255, 255, 255), HOLE)
    assert edit_region(mask, (32, 32)).getbbox() == HOLE


def test_mask_from_a_palette_png_with_transparency() -> None:
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.paste(1, HOLE)
    mask = decode(save(palette, "PNG", transparency=1))
    assert mask.mode == "P"
    assert edit_region(mask, (32, 32)).getbbox() == HOLE


def test_mask_is_resized_with_nearest() -> None:
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), HOLE)
    region = edit_region(mask, (64, 64))
    assert region.size == (64, 64)
    assert region.getbbox() == tuple(2 * v for v in HOLE)
    assert region_values(region) == {0, 255}


def test_image_alpha_region() -> None:
    assert edit_region_from_image_alpha(noise()) is None
    assert edit_region_from_image_alpha(Image.new("RGBA", (8, 8), (1, 2, 3, 255))) is None
    assert edit_region_from_image_alpha(Image.new("RGBA", (8, 8), (1, 2, 3, 1))) is None
    img = Image.new("RGBA", (32, 32), (10, 20, 30, 255))
    img.paste((0, 0, 0, 0), HOLE)
    region = edit_region_from_image_alpha(img)
    assert region is not None
    assert region.getbbox() == HOLE
    la = edit_region_from_image_alpha(img.convert("LA"))
    assert la is not None and la.getbbox() == HOLE


def test_to_white_means_edit_png() -> None:
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), HOLE)
    data = to_white_means_edit(edit_region(mask, (32, 32)))
    assert sniff_format(data) == "png"
    back = decode(data)
    assert back.mode == "L"
    assert back.getpixel((10, 10)) == 255
    assert back.getpixel((0, 0)) == 0
    # And it reads back through the white-means-edit convention unchanged.
    assert edit_region(back, (32, 32)).getbbox() == HOLE
