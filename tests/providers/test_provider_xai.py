"""The ``xai`` adapter against a loopback fake of xAI's image API."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapter_support import adapter, default_base_url, png, refusal, upstream_failure
from fakes.xai import FakeXAI, serve_fake
from imagegate.core.errors import InvalidRequest
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest
from imagegate.providers.base import ProviderContext
from imagegate.providers.xai import XAIProvider
from request_support import image_request

MODEL = "grok-imagine-image"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeXAI]:
    with serve_fake(FakeXAI()) as running:
        yield running


def provider(
    fake: FakeXAI, context: ProviderContext, api_key: str | None = None, **options: Any
) -> XAIProvider:
    return adapter(
        XAIProvider,
        context,
        base_url=f"{fake.url}/v1",
        api_key=api_key or fake.api_key,
        timeout_s=10,
        **options,
    )


def request(**fields: Any) -> ImageRequest:
    fields.setdefault("prompt", "a fox in the snow")
    return image_request(operation=fields.pop("operation", "generate"), model="m", **fields)


async def test_generate_auto_size_sends_no_size_fields(
    fake: FakeXAI, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(request(user="u-1"), MODEL)
    [call] = fake.calls
    assert call.path == "/v1/images/generations"
    assert call.auth == f"Bearer {fake.api_key}"
    assert call.body == {
        "model": MODEL,
        "prompt": "a fox in the snow",
        "n": 1,
        "response_format": "b64_json",
        "user": "u-1",
    }
    [image] = result.images
    assert (image.width, image.height, image.format) == (1024, 1024, "jpeg")
    assert image.revised_prompt == "a fox in the snow"


async def test_seed_is_not_sent(fake: FakeXAI, context: ProviderContext) -> None:
    await provider(fake, context).run(request(seed=5), MODEL)
    assert "seed" not in fake.calls[0].body
    assert not XAIProvider.capabilities.supports_seed


@pytest.mark.parametrize(
    ("size", "ratio", "resolution", "produced"),
    [
        ("1024x1024", "1:1", "1k", (1024, 1024)),
        ("1536x1024", "3:2", "1k", (1024, 683)),
        ("1024x1536", "2:3", "1k", (683, 1024)),
        ("1920x1080", "16:9", "1k", (1024, 576)),
        ("2048x2048", "1:1", "2k", (2048, 2048)),
        ("2048x1024", "2:1", "1k", (1024, 512)),  # exactly 2 MP stays 1k
        ("2048x1152", "16:9", "2k", (2048, 1152)),
        ("600x1300", "9:19.5", "1k", (473, 1024)),
    ],
)
async def test_size_maps_to_aspect_ratio_and_resolution(
    fake: FakeXAI,
    context: ProviderContext,
    size: str,
    ratio: str,
    resolution: str,
    produced: tuple[int, int],
) -> None:
    width, height = map(int, size.split("x"))
    result = await provider(fake, context).run(
        request(size=size, width=width, height=height), MODEL
    )
    body = fake.calls[0].body
    assert (body["aspect_ratio"], body["resolution"]) == (ratio, resolution)
    assert "size" not in body
    assert (result.images[0].width, result.images[0].height) == produced


async def test_n_is_one_call(fake: FakeXAI, context: ProviderContext) -> None:
    result = await provider(fake, context).run(request(n=10), MODEL)
    assert len(result.images) == 10
    assert [c.body["n"] for c in fake.calls] == [10]


async def test_a_short_reply_is_topped_up(fake: FakeXAI, context: ProviderContext) -> None:
    fake.short_by = 1
    result = await provider(fake, context).run(request(n=4), MODEL)
    assert len(result.images) == 4
    assert [c.body["n"] for c in fake.calls] == [4, 1]


async def test_url_results_are_fetched(fake: FakeXAI, context: ProviderContext) -> None:
    result = await provider(fake, context, response_format="url").run(request(n=2), MODEL)
    assert fake.calls[0].body["response_format"] == "url"
    assert [(i.width, i.height) for i in result.images] == [(1024, 1024)] * 2


async def test_a_result_url_that_fails_is_retryable(
    fake: FakeXAI, context: ProviderContext
) -> None:
    fake.break_urls = True
    error = await upstream_failure(provider(fake, context, response_format="url"), request(), MODEL)
    assert error.retryable


async def test_single_image_edit_keeps_the_input_ratio(
    fake: FakeXAI, context: ProviderContext
) -> None:
    source = png(800, 400)
    result = await provider(fake, context).run(
        request(operation="edit", images=[source], size="800x400", width=800, height=400), MODEL
    )
    [call] = fake.calls
    assert call.path == "/v1/images/edits"
    assert set(call.body) == {"model", "prompt", "n", "response_format", "resolution", "image"}
    assert call.body["image"]["type"] == "image_url"
    url = call.body["image"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.partition(",")[2]) == source.data
    assert (result.images[0].width, result.images[0].height) == (1024, 512)


async def test_multi_image_edit_sends_images_and_ratio(
    fake: FakeXAI, context: ProviderContext
) -> None:
    sources = [png(64, 64), png(96, 64), png(64, 96)]
    result = await provider(fake, context).run(
        request(operation="edit", images=sources, size="1024x768", width=1024, height=768, n=2),
        MODEL,
    )
    body = fake.calls[0].body
    assert "image" not in body
    assert [s["type"] for s in body["images"]] == ["image_url"] * 3
    assert body["aspect_ratio"] == "4:3"
    assert [(i.width, i.height) for i in result.images] == [(1024, 768)] * 2


async def test_edit_with_a_mask_is_refused(fake: FakeXAI, context: ProviderContext) -> None:
    error = await refusal(
        provider(fake, context),
        request(operation="edit", images=[png(64, 64)], mask=png(64, 64)),
        MODEL,
    )
    assert error.param == "mask"
    assert fake.calls == []


async def test_four_images_name_the_limit(fake: FakeXAI, context: ProviderContext) -> None:
    error = await refusal(
        provider(fake, context), request(operation="edit", images=[png(32, 32)] * 4), MODEL
    )
    assert (error.param, error.code) == ("image", "too_many_images")
    assert "at most 3" in error.message


async def test_variation_is_not_supported(fake: FakeXAI, context: ProviderContext) -> None:
    with pytest.raises(InvalidRequest):
        await provider(fake, context).run(
            request(operation="variation", prompt=None, images=[png(64, 64)]), MODEL
        )


async def test_incorrect_key_400_fails_over_as_401(fake: FakeXAI, context: ProviderContext) -> None:
    error = await upstream_failure(provider(fake, context, api_key="wrong"), request(), MODEL)
    assert error.retryable
    assert error.status == 400
    assert error.client_error is None


async def test_missing_key_401_fails_over(fake: FakeXAI, context: ProviderContext) -> None:
    config = ProviderConfig(id="xai", type="xai", base_url=f"{fake.url}/v1")
    error = await upstream_failure(XAIProvider(config, context), request(), MODEL)
    assert (error.status, error.retryable) == (401, True)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_wait"),
    [(429, "3", 3.0), (500, None, None), (503, None, None), (403, None, None)],
)
async def test_upstream_failures_are_retryable(
    fake: FakeXAI,
    context: ProviderContext,
    status: int,
    retry_after: str | None,
    expected_wait: float | None,
) -> None:
    fake.fail = (status, "Service temporarily unavailable")
    fake.retry_after = retry_after
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    assert error.retryable
    assert error.status == status
    assert error.retry_after_s == expected_wait


async def test_invalid_argument_is_the_callers_and_keeps_the_message(
    fake: FakeXAI, context: ProviderContext
) -> None:
    fake.fail = (400, "Prompt is too long: at most 8000 characters")
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    assert not error.retryable
    client = error.client_error
    assert isinstance(client, InvalidRequest)
    assert "Prompt is too long" in client.message
    assert client.code == "upstream_rejected"  # the flat shape's sentence-code is not kept


async def test_moderation_rejection_is_a_content_policy_violation(
    fake: FakeXAI, context: ProviderContext
) -> None:
    fake.fail = (400, "Generated image rejected by content moderation.")
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"


async def test_withheld_image_is_a_content_policy_violation(
    fake: FakeXAI, context: ProviderContext
) -> None:
    fake.withhold = True
    error = await upstream_failure(provider(fake, context, response_format="url"), request(), MODEL)
    assert not error.retryable
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"


async def test_openai_shaped_errors_are_read_too(fake: FakeXAI, context: ProviderContext) -> None:
    fake.error_shape = "nested"
    fake.fail = (422, "Invalid value for aspect_ratio: 5:1")
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    client = error.client_error
    assert client is not None
    assert client.message == "Upstream xai: Invalid value for aspect_ratio: 5:1"
    assert client.code == "invalid_value"


async def test_defaults_point_at_xai() -> None:
    assert await default_base_url(XAIProvider, "XAI_API_KEY") == "https://api.x.ai/v1"
    assert XAIProvider.type_name == "xai"


# --- account-level failures and strictness (fakes/xai.py cites the pages) --------------


@pytest.mark.parametrize("status", [429, 403])
async def test_exhausted_credits_are_ours_and_not_waited_out(
    fake: FakeXAI, context: ProviderContext, status: int
) -> None:
    fake.out_of_credits = status
    fake.retry_after = "30"
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    assert error.retryable and error.ours
    assert error.client_error is None
    assert error.retry_after_s is None  # waiting does not buy credits


async def test_a_plain_rate_limit_is_waited_out_and_not_ours(
    fake: FakeXAI, context: ProviderContext
) -> None:
    fake.fail = (429, "You have reached your rate limit")
    fake.retry_after = "2"
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    assert error.retryable and not error.ours
    assert error.retry_after_s == 2.0


async def test_a_retired_model_is_gone_and_ours(fake: FakeXAI, context: ProviderContext) -> None:
    fake.retired = {MODEL}
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    assert (error.status, error.retryable) == (404, True)
    assert error.model_gone and error.client_error is None


async def test_a_blocked_team_is_ours(fake: FakeXAI, context: ProviderContext) -> None:
    fake.blocked = True
    error = await upstream_failure(provider(fake, context), request(), MODEL)
    assert (error.status, error.retryable) == (403, True)
    assert error.client_error is None


async def test_the_fake_refuses_what_xai_refuses(fake: FakeXAI) -> None:
    """The fake itself: no JSON content type is 415, no key is 401, an unknown model 404,
    size/style 400 (documented as not supported), quality is accepted."""
    url = f"{fake.url}/v1/images/generations"
    key = {"Authorization": f"Bearer {fake.api_key}"}
    body = {"model": MODEL, "prompt": "p", "response_format": "b64_json"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, content=b"model=x", headers=key)).status_code == 415
        assert (await http.post(url, json=body)).status_code == 401
        missing = await http.post(url, json={**body, "model": "grok-9"}, headers=key)
        assert missing.status_code == 404
        for name in ("size", "style"):
            assert (await http.post(url, json={**body, name: "x"}, headers=key)).status_code == 400
        ok = await http.post(url, json={**body, "quality": "high"}, headers=key)
        assert ok.status_code == 200, ok.text


async def test_only_documented_fields_are_sent(fake: FakeXAI, context: ProviderContext) -> None:
    await provider(fake, context).run(request(size="1536x1024", user="u1", n=2), MODEL)
    await provider(fake, context).run(
        request(operation="edit", images=[png(64, 64), png(32, 64)]), MODEL
    )
    documented = {"model", "prompt", "n", "response_format", "aspect_ratio", "resolution"}
    documented |= {"quality", "user", "image", "images"}
    for call in fake.calls:
        assert set(call.body) <= documented, call.body
