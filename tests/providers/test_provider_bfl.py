"""The ``bfl`` adapter against a loopback fake of the Black Forest Labs API."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

import adapter_support
from adapter_support import adapter, edit, gen, openai_mask, upstream_failure
from fakes.bfl import FakeBFL, serve_fake
from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.types import ImageRequest
from imagegate.providers.base import ProviderContext
from imagegate.providers.bfl import BFLProvider, snap_side
from imagegate.upstream.fetch import SafeFetcher
from request_support import image_request


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBFL]:
    with serve_fake(FakeBFL()) as running:
        yield running


def netloc(url: str) -> str:
    return urlsplit(url).netloc


@asynccontextmanager
async def bfl(
    fake: FakeBFL, *, key: str = "bfl-fake", trust_delivery: bool = True, **options: Any
) -> AsyncIterator[BFLProvider]:
    """The adapter wired as the gateway wires it: the URL fetcher trusts the API host and
    the configured ``result_hosts`` (here the fake's loopback delivery host)."""
    options = {
        "poll_interval_s": 0.01,
        "poll_timeout_s": 5,
        "result_hosts": [netloc(fake.delivery_url)],
        **options,
    }
    allowed = [netloc(fake.url)] + ([netloc(fake.delivery_url)] if trust_delivery else [])
    async with (
        httpx.AsyncClient() as http,
        SafeFetcher(allow_hosts=allowed, max_bytes=8 << 20, timeout_s=5) as fetcher,
    ):

        async def fetch(url: str) -> bytes:
            return await fetcher.fetch(url, param="upstream")

        context = ProviderContext(http, fetch)
        yield adapter(BFLProvider, context, base_url=fake.url, api_key=key, **options)


png = partial(adapter_support.png, mode="RGBA")


async def failure(fake: FakeBFL, request: ImageRequest, model: str = "flux-pro-1.1") -> Any:
    async with bfl(fake) as provider:
        with pytest.raises((UpstreamError, InvalidRequest)) as info:
            await provider.run(request, model)
    return info.value


# --- generate --------------------------------------------------------------------------


async def test_generate_submits_polls_until_ready_and_fetches_the_sample(fake: FakeBFL) -> None:
    fake.pending_polls = 2
    async with bfl(fake) as provider:
        result = await provider.run(
            gen(size="1000x700", width=1000, height=700, seed=7), "flux-pro-1.1"
        )
    [sub] = fake.submissions
    assert sub.model == "flux-pro-1.1" and sub.key == "bfl-fake"
    assert sub.body == {
        "prompt": "a red fox",
        "width": 992,
        "height": 704,
        "seed": 7,
        "output_format": "png",
    }
    assert fake.poll_keys == ["bfl-fake"] * 3  # Pending, Pending, Ready
    [image] = result.images
    assert (image.format, image.width, image.height) == ("png", 992, 704)
    assert result.upstream_model == "flux-pro-1.1"


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(1024, 1024, (1024, 1024)), (1536, 1024, (1440, 1024)), (100, 3000, (256, 1440))],
)
async def test_width_height_models_snap_to_multiples_of_32_within_range(
    fake: FakeBFL, width: int, height: int, expected: tuple[int, int]
) -> None:
    async with bfl(fake) as provider:
        result = await provider.run(gen(width=width, height=height), "flux-dev")
    assert (fake.submissions[0].body["width"], fake.submissions[0].body["height"]) == expected
    assert (result.images[0].width, result.images[0].height) == expected
    assert snap_side(1455) == 1440 and snap_side(250) == 256 and snap_side(529) == 544


async def test_n_fans_out_one_task_per_image(fake: FakeBFL) -> None:
    async with bfl(fake) as provider:
        result = await provider.run(gen(n=3, output_format="jpeg"), "flux-pro-1.1")
    assert len(fake.submissions) == 3
    assert [img.format for img in result.images] == ["jpeg"] * 3
    assert {s.body["output_format"] for s in fake.submissions} == {"jpeg"}


async def test_kontext_generate_sends_the_nearest_aspect_ratio(fake: FakeBFL) -> None:
    async with bfl(fake) as provider:
        result = await provider.run(
            gen(size="1536x1024", width=1536, height=1024), "flux-kontext-pro"
        )
    body = fake.submissions[0].body
    assert body["aspect_ratio"] == "3:2" and "width" not in body
    image = result.images[0]
    assert image.width > image.height


