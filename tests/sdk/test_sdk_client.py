"""The Python SDK against a real gateway process: every call, sync and async, each kind of
image input, URL images, streaming."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image as PIL

from e2e_support import png_bytes
from imagegate.client import (
    ApiClient,
    AsyncApiClient,
    AsyncImagesApi,
    AsyncImageStream,
    BadRequestException,
    Configuration,
    ImageCompletedEvent,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ImagePartialImageEvent,
    ImagesApi,
    ImagesEditRequest,
    ImageStream,
    ImageVariationRequest,
    ProviderRoutingOptions,
)
from sdk_support import SdkStack, sdk_stack_fixture  # noqa: F401


@pytest.fixture
def api(sdk_stack: SdkStack) -> Iterator[ImagesApi]:
    config = Configuration(host=sdk_stack.v1, access_token=sdk_stack.gateway.admin_key)
    with ApiClient(config) as client:
        yield ImagesApi(client)


@pytest.fixture
async def aapi(sdk_stack: SdkStack) -> AsyncIterator[AsyncImagesApi]:
    config = Configuration(host=sdk_stack.v1, access_token=sdk_stack.gateway.admin_key)
    async with AsyncApiClient(config) as client:
        yield AsyncImagesApi(client)


def response(value: object) -> ImageGenerationResponse:
    assert isinstance(value, ImageGenerationResponse), value
    return value


def sizes(result: object) -> list[tuple[int, int]]:
    return [image.to_pil().size for image in response(result).data]


def test_generation_under_both_names_with_http_info(api: ImagesApi, tmp_path: Path) -> None:
    request = ImageGenerationRequest(
        model="imagegate/sandbox",
        prompt="a lighthouse",
        n=2,
        size="160x96",
        meta=True,
        usage=True,
        provider=ProviderRoutingOptions(only=["sandbox"]),
    )
    data, status, headers = api.images_generations_post_with_http_info(request)
    result = response(data)
    assert status == 200 and headers["x-imagegate-provider"] == "sandbox"
    assert [img.to_pil().size for img in result.data] == [(160, 96), (160, 96)]
    assert result.meta is not None and result.meta.provider == "sandbox"
    assert result.meta.attempts[0].provider == "sandbox"
    assert result.usage is not None and result.usage.images == 2
    assert result.size == "160x96" and result.output_format == "png"
    saved = result.data[0].save(tmp_path / "a" / "one.png")
    assert PIL.open(saved).size == (160, 96)

    plain = response(api.images_generations_post({"model": "sandbox", "prompt": "x", "seed": 3}))
    again = response(api.create_image(model="sandbox", prompt="x", seed=3))
    assert plain.data[0].bytes() == again.data[0].bytes()  # the sandbox is deterministic
    assert plain.data[0].to_pil().size == (1024, 1024)


def test_url_images_are_downloaded(api: ImagesApi, tmp_path: Path) -> None:
    result = response(
        api.create_image(
            model="sandbox", prompt="fox", size="96x80", response_format="url", output_format="webp"
        )
    )
    image = result.data[0]
    assert image.b64_json is None and image.url and "/v1/files/" in image.url
    assert image.bytes()[8:12] == b"WEBP"
    assert image.to_pil().size == (96, 80)
    assert PIL.open(image.save(tmp_path / "fox.webp")).format == "WEBP"


def test_edit_takes_path_bytes_file_object_and_url(
    api: ImagesApi, sdk_stack: SdkStack, tmp_path: Path
) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes(120, 72))
    inputs: list[object] = [
        str(path),
        path,
        png_bytes(120, 72),
        io.BytesIO(png_bytes(120, 72)),
        path.open("rb"),
    ]
    for item in inputs:
        result = api.images_edits_post(
            ImagesEditRequest(model="sandbox", image=item, prompt="add a hat")  # type: ignore[arg-type]
        )
        assert sizes(result) == [(120, 72)], item
    by_url = api.create_image_edit(sdk_stack.image_url(), "add a hat", model="sandbox")
    assert sizes(by_url) == [(96, 64)]
    assert sdk_stack.images.paths[-1] == "/red.png"  # the gateway fetched it
    several, status, _ = api.images_edits_post_with_http_info(
        {"model": "sandbox", "image": [path, png_bytes(120, 72)], "prompt": "p", "n": 2}
    )
    assert status == 200 and sizes(several) == [(120, 72), (120, 72)]


def test_edit_mask_limits_the_change(api: ImagesApi, sdk_stack: SdkStack) -> None:
    mask = PIL.new("RGBA", (96, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 48, 64))  # transparent left half: edit only there
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    for image in (png_bytes(96, 64), sdk_stack.image_url()):
        result = api.create_image_edit(image, "paint", mask=buffer.getvalue(), model="sandbox")
        out = response(result).data[0].to_pil().convert("RGB")
        assert out.getpixel((80, 32)) == (200, 30, 30)  # untouched right half
        assert out.getpixel((10, 32)) != (200, 30, 30)
    # both URLs: sent as JSON images/mask
    result = api.create_image_edit(
        sdk_stack.image_url(), "paint", mask=sdk_stack.image_url("mask.png"), model="sandbox"
    )
    assert response(result).data[0].to_pil().convert("RGB").getpixel((80, 32)) != (200, 30, 30)


def test_variation_from_path_and_url(api: ImagesApi, sdk_stack: SdkStack, tmp_path: Path) -> None:
    path = tmp_path / "v.png"
    path.write_bytes(png_bytes(64, 64))
    assert sizes(api.create_image_variation(path, model="sandbox", n=2, size="80x80")) == [
        (80, 80),
        (80, 80),
    ]
    data, status, _ = api.images_variations_post_with_http_info(
        ImageVariationRequest(model="sandbox", image=sdk_stack.image_url(), size="64x64")
    )
    assert status == 200 and sizes(data) == [(64, 64)]
    assert sizes(api.images_variations_post({"model": "sandbox", "image": path})) == [(64, 64)]


async def test_async_twin_every_call(aapi: AsyncImagesApi, sdk_stack: SdkStack) -> None:
    gen, status, headers = await aapi.images_generations_post_with_http_info(
        {"model": "sandbox", "prompt": "a", "size": "64x96"}
    )
    assert status == 200 and headers["x-imagegate-provider"] == "sandbox"
    assert sizes(gen) == [(64, 96)]
    assert sizes(await aapi.images_generations_post({"model": "sandbox", "prompt": "b"})) == [
        (1024, 1024)
    ]
    assert sizes(await aapi.create_image(model="sandbox", prompt="c", size="64x64")) == [(64, 64)]
    url_result = response(
        await aapi.create_image(model="sandbox", prompt="d", size="72x64", response_format="url")
    )
    assert PIL.open(io.BytesIO(await url_result.data[0].abytes())).size == (72, 64)

    edit = ImagesEditRequest(model="sandbox", image=png_bytes(80, 64), prompt="hat")
    assert sizes(await aapi.images_edits_post(edit)) == [(80, 64)]
    _, status, _ = await aapi.images_edits_post_with_http_info(edit)
    assert status == 200
    by_url = await aapi.create_image_edit(sdk_stack.image_url(), "hat", model="sandbox")
    assert sizes(by_url) == [(96, 64)]

    var = ImageVariationRequest(model="sandbox", image=io.BytesIO(png_bytes(64, 64)))
    assert sizes(await aapi.images_variations_post(var)) == [(64, 64)]
    _, status, _ = await aapi.images_variations_post_with_http_info(
        {"model": "sandbox", "image": png_bytes(64, 64)}
    )
    assert status == 200
    assert sizes(await aapi.create_image_variation(sdk_stack.image_url(), model="sandbox")) == [
        (96, 64)
    ]


def test_stream_generation_yields_partials_then_the_image(api: ImagesApi) -> None:
    stream = api.create_image(
        model="sandbox", prompt="a fox", size="128x96", stream=True, partial_images=2
    )
    assert isinstance(stream, ImageStream) and stream.status_code == 200
    events = list(stream)
    partials = [e for e in events if isinstance(e, ImagePartialImageEvent)]
    assert [e.partial_image_index for e in partials] == [0, 1]
    assert all(e.type == "image_generation.partial_image" for e in partials)
    final = events[-1]
    assert isinstance(final, ImageCompletedEvent) and final.type == "image_generation.completed"
    assert final.size == "128x96" and final.output_format == "png"
    assert PIL.open(io.BytesIO(final.bytes())).size == (128, 96)
    same = response(api.create_image(model="sandbox", prompt="a fox", size="128x96"))
    assert final.bytes() == same.data[0].bytes()


def test_stream_edit_and_refusal_before_the_stream(api: ImagesApi) -> None:
    stream = api.create_image_edit(
        png_bytes(96, 64), "hat", model="sandbox", stream=True, partial_images=1
    )
    assert isinstance(stream, ImageStream)
    with stream:
        types = [event.type for event in stream]
    assert types == ["image_edit.partial_image", "image_edit.completed"]
    with pytest.raises(BadRequestException) as info:
        api.create_image(model="sandbox", prompt="x", n=2, stream=True)
    assert info.value.param == "n"


async def test_async_stream(aapi: AsyncImagesApi) -> None:
    stream = await aapi.create_image(
        model="sandbox", prompt="a fox", size="64x64", stream=True, partial_images=1
    )
    assert isinstance(stream, AsyncImageStream)
    events = [event async for event in stream]
    assert [type(e) for e in events] == [ImagePartialImageEvent, ImageCompletedEvent]
    assert PIL.open(io.BytesIO(events[-1].bytes())).size == (64, 64)
