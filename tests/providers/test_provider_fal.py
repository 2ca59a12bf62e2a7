"""The ``fal`` adapter against a loopback fake of fal's queue and synchronous APIs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from PIL import Image

import adapter_support
from adapter_support import adapter, edit, gen, refusal, upstream_failure
from fakes.fal import FakeFal, decode_data_url, serve_fake
from imagegate.catalog.catalog import Catalog
from imagegate.core.errors import InvalidRequest
from imagegate.providers.base import ProviderContext
from imagegate.providers.fal import FalProvider

SCHNELL = "fal-ai/flux/schnell"
PRO = "fal-ai/flux-pro/v1.1"
KONTEXT = "fal-ai/flux-pro/kontext"
IMG2IMG = "fal-ai/flux/dev/image-to-image"
INPAINT = "fal-ai/flux-lora/inpainting"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeFal]:
    with serve_fake(FakeFal()) as running:
        yield running


def provider(
    fake: FakeFal, context: ProviderContext, key: str = "fal-fake", **options: Any
) -> FalProvider:
    options = {"poll_interval_s": 0.02, "run_url": f"{fake.url}/run", **options}
    return adapter(
        FalProvider, context, base_url=f"{fake.url}/queue", api_key=key, timeout_s=20, **options
    )


png = partial(adapter_support.png, mode="RGBA", colour=(200, 100, 50, 255))


def sent_mask(fake: FakeFal) -> Image.Image:
    return Image.open(io.BytesIO(decode_data_url(fake.inputs[0]["mask_url"])))


# -- queue ------------------------------------------------------------------------------


async def test_queue_submit_poll_and_fetch(fake: FakeFal, context: ProviderContext) -> None:
    fake.polls_in_queue = 2
    result = await provider(fake, context).run(gen(), SCHNELL)

    submit, *rest = fake.calls
    assert (submit.method, submit.path) == ("POST", f"/queue/{SCHNELL}")
    assert submit.auth == "Key fal-fake"
    assert submit.body == {
        "prompt": "a red fox",
        "image_size": "square_hd",
        "output_format": "png",
        "num_images": 1,
    }
    statuses = [c for c in rest if c.path.endswith("/status")]
    assert len(statuses) == 5  # IN_QUEUE x2, IN_PROGRESS x2, COMPLETED
    assert rest[-1].path == statuses[-1].path.removesuffix("/status")  # then the result
    assert all(c.auth == "Key fal-fake" for c in rest)
    [image] = result.images
    assert (image.format, image.width, image.height) == ("png", 1024, 1024)
    assert result.upstream_model == SCHNELL


async def test_sync_mode_runs_directly(fake: FakeFal, context: ProviderContext) -> None:
    result = await provider(fake, context, mode="sync").run(gen(width=1024, height=768), SCHNELL)

    [call] = fake.calls
    assert (call.method, call.path) == ("POST", f"/run/{SCHNELL}")
    assert call.body["image_size"] == "landscape_4_3"
    assert (result.images[0].width, result.images[0].height) == (1024, 768)


@pytest.mark.parametrize(
    ("size", "sent"),
    [
        ((1024, 576), "landscape_16_9"),
        ((768, 1024), "portrait_4_3"),
        ((1344, 768), {"width": 1344, "height": 768}),
        ((256, 1440), {"width": 256, "height": 1440}),
    ],
)
async def test_sizes_use_presets_or_exact_dimensions(
    fake: FakeFal, context: ProviderContext, size: tuple[int, int], sent: Any
) -> None:
    result = await provider(fake, context).run(gen(width=size[0], height=size[1]), PRO)
    assert fake.inputs[0]["image_size"] == sent
    assert (result.images[0].width, result.images[0].height) == size


async def test_format_and_seed_pass_through(fake: FakeFal, context: ProviderContext) -> None:
    extra = {"num_inference_steps": 2, "enable_safety_checker": False}
    request = gen(output_format="jpeg", seed=9, extra=extra)
    result = await provider(fake, context).run(request, SCHNELL)

    [inputs] = fake.inputs
    assert inputs["output_format"] == "jpeg" and inputs["seed"] == 9
    assert inputs["num_inference_steps"] == 2
    assert "enable_safety_checker" not in inputs  # a safety setting: the operator's
    assert result.images[0].format == "jpeg"


async def test_webp_is_made_by_the_gateway(fake: FakeFal, context: ProviderContext) -> None:
    result = await provider(fake, context).run(gen(output_format="webp"), SCHNELL)
    assert fake.inputs[0]["output_format"] == "png"
    assert result.images[0].format == "png"


async def test_n_uses_num_images_then_fans_out(fake: FakeFal, context: ProviderContext) -> None:
    result = await provider(fake, context).run(gen(n=6, seed=100), SCHNELL)

    assert len(result.images) == 6
    assert sorted((i["num_images"], i["seed"]) for i in fake.inputs) == [(2, 101), (4, 100)]


async def test_kontext_generation_uses_the_text_to_image_endpoint(
    fake: FakeFal, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(gen(width=1536, height=640), KONTEXT)

    [call] = fake.submissions
    assert call.path == f"/queue/{KONTEXT}/text-to-image"
    assert call.body["aspect_ratio"] == "21:9"
    assert "image_size" not in call.body
    assert result.upstream_model == f"{KONTEXT}/text-to-image"


# -- edits ------------------------------------------------------------------------------


async def test_kontext_edit_keeps_the_input_aspect(fake: FakeFal, context: ProviderContext) -> None:
    source = png(640, 480)
    result = await provider(fake, context).run(edit([source], width=640, height=480), KONTEXT)

    [call] = fake.submissions
    assert call.path == f"/queue/{KONTEXT}"
    assert call.body["image_url"].startswith("data:image/png;base64,")
    assert decode_data_url(call.body["image_url"]) == source.data
    assert "aspect_ratio" not in call.body
    assert (result.images[0].width, result.images[0].height) == (640, 480)


async def test_kontext_edit_with_a_size_asks_for_its_ratio(
    fake: FakeFal, context: ProviderContext
) -> None:
    request = edit([png(640, 480)], size="1024x576", width=1024, height=576)
    await provider(fake, context).run(request, KONTEXT)
    assert fake.inputs[0]["aspect_ratio"] == "16:9"


async def test_image_to_image_follows_the_input(fake: FakeFal, context: ProviderContext) -> None:
    result = await provider(fake, context).run(edit([png(320, 240)], n=2), IMG2IMG)

    [inputs] = fake.inputs
    assert "image_size" not in inputs and "aspect_ratio" not in inputs
    assert inputs["num_images"] == 2
    assert [(i.width, i.height) for i in result.images] == [(320, 240), (320, 240)]


async def test_inpainting_sends_white_means_edit_resized_to_the_image(
    fake: FakeFal, context: ProviderContext
) -> None:
    source = png(256, 128)
    mask = png(128, 64, hole=(0, 0, 32, 32))  # transparent top-left = edit, half scale
    request = edit([source], mask=mask, width=256, height=128)
    result = await provider(fake, context).run(request, INPAINT)

    [inputs] = fake.inputs
    assert decode_data_url(inputs["image_url"]) == source.data
    assert inputs["image_size"] == {"width": 256, "height": 128}
    with sent_mask(fake) as sent:
        assert (sent.size, sent.mode) == ((256, 128), "L")
        assert sent.getpixel((10, 10)) == 255 and sent.getpixel((200, 100)) == 0
    assert (result.images[0].width, result.images[0].height) == (256, 128)


async def test_inpainting_without_mask_uses_transparency_else_everything(
    fake: FakeFal, context: ProviderContext
) -> None:
    await provider(fake, context).run(edit([png(64, 64, hole=(0, 0, 16, 16))]), INPAINT)
    with sent_mask(fake) as sent:
        assert sent.getpixel((4, 4)) == 255 and sent.getpixel((40, 40)) == 0

    fake.reset()
    await provider(fake, context).run(edit([png(64, 64)]), INPAINT)
    with sent_mask(fake) as sent:
        assert sent.getextrema() == (255, 255)


async def test_mask_is_refused_by_models_without_one(
    fake: FakeFal, context: ProviderContext
) -> None:
    request = edit([png(64, 64)], mask=png(64, 64, hole=(0, 0, 8, 8)))
    error = await refusal(provider(fake, context), request, KONTEXT)
    assert error.param == "mask" and not fake.calls


async def test_too_many_input_images(fake: FakeFal, context: ProviderContext) -> None:
    error = await refusal(provider(fake, context), edit([png(64, 64)] * 3), IMG2IMG)
    assert error.code == "too_many_images" and "at most 1" in error.message


# -- safety -----------------------------------------------------------------------------


async def test_flagged_images_are_dropped(fake: FakeFal, context: ProviderContext) -> None:
    result = await provider(fake, context).run(gen("half-nsfw scene", n=3), SCHNELL)
    assert len(result.images) == 2
    assert all(Image.open(io.BytesIO(i.data)).getpixel((0, 0)) != (0, 0, 0) for i in result.images)


async def test_all_images_flagged_is_a_content_policy_violation(
    fake: FakeFal, context: ProviderContext
) -> None:
    error = await upstream_failure(provider(fake, context), gen("nsfw scene"), SCHNELL)
    assert not error.retryable
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"


@pytest.mark.parametrize("mode", ["queue", "sync"])
async def test_content_checker_rejection(
    fake: FakeFal, context: ProviderContext, mode: str
) -> None:
    error = await upstream_failure(
        provider(fake, context, mode=mode), gen("forbidden thing"), SCHNELL
    )
    client = error.client_error
    assert not error.retryable and isinstance(client, InvalidRequest)
    assert client.code == "content_policy_violation"
    assert "flagged by a content checker" in client.message


# -- errors and timeouts ----------------------------------------------------------------


async def test_bad_key_is_retryable(fake: FakeFal, context: ProviderContext) -> None:
    error = await upstream_failure(provider(fake, context, key="nope"), gen(), SCHNELL)
    assert error.status == 401 and error.retryable
    assert "Invalid key" in error.message


async def test_rate_limit_keeps_retry_after(fake: FakeFal, context: ProviderContext) -> None:
    fake.http_error = (429, "Too many concurrent requests", {"Retry-After": "3"})
    error = await upstream_failure(provider(fake, context), gen(), SCHNELL)
    assert error.retryable and error.retry_after_s == 3.0


@pytest.mark.parametrize("mode", ["queue", "sync"])
async def test_server_error_is_retryable(
    fake: FakeFal, context: ProviderContext, mode: str
) -> None:
    fake.http_error = (500, "Internal server error", {})
    error = await upstream_failure(provider(fake, context, mode=mode), gen(), SCHNELL)
    assert error.retryable and error.status == 500


async def test_a_retryable_marked_failure_is_never_the_callers(
    fake: FakeFal, context: ProviderContext
) -> None:
    fake.http_error = (400, "runner disconnected", {"X-Fal-Retryable": "true"})
    error = await upstream_failure(provider(fake, context), gen(), SCHNELL)
    assert error.retryable and error.client_error is None


async def test_validation_error_is_the_callers(fake: FakeFal, context: ProviderContext) -> None:
    error = await upstream_failure(
        provider(fake, context), gen(extra={"num_inference_steps": 50}), SCHNELL
    )
    client = error.client_error
    assert not error.retryable and isinstance(client, InvalidRequest)
    assert "less than or equal to 12" in client.message
    assert client.param == "num_inference_steps"


async def test_dev_endpoints_take_fals_default_step_count(
    fake: FakeFal, context: ProviderContext
) -> None:
    """The 12-step cap is FLUX.1 [schnell]'s; [dev] image-to-image defaults to 28 steps."""
    request = edit([png(320, 240)], extra={"num_inference_steps": 28})
    await provider(fake, context).run(request, IMG2IMG)
    assert fake.inputs[-1]["num_inference_steps"] == 28