async def test_documented_extra_fields_pass_through(fake: FakeBFL) -> None:
    async with bfl(fake, safety_tolerance=4) as provider:
        request = gen(extra={"prompt_upsampling": True, "unknown_field": 1})
        await provider.run(request, "flux-pro-1.1")
    body = fake.submissions[0].body
    assert body["safety_tolerance"] == 4 and body["prompt_upsampling"] is True
    assert "unknown_field" not in body


async def test_flux2_pro_generates_with_width_and_height(fake: FakeBFL) -> None:
    async with bfl(fake) as provider:
        result = await provider.run(gen(size="1024x768", width=1024, height=768), "flux-2-pro")
    body = fake.submissions[-1].body
    assert (body["width"], body["height"]) == (1024, 768)
    assert (result.images[0].width, result.images[0].height) == (1024, 768)


async def test_a_caller_cannot_override_the_operators_safety_tolerance(fake: FakeBFL) -> None:
    async with bfl(fake, safety_tolerance=1) as provider:
        await provider.run(gen(extra={"safety_tolerance": 6}), "flux-pro-1.1")
    assert fake.submissions[-1].body["safety_tolerance"] == 1
    async with bfl(fake) as provider:  # no operator setting: BFL's default stands
        await provider.run(gen(extra={"safety_tolerance": 6}), "flux-pro-1.1")
    assert "safety_tolerance" not in fake.submissions[-1].body
    async with bfl(fake, pass_through=["safety_tolerance"]) as provider:  # operator allows
        await provider.run(gen(extra={"safety_tolerance": 6, "raw": True}), "flux-pro-1.1")
    body = fake.submissions[-1].body
    assert body["safety_tolerance"] == 6 and "raw" not in body


# --- edits -----------------------------------------------------------------------------


async def test_kontext_edit_sends_base64_input_images_and_keeps_the_input_ratio(
    fake: FakeBFL,
) -> None:
    first, second = png(600, 300), png(64, 64)
    async with bfl(fake) as provider:
        result = await provider.run(
            edit([first, second], width=600, height=300), "flux-kontext-pro"
        )
    body = fake.submissions[0].body
    assert base64.b64decode(body["input_image"]) == first.data
    assert base64.b64decode(body["input_image_2"]) == second.data
    assert "aspect_ratio" not in body  # size=auto: the output follows the input
    image = result.images[0]
    assert abs(image.width / image.height - 2) < 0.05


async def test_kontext_edit_with_explicit_size_sends_an_aspect_ratio(fake: FakeBFL) -> None:
    async with bfl(fake) as provider:
        request = edit([png(512, 512)], size="1024x1792", width=1024, height=1792)
        await provider.run(request, "flux-kontext-pro")
    assert fake.submissions[0].body["aspect_ratio"] == "9:16"


async def test_kontext_refuses_more_than_four_images_and_masks(fake: FakeBFL) -> None:
    error = await failure(fake, edit([png(64, 64)] * 5), "flux-kontext-pro")
    assert isinstance(error, InvalidRequest)
    assert (error.param, error.code) == ("image", "too_many_images")
    assert "4" in error.message
    error = await failure(fake, edit([png(64, 64)], mask=openai_mask(64, 64)), "flux-kontext-pro")
    assert isinstance(error, InvalidRequest) and error.param == "mask"
    assert fake.submissions == []


async def test_fill_converts_the_openai_mask_to_white_means_edit(fake: FakeBFL) -> None:
    image = png(128, 96)
    mask = openai_mask(64, 48)  # a different size: resized to the image
    async with bfl(fake) as provider:
        result = await provider.run(edit([image], mask=mask), "flux-pro-1.0-fill")
    body = fake.submissions[0].body
    assert base64.b64decode(body["image"]) == image.data
    sent = Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L")
    assert sent.size == (128, 96)
    assert sent.getpixel((10, 10)) == 0  # opaque in the OpenAI mask: keep
    assert sent.getpixel((120, 90)) == 255  # transparent in the OpenAI mask: edit
    assert (result.images[0].width, result.images[0].height) == (128, 96)


async def test_fill_without_mask_uses_the_images_transparent_pixels(fake: FakeBFL) -> None:
    async with bfl(fake) as provider:
        await provider.run(edit([png(64, 64, hole=(0, 0, 32, 32))]), "flux-pro-1.0-fill")
    sent = Image.open(io.BytesIO(base64.b64decode(fake.submissions[0].body["mask"])))
    assert sent.convert("L").getpixel((5, 5)) == 255
    assert sent.convert("L").getpixel((60, 60)) == 0


