"""The ``replicate`` adapter against a loopback fake of Replicate's predictions API."""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from PIL import Image

import adapter_support
from adapter_support import adapter, edit, gen, refusal, upstream_failure
from fakes.replicate import VERSIONED, FakeReplicate, decode_data_url, serve_fake
from imagegate.catalog.catalog import Catalog
from imagegate.core.errors import InvalidRequest
from imagegate.providers.base import ProviderContext
from imagegate.providers.replicate import ReplicateProvider
from request_support import image_request

SCHNELL = "black-forest-labs/flux-schnell"
PRO = "black-forest-labs/flux-1.1-pro"
KONTEXT = "black-forest-labs/flux-kontext-pro"
FILL = "black-forest-labs/flux-fill-pro"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeReplicate]:
    with serve_fake(FakeReplicate()) as running:
        yield running


def provider(
    fake: FakeReplicate, context: ProviderContext, token: str = "r8_fake", **options: Any
) -> ReplicateProvider:
    options = {"poll_interval_s": 0.02, **options}
    return adapter(
        ReplicateProvider,
        context,
        base_url=f"{fake.url}/v1",
        api_key=token,
        timeout_s=20,
        **options,
    )


png = partial(adapter_support.png, mode="RGBA", colour=(200, 100, 50, 255))


# -- generate ---------------------------------------------------------------------------