async def test_input_errors_name_the_openai_field(fake: FakeFal, context: ProviderContext) -> None:
    fake.image_too_large = True
    error = await upstream_failure(provider(fake, context), edit([png(64, 64)]), KONTEXT)
    client = error.client_error
    assert isinstance(client, InvalidRequest) and client.param == "image"
    assert "too large" in client.message


async def test_images_on_unexpected_hosts_are_refused(
    fake: FakeFal, context: ProviderContext
) -> None:
    fake.foreign_output = True
    error = await upstream_failure(provider(fake, context), gen(), SCHNELL)
    assert error.retryable and "unexpected host" in error.message


async def test_timeout_cancels_the_request(fake: FakeFal, context: ProviderContext) -> None:
    fake.never_complete = True
    error = await upstream_failure(provider(fake, context, poll_timeout_s=0.3), gen(), SCHNELL)
    assert error.timeout and error.retryable and error.status == 504
    assert fake.calls[-1].method == "PUT" and fake.calls[-1].path.endswith("/cancel")
    [entry] = fake.requests.values()
    assert entry["cancelled"]


def test_builtin_catalog_lists_fal_endpoints() -> None:
    catalog = Catalog.load()
    for model_id, upstream in [
        ("black-forest-labs/flux-1-schnell", SCHNELL),
        ("black-forest-labs/flux-1.1-pro", PRO),
        ("black-forest-labs/flux-kontext-pro", KONTEXT),
        ("fal-ai/flux-dev-image-to-image", IMG2IMG),
        ("fal-ai/flux-lora-inpainting", INPAINT),
    ]:
        endpoints = {e.provider: e for e in catalog.resolve(model_id).endpoints}
        assert endpoints["fal"].upstream_model == upstream
        assert endpoints["fal"].pricing.configured
    assert catalog.resolve("fal-ai/flux-lora-inpainting").supports_mask