async def test_fill_without_mask_or_transparency_is_the_callers_error(fake: FakeBFL) -> None:
    error = await failure(fake, edit([png(64, 64)]), "flux-pro-1.0-fill")
    assert isinstance(error, InvalidRequest) and error.param == "mask"
    error = await failure(fake, gen(), "flux-pro-1.0-fill")
    assert isinstance(error, InvalidRequest) and error.code == "unsupported_operation"
    assert fake.submissions == []


async def test_text_to_image_models_do_not_edit(fake: FakeBFL) -> None:
    error = await failure(fake, edit([png(64, 64)]), "flux-pro-1.1")
    assert isinstance(error, InvalidRequest) and error.code == "unsupported_operation"
    assert fake.submissions == []


async def test_variation_is_not_supported(fake: FakeBFL) -> None:
    request = image_request(operation="variation", model="m", images=[png(64, 64)])
    error = await failure(fake, request)
    assert isinstance(error, InvalidRequest) and error.code == "unsupported_operation"


# --- task outcomes ---------------------------------------------------------------------


@pytest.mark.parametrize("status", ["Request Moderated", "Content Moderated"])
async def test_moderation_is_a_content_policy_violation(fake: FakeBFL, status: str) -> None:
    fake.outcome = status
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and not error.retryable
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"
    assert status in error.client_error.message


@pytest.mark.parametrize("status", ["Error", "Task not found", "Something New"])
async def test_failed_tasks_are_retryable(fake: FakeBFL, status: str) -> None:
    fake.outcome = status
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and error.retryable and error.status == 502
    assert status in error.message


async def test_a_task_that_never_finishes_times_out(fake: FakeBFL) -> None:
    fake.outcome = "Pending"
    async with bfl(fake, poll_timeout_s=0.2) as provider:
        error = await upstream_failure(provider, gen(), "flux-pro-1.1")
    assert error.timeout and error.retryable and error.status == 504
    assert len(fake.poll_keys) >= 2


async def test_the_key_is_not_sent_to_a_foreign_polling_host(fake: FakeBFL) -> None:
    fake.polling_base = "http://polling.example.com"
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and error.retryable
    assert "polling.example.com" in error.message
    assert fake.poll_keys == []


async def test_sample_urls_must_come_from_the_result_hosts(fake: FakeBFL) -> None:
    async with bfl(fake, result_hosts=["delivery.example.com"]) as provider:
        error = await upstream_failure(provider, gen(), "flux-pro-1.1")
    assert error.retryable and "unexpected host" in error.message
    assert fake.samples  # the sample existed; it was never fetched


async def test_an_unfetchable_sample_fails_over(fake: FakeBFL) -> None:
    async with bfl(fake, trust_delivery=False) as provider:
        error = await upstream_failure(provider, gen(), "flux-pro-1.1")
    assert error.retryable and error.status == 502


# --- HTTP errors -----------------------------------------------------------------------


async def test_a_bad_key_is_retryable(fake: FakeBFL) -> None:
    async with bfl(fake, key="wrong") as provider:
        error = await upstream_failure(provider, gen(), "flux-pro-1.1")
    assert error.retryable and error.status == 403
    assert "Not authenticated" in error.message


@pytest.mark.parametrize("status", [401, 402, 404, 500, 503])
async def test_server_and_account_failures_are_retryable(fake: FakeBFL, status: int) -> None:
    fake.fail_status = status
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and error.retryable and error.status == status


async def test_rate_limits_carry_retry_after(fake: FakeBFL) -> None:
    fake.fail_status, fake.retry_after = 429, "7"
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and error.retryable
    assert error.retry_after_s == 7.0


@pytest.mark.parametrize("status", [400, 422])
async def test_rejected_requests_are_the_callers_error(fake: FakeBFL, status: int) -> None:
    fake.fail_status = status
    error = await failure(fake, gen())
    assert isinstance(error, UpstreamError) and not error.retryable
    assert isinstance(error.client_error, InvalidRequest)
    assert f"Simulated failure {status}" in error.client_error.message


async def test_validation_errors_keep_the_upstream_detail(fake: FakeBFL) -> None:
    error = await failure(fake, gen(prompt=""), "flux-kontext-pro")
    assert isinstance(error, UpstreamError) and not error.retryable and error.status == 422
    assert error.client_error is not None
    assert "prompt: Field required" in error.client_error.message
