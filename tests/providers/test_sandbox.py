"""The built-in sandbox engine, driven through the Provider interface with real images."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops

from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest, InputImage, Operation
from imagegate.media.images import decode, probe_image
from imagegate.media.sniff import sniff_format
from imagegate.providers.base import ProviderContext
from imagegate.providers.sandbox import SandboxProvider
from request_support import image_request

UPSTREAM = "sandbox-v1"
HOLE = (64, 80, 160, 200)


async def no_fetch(url: str) -> bytes:
    raise AssertionError(f"the sandbox must never fetch URLs (asked for {url})")


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxProvider]:
    async with httpx.AsyncClient() as http:
        config = ProviderConfig(id="sandbox", type="sandbox")
        yield SandboxProvider(config, ProviderContext(http=http, fetch_url=no_fetch))


def request(
    operation: Operation = "generate", size: str = "1024x1024", **fields: Any
) -> ImageRequest:
    width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
    fields.setdefault("prompt", None if operation == "variation" else "a red fox in the snow")
    return image_request(
        operation=operation,
        model="imagegate/sandbox",
        size=size,
        width=width,
        height=height,
        **fields,
    )


def upload(img: Image.Image, pil_format: str = "PNG") -> InputImage:
    buf = io.BytesIO()
    img.save(buf, pil_format)
    return probe_image(buf.getvalue(), param="image", max_bytes=50 << 20, max_pixels=10**8)


def noise(size: tuple[int, int] = (256, 256), mode: str = "RGB", seed: int = 7) -> Image.Image:
    raw = random.Random(seed).randbytes(size[0] * size[1] * len(mode))
    return Image.frombytes(mode, size, raw)


def outside_identical(a: Image.Image, b: Image.Image, hole: tuple[int, int, int, int]) -> bool:
    diff = ImageChops.difference(a, b)
    diff.paste(0, hole)
    return diff.getbbox() is None


def inside_changed(a: Image.Image, b: Image.Image, hole: tuple[int, int, int, int]) -> bool:
    return ImageChops.difference(a, b).crop(hole).getbbox() is not None


# -- provider surface ----------------------------------------------------------------------


async def test_needs_no_credentials_and_supports_everything(sandbox: SandboxProvider) -> None:
    assert sandbox.type_name == "sandbox"
    assert sandbox.available
    caps = sandbox.capabilities
    assert caps.operations == {"generate", "edit", "variation"}
    assert caps.output_formats == {"png", "jpeg", "webp"}
    assert (caps.max_input_images, caps.max_n_per_call) == (16, 10)
    assert caps.supports_mask and caps.transparent_background and caps.supports_seed


async def test_result_metadata(sandbox: SandboxProvider) -> None:
    result = await sandbox.run(request(size="256x256", quality="high"), UPSTREAM)
    assert result.upstream_model == UPSTREAM
    assert result.quality == "high"
    assert result.background == "opaque"
    assert result.usage is None
    assert result.images[0].revised_prompt is None


# -- generate ------------------------------------------------------------------------------


async def test_generate_is_deterministic(sandbox: SandboxProvider) -> None:
    first = await sandbox.run(request(size="512x512", seed=42), UPSTREAM)
    second = await sandbox.run(request(size="512x512", seed=42), UPSTREAM)
    assert first.images[0].data == second.images[0].data


async def test_generate_is_deterministic_across_processes(sandbox: SandboxProvider) -> None:
    """Same bytes in a fresh interpreter with another hash seed: no use of ``hash()``."""
    here = await sandbox.run(request(size="128x96", seed=3, prompt="across"), UPSTREAM)
    script = (
        "import hashlib, imagegate.providers.sandbox as s\n"
        "from imagegate.media.images import encode\n"
        "img = s._render('across', (128, 96), 3, transparent=False)\n"
        "print(hashlib.sha256(encode(img, 'png')).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == hashlib.sha256(here.images[0].data).hexdigest()


async def test_seed_changes_output_and_defaults_to_zero(sandbox: SandboxProvider) -> None:
    seeded = [
        (await sandbox.run(request(size="256x256", seed=seed), UPSTREAM)).images[0].data
        for seed in (None, 0, 1)
    ]
    assert seeded[0] == seeded[1]
    assert seeded[1] != seeded[2]


async def test_prompt_changes_output(sandbox: SandboxProvider) -> None:
    a = await sandbox.run(request(size="256x256", prompt="a cat"), UPSTREAM)
    b = await sandbox.run(request(size="256x256", prompt="a dog"), UPSTREAM)
    assert a.images[0].data != b.images[0].data


async def test_n_images_differ_and_image_i_uses_seed_plus_i(sandbox: SandboxProvider) -> None:
    batch = await sandbox.run(request(size="256x256", n=4, seed=10), UPSTREAM)
    assert len(batch.images) == 4
    assert len({image.data for image in batch.images}) == 4
    single = await sandbox.run(request(size="256x256", seed=12), UPSTREAM)
    assert batch.images[2].data == single.images[0].data


@pytest.mark.parametrize("size", ["64x4096", "4096x64", "1536x1024", "64x64", "333x777"])
async def test_generate_honours_size(sandbox: SandboxProvider, size: str) -> None:
    result = await sandbox.run(request(size=size), UPSTREAM)
    image = result.images[0]
    expected = tuple(map(int, size.split("x")))
    assert (image.width, image.height) == expected
    assert decode(image.data).size == expected


@pytest.mark.parametrize(
    ("output_format", "expected"),
    [(None, "png"), ("png", "png"), ("jpeg", "jpeg"), ("webp", "webp")],
)
async def test_generate_honours_output_format(
    sandbox: SandboxProvider, output_format: str | None, expected: str
) -> None:
    result = await sandbox.run(request(size="256x256", output_format=output_format), UPSTREAM)
    assert result.images[0].format == expected
    assert sniff_format(result.images[0].data) == expected


async def test_generate_output_compression_changes_jpeg(sandbox: SandboxProvider) -> None:
    low = await sandbox.run(request(output_format="jpeg", output_compression=10), UPSTREAM)
    high = await sandbox.run(request(output_format="jpeg", output_compression=95), UPSTREAM)
    assert len(low.images[0].data) < len(high.images[0].data)


@pytest.mark.parametrize("output_format", ["png", "webp"])
async def test_transparent_background(sandbox: SandboxProvider, output_format: str) -> None:
    result = await sandbox.run(
        request(size="256x256", background="transparent", output_format=output_format), UPSTREAM
    )
    assert result.background == "transparent"
    img = decode(result.images[0].data)
    assert img.mode == "RGBA"
    alpha = img.getchannel("A").histogram()
    assert alpha[0] > 0  # transparent background pixels
    assert alpha[255] > 0  # and an opaque drawing on top


async def test_transparent_background_with_jpeg_does_not_crash(sandbox: SandboxProvider) -> None:
    result = await sandbox.run(
        request(size="256x256", background="transparent", output_format="jpeg"), UPSTREAM
    )
    assert result.background == "opaque"
    assert sniff_format(result.images[0].data) == "jpeg"


async def test_opaque_generate_has_no_alpha(sandbox: SandboxProvider) -> None:
    result = await sandbox.run(request(size="256x256", background="opaque"), UPSTREAM)
    assert decode(result.images[0].data).mode == "RGB"


async def test_odd_prompts_never_crash(sandbox: SandboxProvider) -> None:
    prompts = ["", "x" * 5000, "東京の夜景 🌃 café\x00\n\ttabs", "word " * 400]
    results = await asyncio.gather(
        *(sandbox.run(request(size="64x64", prompt=p), UPSTREAM) for p in prompts)
    )
    assert all(sniff_format(r.images[0].data) == "png" for r in results)


# -- edit ----------------------------------------------------------------------------------


def openai_mask(
    size: tuple[int, int] = (256, 256), hole: tuple[int, int, int, int] = HOLE
) -> InputImage:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), hole)
    return upload(mask)


async def test_edit_changes_only_masked_pixels(sandbox: SandboxProvider) -> None:
    source = noise()
    result = await sandbox.run(
        request("edit", size="auto", images=[upload(source)], mask=openai_mask()), UPSTREAM
    )
    out = decode(result.images[0].data)
    assert out.size == (256, 256)
    assert out.mode == "RGB"
    assert outside_identical(out, source, HOLE)
    assert inside_changed(out, source, HOLE)
    assert result.background == "opaque"


async def test_edit_with_white_means_edit_mask(sandbox: SandboxProvider) -> None:
    source = noise()
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, HOLE)
    result = await sandbox.run(
        request("edit", size="auto", images=[upload(source)], mask=upload(mask)), UPSTREAM
    )
    out = decode(result.images[0].data)
    assert outside_identical(out, source, HOLE)
    assert inside_changed(out, source, HOLE)


async def test_edit_without_mask_edits_the_transparent_hole(sandbox: SandboxProvider) -> None:
    source = noise(mode="RGBA")
    source.putalpha(255)
    source.paste((0, 0, 0, 0), HOLE)
    result = await sandbox.run(request("edit", size="auto", images=[upload(source)]), UPSTREAM)
    out = decode(result.images[0].data)
    assert out.mode == "RGBA"
    assert outside_identical(out, source, HOLE)  # alpha included
    assert inside_changed(out, source, HOLE)


async def test_edit_keeps_partial_alpha_outside_the_region(sandbox: SandboxProvider) -> None:
    source = noise(mode="RGBA")  # random alpha everywhere, some pixels fully transparent
    result = await sandbox.run(
        request("edit", size="auto", images=[upload(source)], mask=openai_mask()), UPSTREAM
    )
    out = decode(result.images[0].data)
    assert outside_identical(out, source, HOLE)
    assert result.background == "transparent"


async def test_edit_without_mask_or_alpha_edits_everything(sandbox: SandboxProvider) -> None:
    source = noise((128, 128))
    result = await sandbox.run(request("edit", size="auto", images=[upload(source)]), UPSTREAM)
    out = decode(result.images[0].data)
    diff = ImageChops.difference(out, source).convert("L")
    assert diff.histogram()[0] < 128 * 128 // 10  # nearly every pixel changed


async def test_edit_with_a_keep_everything_mask_is_identity(sandbox: SandboxProvider) -> None:
    source = noise((64, 64))
    keep_all = upload(Image.new("RGBA", (64, 64), (0, 0, 0, 255)))
    result = await sandbox.run(
        request("edit", size="auto", images=[upload(source)], mask=keep_all), UPSTREAM
    )
    assert ImageChops.difference(decode(result.images[0].data), source).getbbox() is None


async def test_edit_is_deterministic_and_n_differ(sandbox: SandboxProvider) -> None:
    images = [upload(noise())]
    a = await sandbox.run(request("edit", size="auto", images=images, n=2, seed=5), UPSTREAM)
    b = await sandbox.run(request("edit", size="auto", images=images, n=2, seed=5), UPSTREAM)
    assert [i.data for i in a.images] == [i.data for i in b.images]
    assert a.images[0].data != a.images[1].data


async def test_edit_honours_requested_size_and_format(sandbox: SandboxProvider) -> None:
    source = upload(noise((300, 200)), "JPEG")
    mask = openai_mask((150, 100), (10, 10, 50, 50))  # a smaller mask is scaled to fit
    result = await sandbox.run(
        request("edit", size="512x384", images=[source], mask=mask, output_format="webp"),
        UPSTREAM,
    )
    image = result.images[0]
    assert (image.width, image.height) == (512, 384)
    assert sniff_format(image.data) == "webp"
    assert decode(image.data).size == (512, 384)


async def test_edit_auto_size_uses_the_input_size(sandbox: SandboxProvider) -> None:
    result = await sandbox.run(
        request("edit", size="auto", images=[upload(noise((300, 200)))]), UPSTREAM
    )
    assert (result.images[0].width, result.images[0].height) == (300, 200)


async def test_edit_with_reference_images_stays_inside_the_region(
    sandbox: SandboxProvider,
) -> None:
    source = noise()
    references = [upload(noise((80, 60), seed=s)) for s in range(3)]
    result = await sandbox.run(
        request("edit", size="auto", images=[upload(source), *references], mask=openai_mask()),
        UPSTREAM,
    )
    out = decode(result.images[0].data)
    assert outside_identical(out, source, HOLE)
    without = await sandbox.run(
        request("edit", size="auto", images=[upload(source)], mask=openai_mask()), UPSTREAM
    )
    assert without.images[0].data != result.images[0].data


# -- variation -----------------------------------------------------------------------------


async def test_variation_is_deterministic_and_differs_from_input(
    sandbox: SandboxProvider,
) -> None:
    source = noise((200, 150))
    images = [upload(source)]
    a = await sandbox.run(request("variation", size="auto", images=images, n=3), UPSTREAM)
    b = await sandbox.run(request("variation", size="auto", images=images, n=3), UPSTREAM)
    assert [i.data for i in a.images] == [i.data for i in b.images]
    assert len({i.data for i in a.images}) == 3
    out = decode(a.images[0].data)
    assert out.size == (200, 150)
    assert ImageChops.difference(out, source).getbbox() is not None


async def test_variation_depends_on_seed_and_input(sandbox: SandboxProvider) -> None:
    one = [upload(noise(seed=1))]
    two = [upload(noise(seed=2))]
    base = await sandbox.run(request("variation", size="auto", images=one, seed=1), UPSTREAM)
    reseeded = await sandbox.run(request("variation", size="auto", images=one, seed=2), UPSTREAM)
    other = await sandbox.run(request("variation", size="auto", images=two, seed=1), UPSTREAM)
    assert base.images[0].data != reseeded.images[0].data
    assert base.images[0].data != other.images[0].data


async def test_variation_changes_even_a_flat_grey_image(sandbox: SandboxProvider) -> None:
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    result = await sandbox.run(request("variation", size="auto", images=[upload(grey)]), UPSTREAM)
    assert ImageChops.difference(decode(result.images[0].data), grey).getbbox() is not None


async def test_variation_honours_size_format_and_alpha(sandbox: SandboxProvider) -> None:
    source = noise((100, 100), mode="RGBA")
    result = await sandbox.run(
        request("variation", size="256x512", images=[upload(source)], output_format="webp"),
        UPSTREAM,
    )
    image = result.images[0]
    assert (image.width, image.height) == (256, 512)
    assert sniff_format(image.data) == "webp"
    assert decode(image.data).mode == "RGBA"
    assert result.background == "transparent"