async def test_generate_waits_synchronously_and_fetches_outputs(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(gen(width=1344, height=768), SCHNELL)

    [call] = fake.creations
    assert call.path == f"/v1/models/{SCHNELL}/predictions"
    assert call.auth == "Bearer r8_fake"
    assert call.prefer == "wait"
    assert call.body == {
        "input": {
            "prompt": "a red fox",
            "aspect_ratio": "16:9",
            "output_format": "png",
            "num_outputs": 1,
        }
    }
    [image] = result.images
    assert (image.format, image.width, image.height) == ("png", 1360, 768)
    assert result.upstream_model == SCHNELL
    assert not [c for c in fake.calls if c.method == "GET"]  # no polling was needed


async def test_output_format_compression_and_seed_pass_through(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    request = gen(output_format="webp", output_compression=70, seed=42, extra={"go_fast": False})
    result = await provider(fake, context).run(request, SCHNELL)

    [inputs] = fake.inputs
    assert inputs["output_format"] == "webp"
    assert inputs["output_quality"] == 70
    assert inputs["seed"] == 42
    assert inputs["go_fast"] is False
    assert result.images[0].format == "webp"


async def test_jpeg_is_asked_for_as_jpg(fake: FakeReplicate, context: ProviderContext) -> None:
    result = await provider(fake, context).run(gen(output_format="jpeg"), KONTEXT)
    assert fake.inputs[0]["output_format"] == "jpg"
    assert result.images[0].format == "jpeg"


async def test_unsupported_format_falls_back_to_the_models_own(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(gen(output_format="webp"), KONTEXT)
    assert fake.inputs[0]["output_format"] == "jpg"  # the gateway re-encodes to webp
    assert result.images[0].format == "jpeg"


async def test_n_uses_num_outputs_then_fans_out_with_distinct_seeds(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(gen(n=6, seed=7), SCHNELL)

    assert len(result.images) == 6
    assert sorted((i["num_outputs"], i["seed"]) for i in fake.inputs) == [(2, 8), (4, 7)]


async def test_n_fans_out_for_single_output_models(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(gen(n=3), PRO)

    assert len(result.images) == 3
    assert len(fake.creations) == 3
    assert all("num_outputs" not in i for i in fake.inputs)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 1024), {"aspect_ratio": "custom", "width": 1024, "height": 1024}),
        ((1000, 700), {"aspect_ratio": "custom", "width": 992, "height": 704}),
        ((1440, 256), {"aspect_ratio": "custom", "width": 1440, "height": 256}),
    ],
)
async def test_flux_pro_takes_the_exact_size_in_multiples_of_32(
    fake: FakeReplicate,
    context: ProviderContext,
    size: tuple[int, int],
    expected: dict[str, Any],
) -> None:
    result = await provider(fake, context).run(gen(width=size[0], height=size[1]), PRO)

    assert {k: fake.inputs[0][k] for k in expected} == expected
    assert (result.images[0].width, result.images[0].height) == (
        expected["width"],
        expected["height"],
    )


@pytest.mark.parametrize(
    ("size", "ratio"),
    [((1024, 1024), "1:1"), ((1536, 640), "21:9"), ((768, 1024), "3:4"), ((512, 1024), "1:2")],
)
async def test_other_models_get_the_nearest_aspect_ratio(
    fake: FakeReplicate, context: ProviderContext, size: tuple[int, int], ratio: str
) -> None:
    await provider(fake, context).run(gen(width=size[0], height=size[1]), KONTEXT)
    assert fake.inputs[0]["aspect_ratio"] == ratio


async def test_versioned_models_use_the_predictions_endpoint(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(gen(), VERSIONED)

    [call] = fake.creations
    assert call.path == "/v1/predictions"
    assert call.body["version"] == VERSIONED
    assert len(result.images) == 1


# -- polling ----------------------------------------------------------------------------


async def test_unfinished_wait_falls_back_to_polling(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    fake.polls_before_done = 2
    result = await provider(fake, context, wait_s=5).run(gen(), PRO)

    assert fake.creations[0].prefer == "wait=5"
    gets = [c for c in fake.calls if c.method == "GET"]
    assert len(gets) == 3
    assert all(c.auth == "Bearer r8_fake" for c in gets)
    assert len(result.images) == 1


async def test_asynchronous_create_without_prefer_header(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    result = await provider(fake, context, wait_s=0).run(gen(), SCHNELL)

    assert fake.creations[0].prefer is None
    assert [c.method for c in fake.calls] == ["POST", "GET"]
    assert len(result.images) == 1


@pytest.mark.parametrize(
    ("outcome", "said"),
    [("failed", "CUDA out of memory"), ("canceled", "canceled")],
    ids=["failed", "canceled"],
)
async def test_failed_or_canceled_prediction_is_retryable(
    fake: FakeReplicate, context: ProviderContext, outcome: str, said: str
) -> None:
    fake.outcome = outcome
    error = await upstream_failure(provider(fake, context), gen(), SCHNELL)
    assert error.retryable
    assert said in error.message


async def test_failed_after_polling(fake: FakeReplicate, context: ProviderContext) -> None:
    fake.outcome, fake.polls_before_done = "failed", 1
    error = await upstream_failure(provider(fake, context, wait_s=1), gen(), SCHNELL)
    assert error.retryable and error.status == 502


async def test_nsfw_failure_is_a_content_policy_violation(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    error = await upstream_failure(provider(fake, context), gen("nsfw please"), SCHNELL)
    assert not error.retryable
    client = error.client_error
    assert isinstance(client, InvalidRequest)
    assert client.code == "content_policy_violation"
    assert "NSFW content detected" in client.message


async def test_timeout_cancels_the_prediction(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    fake.outcome, fake.polls_before_done = "never", 1
    slow = provider(fake, context, wait_s=1, poll_timeout_s=0.3)
    error = await upstream_failure(slow, gen(), SCHNELL)
    assert error.timeout and error.retryable and error.status == 504
    assert fake.calls[-1].method == "POST" and fake.calls[-1].path.endswith("/cancel")
    [prediction] = fake.predictions.values()
    assert prediction["status"] == "canceled"


# -- errors -----------------------------------------------------------------------------


async def test_bad_token_is_retryable(fake: FakeReplicate, context: ProviderContext) -> None:
    error = await upstream_failure(provider(fake, context, token="wrong"), gen(), SCHNELL)
    assert error.status == 401 and error.retryable


async def test_throttling_keeps_retry_after(fake: FakeReplicate, context: ProviderContext) -> None:
    fake.http_error = (
        429,
        "Request was throttled. Expected available in 7 seconds.",
        {"Retry-After": "7"},
    )
    error = await upstream_failure(provider(fake, context), gen(), SCHNELL)
    assert error.retryable and error.retry_after_s == 7.0


async def test_server_error_is_retryable(fake: FakeReplicate, context: ProviderContext) -> None:
    fake.http_error = (500, "Internal server error", {})
    error = await upstream_failure(provider(fake, context), gen(), SCHNELL)
    assert error.retryable and error.status == 500


async def test_validation_error_is_the_callers_with_upstream_detail(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    error = await upstream_failure(provider(fake, context), gen(extra={"bogus": 1}), SCHNELL)
    assert not error.retryable
    client = error.client_error
    assert isinstance(client, InvalidRequest) and client.status == 400
    assert "Additional property bogus is not allowed" in client.message


async def test_outputs_on_unexpected_hosts_are_refused(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    fake.foreign_output = True
    error = await upstream_failure(provider(fake, context), gen(), SCHNELL)
    assert error.retryable and "unexpected host" in error.message


# -- edits ------------------------------------------------------------------------------


async def test_instruction_edit_matches_the_input_image(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    source = png(640, 480)
    result = await provider(fake, context).run(edit([source], width=640, height=480), KONTEXT)

    [inputs] = fake.inputs
    assert inputs["aspect_ratio"] == "match_input_image"
    assert decode_data_url(inputs["input_image"]) == source.data
    assert inputs["input_image"].startswith("data:image/png;base64,")
    assert (result.images[0].width, result.images[0].height) == (640, 480)


async def test_instruction_edit_with_an_explicit_size_asks_for_its_ratio(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    request = edit([png(640, 480)], size="1024x576", width=1024, height=576)
    await provider(fake, context).run(request, KONTEXT)
    assert fake.inputs[0]["aspect_ratio"] == "16:9"


async def test_mask_is_refused_by_instruction_models(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    error = await refusal(
        provider(fake, context), edit([png(64, 64)], mask=png(64, 64, hole=(0, 0, 8, 8))), KONTEXT
    )
    assert error.param == "mask"
    assert not fake.calls


async def test_masked_edit_sends_white_means_edit_resized_to_the_image(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    source = png(256, 128)
    mask = png(128, 64, hole=(0, 0, 32, 32))  # transparent top-left = edit, half scale
    result = await provider(fake, context).run(edit([source], mask=mask), FILL)

    [inputs] = fake.inputs
    assert decode_data_url(inputs["image"]) == source.data
    with Image.open(io.BytesIO(decode_data_url(inputs["mask"]))) as sent:
        assert sent.size == (256, 128)
        assert sent.mode == "L"
        assert sent.getpixel((10, 10)) == 255  # inside the hole: edit
        assert sent.getpixel((200, 100)) == 0  # elsewhere: keep
    assert "aspect_ratio" not in inputs
    assert (result.images[0].width, result.images[0].height) == (256, 128)


async def test_masked_model_without_mask_uses_the_images_transparency(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    await provider(fake, context).run(edit([png(64, 64, hole=(0, 0, 16, 16))]), FILL)
    with Image.open(io.BytesIO(decode_data_url(fake.inputs[0]["mask"]))) as sent:
        assert sent.getpixel((4, 4)) == 255 and sent.getpixel((40, 40)) == 0


async def test_masked_model_without_any_mask_edits_everywhere(
    fake: FakeReplicate, context: ProviderContext
) -> None:
    await provider(fake, context).run(edit([png(64, 64)]), FILL)
    with Image.open(io.BytesIO(decode_data_url(fake.inputs[0]["mask"]))) as sent:
        assert sent.getextrema() == (255, 255)


async def test_too_many_input_images(fake: FakeReplicate, context: ProviderContext) -> None:
    error = await refusal(provider(fake, context), edit([png(64, 64), png(64, 64)]), KONTEXT)
    assert error.code == "too_many_images" and error.param == "image"
    assert "at most 1" in error.message


async def test_variations_are_not_offered(fake: FakeReplicate, context: ProviderContext) -> None:
    request = image_request(operation="variation", model="m", images=[png(64, 64)])
    with pytest.raises(InvalidRequest):
        await provider(fake, context).run(request, SCHNELL)


def test_builtin_catalog_lists_replicate_endpoints() -> None:
    catalog = Catalog.load()
    for model_id, upstream in [
        ("black-forest-labs/flux-1-schnell", SCHNELL),
        ("black-forest-labs/flux-1.1-pro", PRO),
        ("black-forest-labs/flux-kontext-pro", KONTEXT),
    ]:
        endpoints = {e.provider: e for e in catalog.resolve(model_id).endpoints}
        assert endpoints["replicate"].upstream_model == upstream
        assert endpoints["replicate"].pricing.configured
