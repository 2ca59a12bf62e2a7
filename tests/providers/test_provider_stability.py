"""The ``stability`` adapter against a loopback fake of Stability AI's v2beta API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
from PIL import Image

import adapter_support
from adapter_support import adapter, no_fetch, openai_mask, upstream_failure
from fakes.stability import FakeStability, serve_fake
from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.types import ImageRequest, InputImage
from imagegate.providers.base import ProviderContext
from imagegate.providers.stability import StabilityProvider
from request_support import image_request


@pytest.fixture(scope="module")
def server() -> Iterator[FakeStability]:
    with serve_fake(FakeStability()) as running:
        yield running


@asynccontextmanager
async def stability(
    fake: FakeStability, *, key: str = "sk-stability-fake", **options: Any
) -> AsyncIterator[StabilityProvider]:
    async with httpx.AsyncClient() as http:
        context = ProviderContext(http, no_fetch)  # the adapter never fetches a URL
        yield adapter(StabilityProvider, context, base_url=fake.url, api_key=key, **options)


png = partial(adapter_support.png, mode="RGBA")
gen = partial(adapter_support.gen, prompt="a lighthouse at dusk")
edit = partial(adapter_support.edit, prompt="paint it green")


async def failure(fake: FakeStability, request: ImageRequest, model: str = "core") -> Any:
    async with stability(fake) as provider:
        with pytest.raises((UpstreamError, InvalidRequest)) as info:
            await provider.run(request, model)
    return info.value


# --- generate --------------------------------------------------------------------------


async def test_generate_core_sends_multipart_with_bearer_and_json_accept(
    fake: FakeStability,
) -> None:
    async with stability(fake) as provider:
        request = gen(size="1536x1024", width=1536, height=1024, seed=99, output_format="webp")
        result = await provider.run(request, "core")
    [call] = fake.calls
    assert call.path == "/v2beta/stable-image/generate/core"
    assert call.headers["authorization"] == "Bearer sk-stability-fake"
    assert call.headers["accept"] == "application/json"
    assert call.headers["content-type"].startswith("multipart/form-data")
    assert call.fields == {
        "prompt": "a lighthouse at dusk",
        "output_format": "webp",
        "seed": "99",
        "aspect_ratio": "3:2",
    }
    [image] = result.images
    assert (image.format, image.width, image.height) == ("webp", 1824, 1248)
    assert result.upstream_model == "core"


@pytest.mark.parametrize(
    ("width", "height", "ratio"),
    [
        (1024, 1024, "1:1"),
        (1792, 1024, "16:9"),
        (1024, 1536, "2:3"),
        (2400, 1000, "21:9"),
        (1000, 4000, "9:21"),
        (1100, 1000, "1:1"),
        (1200, 1000, "5:4"),
    ],
)
async def test_sizes_map_to_the_nearest_aspect_ratio(
    fake: FakeStability, width: int, height: int, ratio: str
) -> None:
    async with stability(fake) as provider:
        await provider.run(gen(width=width, height=height), "ultra")
    assert fake.calls[0].fields["aspect_ratio"] == ratio


async def test_sd3_models_go_to_the_sd3_endpoint_with_model_and_mode(fake: FakeStability) -> None:
    async with stability(fake) as provider:
        request = gen(size="1344x768", width=1344, height=768, output_format="webp")
        result = await provider.run(request, "sd3.5-large-turbo")
    call = fake.calls[0]
    assert call.path == "/v2beta/stable-image/generate/sd3"
    assert call.fields["model"] == "sd3.5-large-turbo"
    assert call.fields["mode"] == "text-to-image"
    assert call.fields["output_format"] == "png"  # sd3 makes png or jpeg; webp is re-encoded
    assert (result.images[0].width, result.images[0].height) == (1344, 768)


async def test_n_fans_out_one_call_per_image(fake: FakeStability) -> None:
    async with stability(fake) as provider:
        result = await provider.run(gen(n=4), "ultra")
    assert len(fake.calls) == 4 and len(result.images) == 4


async def test_documented_extra_fields_pass_through(fake: FakeStability) -> None:
    extra = {"negative_prompt": "fog", "style_preset": "cinematic", "unknown": "x"}
    async with stability(fake) as provider:
        await provider.run(gen(extra=extra), "core")
    fields = fake.calls[0].fields
    assert fields["negative_prompt"] == "fog" and fields["style_preset"] == "cinematic"
    assert "unknown" not in fields


# --- edits -----------------------------------------------------------------------------


async def test_inpaint_converts_the_openai_mask_to_white_means_edit(fake: FakeStability) -> None:
    image = png(256, 128)
    async with stability(fake) as provider:
        request = edit([image], mask=openai_mask(64, 32), extra={"grow_mask": 3})
        result = await provider.run(request, "inpaint")
    call = fake.calls[0]
    assert call.path == "/v2beta/stable-image/edit/inpaint"
    assert call.files["image"] == image.data
    assert call.fields["grow_mask"] == "3"
    mask = Image.open(io.BytesIO(call.files["mask"])).convert("L")
    assert mask.size == (256, 128)
    assert mask.getpixel((5, 5)) == 0 and mask.getpixel((250, 120)) == 255
    assert (result.images[0].width, result.images[0].height) == (256, 128)


async def test_inpaint_without_mask_uses_the_images_transparency(fake: FakeStability) -> None:
    async with stability(fake) as provider:
        await provider.run(edit([png(64, 64, hole=(0, 0, 32, 32))]), "inpaint")
    mask = Image.open(io.BytesIO(fake.calls[0].files["mask"])).convert("L")
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 60)) == 0


async def test_inpaint_without_any_region_is_the_callers_error(fake: FakeStability) -> None:
    error = await failure(fake, edit([png(64, 64)]), "inpaint")
    assert isinstance(error, InvalidRequest) and error.param == "mask"
    error = await failure(fake, gen(), "inpaint")
    assert isinstance(error, InvalidRequest) and error.code == "unsupported_operation"
    assert fake.calls == []


@pytest.mark.parametrize("model", ["ultra", "sd3.5-large"])
async def test_unmasked_edit_is_image_to_image(fake: FakeStability, model: str) -> None:
    image = png(600, 300)
    async with stability(fake) as provider:
        result = await provider.run(edit([image], extra={"strength": 0.35}), model)
    call = fake.calls[0]
    assert call.files["image"] == image.data
    assert call.fields["strength"] == "0.35"
    assert "aspect_ratio" not in call.fields
    if model.startswith("sd3"):
        assert call.fields["mode"] == "image-to-image"
    image_out = result.images[0]
    assert abs(image_out.width / image_out.height - 2) < 0.1


async def test_image_to_image_strength_defaults(fake: FakeStability) -> None:
    async with stability(fake, strength=0.5) as provider:
        await provider.run(edit([png(64, 64)]), "ultra")
    async with stability(fake) as provider:
        await provider.run(edit([png(64, 64)]), "ultra")
    assert [c.fields["strength"] for c in fake.calls] == ["0.5", "0.7"]


async def test_edit_limits_are_the_callers_error(fake: FakeStability) -> None:
    error = await failure(fake, edit([png(64, 64), png(64, 64)]), "ultra")
    assert isinstance(error, InvalidRequest)
    assert (error.param, error.code) == ("image", "too_many_images")
    error = await failure(fake, edit([png(64, 64)], mask=openai_mask(64, 64)), "ultra")
    assert isinstance(error, InvalidRequest) and error.param == "mask"
    error = await failure(fake, edit([png(64, 64)]), "core")
    assert isinstance(error, InvalidRequest) and error.code == "unsupported_operation"
    assert fake.calls == []


async def test_variation_is_not_supported(fake: FakeStability) -> None:
    request = image_request(operation="variation", model="m", images=[png(64, 64)])
    error = await failure(fake, request)
    assert isinstance(error, InvalidRequest) and error.code == "unsupported_operation"


# --- errors ----------------------------------------------------------------------------


async def test_moderation_refusal_is_a_content_policy_violation(fake: FakeStability) -> None:
    error = await failure(fake, gen(prompt="forbidden thing"))
    assert isinstance(error, UpstreamError) and not error.retryable and error.status == 403
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"
    assert "content moderation" in error.client_error.message


async def test_a_filtered_output_is_a_content_policy_violation(fake: FakeStability) -> None:
    fake.filter_output = True
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and not error.retryable
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"


async def test_a_bad_key_is_retryable(fake: FakeStability) -> None:
    async with stability(fake, key="sk-wrong") as provider:
        error = await upstream_failure(provider, gen(), "core")
    assert error.retryable and error.status == 401


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (402, "payment_required"),
        (403, "forbidden"),
        (404, "not_found"),
        (500, "internal_error"),
        (503, "x"),
    ],
)
async def test_server_and_account_failures_are_retryable(
    fake: FakeStability, status: int, name: str
) -> None:
    fake.fail_status, fake.fail_name = status, name
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and error.retryable and error.status == status


async def test_rate_limits_carry_retry_after(fake: FakeStability) -> None:
    fake.fail_status, fake.fail_name, fake.retry_after = 429, "rate_limit_exceeded", "12"
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and error.retryable and error.retry_after_s == 12.0


async def test_bad_requests_keep_the_upstream_errors(fake: FakeStability) -> None:
    error = await failure(fake, gen(seed=2**40))
    assert isinstance(error, UpstreamError) and not error.retryable and error.status == 400
    assert isinstance(error.client_error, InvalidRequest)
    assert "seed: must be between 0 and 4294967294" in error.client_error.message


@pytest.mark.parametrize("status", [413, 422])
async def test_rejected_requests_are_the_callers_error(fake: FakeStability, status: int) -> None:
    fake.fail_status, fake.fail_name = status, "invalid_request"
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and not error.retryable
    assert isinstance(error.client_error, InvalidRequest)
    assert "simulated failure" in error.client_error.message


# --- account-level failures and strictness (fakes/stability.py cites the pages) --------


async def test_exhausted_credits_are_ours(fake: FakeStability) -> None:
    fake.out_of_credits = True
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and error.status == 402
    assert error.retryable and error.ours and error.client_error is None


async def test_a_retired_sd3_model_is_ours_not_the_callers(fake: FakeStability) -> None:
    """Stability validates ``model`` against its enum (400 naming the field); the model id
    comes from our catalog, so the error is ours and the model is gone."""
    fake.retired = {"sd3.5-medium"}
    error = await failure(fake, gen(), "sd3.5-medium")
    assert isinstance(error, UpstreamError) and error.status == 400
    assert error.retryable and error.model_gone and error.client_error is None


async def test_an_oversized_request_is_413_and_the_callers(fake: FakeStability) -> None:
    big = InputImage(b"\x89PNG" + bytes(11 * 1024 * 1024), "png", 64, 64)
    error = await failure(fake, edit([big]), "sd3.5-large")
    assert isinstance(error, UpstreamError) and error.status == 413
    assert not error.retryable and isinstance(error.client_error, InvalidRequest)


async def test_the_fake_refuses_what_stability_refuses(fake: FakeStability) -> None:
    """No key is 401; a JSON body is 400 (multipart only); ``accept`` defaults to image/*."""
    url = f"{fake.url}/v2beta/stable-image/generate/core"
    key = {"authorization": f"Bearer {fake.api_key}"}
    form = {"prompt": (None, "a lighthouse")}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, files=form)).status_code == 401
        as_json = await http.post(url, json={"prompt": "a lighthouse"}, headers=key)
        assert as_json.status_code == 400
        bytes_back = await http.post(url, files=form, headers={**key, "accept": ""})
        assert bytes_back.status_code == 200
        assert bytes_back.headers["content-type"].startswith("image/")
        bad_accept = await http.post(url, files=form, headers={**key, "accept": "text/html"})
        assert bad_accept.status_code == 400
