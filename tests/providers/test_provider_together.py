"""The ``together`` adapter against a loopback fake of Together's image endpoint."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from adapter_support import adapter, default_base_url, png, refusal, upstream_failure
from fakes.http_server import free_port
from fakes.together import KNOWN_FIELDS, FakeTogether, serve_fake
from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest
from imagegate.providers.base import ProviderContext
from imagegate.providers.together import TogetherProvider
from imagegate.routing.router import upstream_errors
from request_support import image_request

SCHNELL = "black-forest-labs/FLUX.1-schnell"
KONTEXT = "black-forest-labs/FLUX.1-kontext-pro"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTogether]:
    with serve_fake(FakeTogether()) as running:
        yield running


def provider(
    fake: FakeTogether, context: ProviderContext, api_key: str | None = None, **options: Any
) -> TogetherProvider:
    return adapter(
        TogetherProvider,
        context,
        base_url=f"{fake.url}/v1",
        api_key=api_key or fake.api_key,
        timeout_s=10,
        **options,
    )


def request(**fields: Any) -> ImageRequest:
    fields.setdefault("prompt", "a lighthouse at dusk")
    return image_request(operation=fields.pop("operation", "generate"), model="m", **fields)


async def test_generate_sends_documented_fields_and_decodes_base64(
    fake: FakeTogether, context: ProviderContext
) -> None:
    together = provider(fake, context)
    result = await together.run(
        request(size="1024x768", width=1024, height=768, seed=7, extra={"steps": 4}), SCHNELL
    )
    [call] = fake.calls
    assert call.auth == f"Bearer {fake.api_key}"
    assert call.body == {
        "model": SCHNELL,
        "prompt": "a lighthouse at dusk",
        "width": 1024,
        "height": 768,
        "n": 1,
        "seed": 7,
        "steps": 4,
        "response_format": "base64",
    }
    [image] = result.images
    assert (image.width, image.height, image.format) == (1024, 768, "jpeg")
    assert result.upstream_model == SCHNELL


async def test_output_format_png_is_passed_and_webp_left_to_the_gateway(
    fake: FakeTogether, context: ProviderContext
) -> None:
    together = provider(fake, context)
    result = await together.run(request(output_format="png"), SCHNELL)
    assert fake.calls[0].body["output_format"] == "png"
    assert result.images[0].format == "png"
    await together.run(request(output_format="webp"), SCHNELL)
    assert "output_format" not in fake.calls[1].body


async def test_url_results_are_fetched_not_returned(
    fake: FakeTogether, context: ProviderContext
) -> None:
    result = await provider(fake, context, response_format="url").run(request(n=2), SCHNELL)
    assert fake.calls[0].body["response_format"] == "url"
    assert [(i.width, i.height, i.format) for i in result.images] == [(1024, 1024, "jpeg")] * 2


async def test_a_result_url_that_fails_is_retryable(
    fake: FakeTogether, context: ProviderContext
) -> None:
    fake.break_urls = True
    error = await upstream_failure(
        provider(fake, context, response_format="url"), request(), SCHNELL
    )
    assert error.retryable


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        ((1000, 700), (1008, 704)),  # rounded to multiples of 16
        ((1024, 1024), (1024, 1024)),
        ((4000, 2000), (1920, 960)),  # scaled into 1920 keeping 2:1
        ((300, 1900), (304, 1904)),
    ],
)
async def test_size_is_fitted_to_togethers_bounds(
    fake: FakeTogether,
    context: ProviderContext,
    asked: tuple[int, int],
    sent: tuple[int, int],
) -> None:
    width, height = asked
    result = await provider(fake, context).run(
        request(size=f"{width}x{height}", width=width, height=height), SCHNELL
    )
    assert (fake.calls[0].body["width"], fake.calls[0].body["height"]) == sent
    assert (result.images[0].width, result.images[0].height) == sent


async def test_n_fans_out_in_batches_of_four_with_distinct_seeds(
    fake: FakeTogether, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(request(n=6, seed=100), SCHNELL)
    assert len(result.images) == 6
    sent = sorted((c.body["n"], c.body["seed"]) for c in fake.calls)
    assert sent == [(2, 104), (4, 100)]


async def test_a_short_batch_is_topped_up(fake: FakeTogether, context: ProviderContext) -> None:
    fake.short_by = 1
    result = await provider(fake, context).run(request(n=3), SCHNELL)
    assert len(result.images) == 3
    assert [c.body["n"] for c in fake.calls] == [3, 1]


async def test_kontext_edit_sends_the_image_as_a_data_url(
    fake: FakeTogether, context: ProviderContext
) -> None:
    source = png(640, 480)
    result = await provider(fake, context).run(
        request(operation="edit", images=[source], size="auto", width=640, height=480), KONTEXT
    )
    body = fake.calls[0].body
    prefix = "data:image/png;base64,"
    assert body["image_url"].startswith(prefix)
    assert base64.b64decode(body["image_url"].removeprefix(prefix)) == source.data
    assert (body["width"], body["height"]) == (640, 480)
    assert (result.images[0].width, result.images[0].height) == (640, 480)


async def test_edit_with_a_mask_is_refused_before_any_call(
    fake: FakeTogether, context: ProviderContext
) -> None:
    error = await refusal(
        provider(fake, context),
        request(operation="edit", images=[png(64, 64)], mask=png(64, 64)),
        KONTEXT,
    )
    assert error.param == "mask"
    assert fake.calls == []


async def test_edit_with_two_images_names_the_limit(
    fake: FakeTogether, context: ProviderContext
) -> None:
    error = await refusal(
        provider(fake, context),
        request(operation="edit", images=[png(64, 64), png(64, 64)]),
        KONTEXT,
    )
    assert (error.param, error.code) == ("image", "too_many_images")
    assert "at most 1" in error.message


async def test_variation_is_not_supported(fake: FakeTogether, context: ProviderContext) -> None:
    with pytest.raises(InvalidRequest):
        await provider(fake, context).run(
            request(operation="variation", prompt=None, images=[png(64, 64)]), SCHNELL
        )


async def test_wrong_key_fails_over(fake: FakeTogether, context: ProviderContext) -> None:
    error = await upstream_failure(provider(fake, context, api_key="wrong"), request(), SCHNELL)
    assert (error.status, error.retryable) == (401, True)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_wait"),
    [(429, "7", 7.0), (500, None, None), (503, None, None), (402, None, None)],
)
async def test_upstream_failures_are_retryable(
    fake: FakeTogether,
    context: ProviderContext,
    status: int,
    retry_after: str | None,
    expected_wait: float | None,
) -> None:
    fake.fail = (status, "The engine is currently overloaded", None)
    fake.retry_after = retry_after
    error = await upstream_failure(provider(fake, context), request(), SCHNELL)
    assert error.retryable
    assert error.status == status
    assert error.retry_after_s == expected_wait


async def test_bad_request_is_the_callers_and_keeps_the_message(
    fake: FakeTogether, context: ProviderContext
) -> None:
    fake.fail = (400, "steps must be between 1 and 4 for this model", None)
    error = await upstream_failure(provider(fake, context), request(extra={"steps": 50}), SCHNELL)
    assert not error.retryable
    client = error.client_error
    assert isinstance(client, InvalidRequest)
    assert "steps must be between 1 and 4" in client.message


async def test_nsfw_rejection_is_a_content_policy_violation(
    fake: FakeTogether, context: ProviderContext
) -> None:
    fake.fail = (422, "NSFW content was detected in the prompt", None)
    error = await upstream_failure(provider(fake, context), request(), SCHNELL)
    assert not error.retryable
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"


async def test_connection_refused_is_retryable(context: ProviderContext) -> None:
    config = ProviderConfig(
        id="together", type="together", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k"
    )
    together = TogetherProvider(config, context)
    # The router turns transport failures into attempt errors for every adapter alike.
    with pytest.raises(UpstreamError) as info, upstream_errors(together, "timed out"):
        await together.run(request(), SCHNELL)
    assert info.value.retryable and "could not reach together" in info.value.message


async def test_defaults_point_at_together() -> None:
    base_url = await default_base_url(TogetherProvider, "TOGETHER_API_KEY")
    assert base_url == "https://api.together.xyz/v1"
    assert TogetherProvider.type_name == "together"


async def test_a_caller_cannot_disable_the_safety_checker(
    fake: FakeTogether, context: ProviderContext
) -> None:
    extra = {"disable_safety_checker": True, "steps": 4}
    await provider(fake, context).run(request(extra=extra), SCHNELL)
    body = fake.calls[-1].body
    assert "disable_safety_checker" not in body and body["steps"] == 4


async def test_account_failures_are_ours_and_a_retired_model_is_gone(
    fake: FakeTogether, context: ProviderContext
) -> None:
    fake.account = "spending_limit"
    error = await upstream_failure(provider(fake, context), request(), SCHNELL)
    assert error.status == 402 and error.retryable and error.ours
    fake.account = None
    fake.retired.add(SCHNELL)
    error = await upstream_failure(provider(fake, context), request(), SCHNELL)
    assert error.model_gone and error.client_error is None


async def test_only_the_sdks_fields_are_sent(fake: FakeTogether, context: ProviderContext) -> None:
    """The fake does not reject unknown fields (no page says Together does), so this
    checks the adapter itself against the SDK's field list."""
    await provider(fake, context).run(request(n=6, seed=3, size="1024x768"), SCHNELL)
    await provider(fake, context).run(
        request(operation="edit", images=[png(64, 64)], size="auto", width=64, height=64),
        KONTEXT,
    )
    for call in fake.calls:
        assert set(call.body) <= KNOWN_FIELDS, call.body
