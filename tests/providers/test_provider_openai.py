"""The ``openai`` adapter against a loopback fake of OpenAI's Images API."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from adapter_support import png, run_once, white_mask
from fakes.openai_platform import Failure, FakeOpenAIPlatform, serve
from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest, ImageResult
from imagegate.providers.base import ProviderContext
from imagegate.providers.openai.provider import OpenAIProvider, upstream_size
from request_support import image_request


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIPlatform]:
    with serve(FakeOpenAIPlatform()) as fake:
        yield fake


async def run(
    fake: FakeOpenAIPlatform,
    request: ImageRequest,
    model: str,
    *,
    api_key: str = "sk-test",
    **options: Any,
) -> ImageResult:
    base_url = f"{fake.url}/v1"
    return await run_once(
        OpenAIProvider, fake.url, request, model, base_url=base_url, api_key=api_key, **options
    )


def request(operation: str = "generate", **kwargs: Any) -> ImageRequest:
    kwargs.setdefault("prompt", None if operation == "variation" else "a lighthouse")
    return image_request(operation=operation, model="m", **kwargs)


async def test_generate_gpt_image_sends_its_fields_and_reads_usage(
    fake: FakeOpenAIPlatform,
) -> None:
    req = request(
        size="1536x1024",
        width=1536,
        height=1024,
        quality="high",
        background="opaque",
        output_format="jpeg",
        output_compression=60,
        moderation="low",
        user="u-1",
        seed=7,
        extra={"negative_prompt": "fog"},
    )
    result = await run(fake, req, "gpt-image-1", pass_through=["moderation"])
    (call,) = fake.calls
    assert call.path == "/v1/images/generations"
    assert call.headers["authorization"] == "Bearer sk-test"
    assert call.headers["content-type"] == "application/json"
    assert call.fields == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "background": "opaque",
        "output_format": "jpeg",
        "output_compression": 60,
        "moderation": "low",
        "user": "u-1",
    }
    (image,) = result.images
    assert (image.format, image.width, image.height) == ("jpeg", 1536, 1024)
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (10, 100)
    assert result.usage.input_tokens_details == {"text_tokens": 10, "image_tokens": 0}
    assert (result.quality, result.background, result.upstream_model) == (
        "medium",
        "opaque",
        "gpt-image-1",
    )


async def test_compression_only_with_a_lossy_format(fake: FakeOpenAIPlatform) -> None:
    await run(fake, request(output_compression=50), "gpt-image-1-mini")
    await run(fake, request(output_format="png", output_compression=50), "gpt-image-1.5")
    await run(fake, request(output_format="webp", output_compression=50), "gpt-image-1.5")
    assert "output_compression" not in fake.calls[0].fields
    assert "output_compression" not in fake.calls[1].fields
    assert fake.calls[2].fields["output_compression"] == 50
    assert fake.calls[2].fields["output_format"] == "webp"


@pytest.mark.parametrize(
    ("model", "size", "width", "height", "sent"),
    [
        ("gpt-image-1", "auto", 1024, 1024, "auto"),
        ("gpt-image-1", "1600x900", 1600, 900, "1536x1024"),
        ("gpt-image-1.5", "900x1600", 900, 1600, "1024x1536"),
        ("gpt-image-1-mini", "512x512", 512, 512, "1024x1024"),
        ("gpt-image-2", "1536x864", 1536, 864, "1536x864"),
        ("gpt-image-2", "auto", 1024, 1024, "auto"),
        ("dall-e-3", "1920x1080", 1920, 1080, "1792x1024"),
        ("dall-e-3", "1000x2000", 1000, 2000, "1024x1792"),
        ("dall-e-3", "1024x1024", 1024, 1024, "1024x1024"),
        ("dall-e-2", "300x300", 300, 300, "256x256"),
        ("dall-e-2", "700x700", 700, 700, "512x512"),
        ("dall-e-2", "1024x768", 1024, 768, "1024x1024"),
    ],
)
def test_size_mapping(model: str, size: str, width: int, height: int, sent: str) -> None:
    assert upstream_size(model, request(size=size, width=width, height=height)) == sent


async def test_mapped_size_is_what_comes_back(fake: FakeOpenAIPlatform) -> None:
    result = await run(fake, request(size="1920x1080", width=1920, height=1080), "dall-e-3")
    assert fake.calls[0].fields["size"] == "1792x1024"
    assert (result.images[0].width, result.images[0].height) == (1792, 1024)


async def test_dalle3_fans_out_one_image_per_call(fake: FakeOpenAIPlatform) -> None:
    req = request(n=3, quality="hd", style="natural", size="1024x1024")
    result = await run(fake, req, "dall-e-3")
    assert len(fake.calls) == 3
    for call in fake.calls:
        assert call.fields == {
            "model": "dall-e-3",
            "prompt": "a lighthouse",
            "n": 1,
            "size": "1024x1024",
            "quality": "hd",
            "style": "natural",
            "response_format": "b64_json",
        }
    assert len(result.images) == 3
    assert all(i.revised_prompt == "revised: a lighthouse" for i in result.images)
    assert result.usage is None


async def test_gpt_image_fans_out_beyond_ten_and_sums_usage(fake: FakeOpenAIPlatform) -> None:
    result = await run(fake, request(n=12), "gpt-image-1")
    assert sorted(call.fields["n"] for call in fake.calls) == [2, 10]
    assert len(result.images) == 12
    assert result.usage is not None
    assert result.usage.output_tokens == 1200 and result.usage.input_tokens == 20
    assert result.usage.input_tokens_details == {"text_tokens": 20, "image_tokens": 0}


async def test_dalle_gpt_only_fields_are_not_sent(fake: FakeOpenAIPlatform) -> None:
    req = request(
        output_format="webp",
        background="opaque",
        moderation="low",
        size="512x512",
        width=512,
        height=512,
    )
    result = await run(fake, req, "dall-e-2")
    assert fake.calls[0].fields == {
        "model": "dall-e-2",
        "prompt": "a lighthouse",
        "n": 1,
        "size": "512x512",
        "response_format": "b64_json",
    }
    assert result.images[0].format == "png"  # the gateway converts to webp


async def test_result_urls_are_fetched(fake: FakeOpenAIPlatform) -> None:
    fake.urls_always = True
    result = await run(fake, request(size="256x256", width=256, height=256), "dall-e-2")
    (image,) = result.images
    assert (image.format, image.width) == ("png", 256)
    assert image.data == next(iter(fake._files.values()))  # the bytes the URL served


async def test_edit_several_images_without_mask(fake: FakeOpenAIPlatform) -> None:
    images = [png(64, 64), png(32, 48)]
    req = request(
        "edit", images=images, input_fidelity="high", moderation="low", quality="low", n=2
    )
    result = await run(fake, req, "gpt-image-1")
    (call,) = fake.calls
    assert call.path == "/v1/images/edits"
    assert call.headers["content-type"].startswith("multipart/form-data")
    assert [data for _, data in call.files["image[]"]] == [images[0].data, images[1].data]
    assert [ctype for ctype, _ in call.files["image[]"]] == ["image/png", "image/png"]
    assert "mask" not in call.files and "image" not in call.files
    assert call.fields == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse",
        "n": "2",
        "size": "auto",
        "quality": "low",
        "input_fidelity": "high",
    }
    assert len(result.images) == 2


def mask_alpha(call_mask: bytes) -> Image.Image:
    mask = Image.open(io.BytesIO(call_mask))
    assert mask.format == "PNG" and mask.mode == "RGBA"
    return mask.getchannel("A")


async def test_edit_with_white_means_edit_mask_is_converted(fake: FakeOpenAIPlatform) -> None:
    image = png(64, 64)
    mask = white_mask(64, 64, (0, 0, 32, 64))  # left half white: edit there
    await run(fake, request("edit", images=[image], mask=mask), "gpt-image-1")
    (call,) = fake.calls
    assert [data for _, data in call.files["image"]] == [image.data]
    alpha = mask_alpha(call.files["mask"][0][1])
    assert alpha.getpixel((5, 5)) == 0 and alpha.getpixel((60, 5)) == 255


async def test_edit_with_openai_mask_keeps_its_meaning(fake: FakeOpenAIPlatform) -> None:
    bottom_half = (0, 32, 64, 64)  # transparent: edit there
    mask = png(64, 64, mode="RGBA", colour=(0, 0, 0, 255), hole=bottom_half)
    req = request("edit", images=[png(64, 64)], mask=mask, size="512x512", width=512, height=512)
    result = await run(fake, req, "dall-e-2")
    (call,) = fake.calls
    assert call.fields["response_format"] == "b64_json" and call.fields["size"] == "512x512"
    alpha = mask_alpha(call.files["mask"][0][1])
    assert alpha.getpixel((5, 5)) == 255 and alpha.getpixel((5, 60)) == 0
    assert result.images[0].width == 512


@pytest.mark.parametrize(("model", "count", "limit"), [("dall-e-2", 2, 1), ("gpt-image-1", 17, 16)])
async def test_too_many_images(
    fake: FakeOpenAIPlatform, model: str, count: int, limit: int
) -> None:
    req = request("edit", images=[png(16, 16)] * count)
    with pytest.raises(InvalidRequest) as info:
        await run(fake, req, model)
    assert info.value.code == "too_many_images" and info.value.param == "image"
    assert f"at most {limit} input" in info.value.message
    assert fake.calls == []


async def test_variation(fake: FakeOpenAIPlatform) -> None:
    image = png(64, 64)
    req = request("variation", images=[image], n=2, size="256x256", width=256, height=256)
    result = await run(fake, req, "dall-e-2")
    (call,) = fake.calls
    assert call.path == "/v1/images/variations"
    assert [data for _, data in call.files["image"]] == [image.data]
    assert call.fields == {
        "model": "dall-e-2",
        "n": "2",
        "size": "256x256",
        "response_format": "b64_json",
    }
    assert [(i.width, i.height) for i in result.images] == [(256, 256), (256, 256)]


async def test_variation_and_edit_need_a_model_that_has_them(fake: FakeOpenAIPlatform) -> None:
    with pytest.raises(InvalidRequest) as info:
        await run(fake, request("variation", images=[png(64, 64)]), "gpt-image-1")
    assert info.value.code == "unsupported_operation"
    with pytest.raises(InvalidRequest):
        await run(fake, request("edit", images=[png(64, 64)]), "dall-e-3")
    assert fake.calls == []


async def test_organization_and_project_headers(fake: FakeOpenAIPlatform) -> None:
    await run(fake, request(), "gpt-image-1", organization="org-1", project="proj-1")
    headers = fake.calls[0].headers
    assert headers["openai-organization"] == "org-1" and headers["openai-project"] == "proj-1"


async def test_wrong_key_is_retryable(fake: FakeOpenAIPlatform) -> None:
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1", api_key="sk-wrong")
    assert info.value.retryable and info.value.status == 401


async def test_rate_limit_keeps_retry_after(fake: FakeOpenAIPlatform) -> None:
    error = {"message": "Rate limit reached", "type": "requests", "param": None, "code": None}
    fake.failures.append(Failure(429, error, {"retry-after": "7"}))
    fake.failures.append(Failure(429, error, {"retry-after": "7", "retry-after-ms": "1500"}))
    for expected in (7.0, 1.5):
        with pytest.raises(UpstreamError) as info:
            await run(fake, request(), "gpt-image-1")
        assert info.value.retryable and info.value.status == 429
        assert info.value.retry_after_s == expected


async def test_server_error_is_retryable(fake: FakeOpenAIPlatform) -> None:
    error = {"message": "The server had an error", "type": "server_error", "param": None}
    fake.failures.append(Failure(500, {**error, "code": None}))
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1")
    assert info.value.retryable and info.value.status == 500


async def test_bad_request_is_the_callers_with_the_upstream_message(
    fake: FakeOpenAIPlatform,
) -> None:
    req = request(size="1536x1024", width=1536, height=1024, quality="ultra")
    fake.failures.append(
        Failure(
            400,
            {
                "message": "Invalid value: 'ultra'.",
                "type": "invalid_request_error",
                "param": "quality",
                "code": "invalid_value",
            },
        )
    )
    with pytest.raises(UpstreamError) as info:
        await run(fake, req, "gpt-image-1")
    assert not info.value.retryable
    client = info.value.client_error
    assert isinstance(client, InvalidRequest)
    assert "Invalid value: 'ultra'." in client.message
    assert (client.param, client.code) == ("quality", "invalid_value")


@pytest.mark.parametrize("model", ["gpt-image-1", "dall-e-3"])
async def test_refusal_is_a_content_policy_violation(fake: FakeOpenAIPlatform, model: str) -> None:
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(prompt="forbidden thing", size="1024x1024"), model)
    assert not info.value.retryable and info.value.status == 400
    client = info.value.client_error
    assert client is not None and client.status == 400
    assert client.code == "content_policy_violation"
    assert "safety system" in client.message


def test_availability_and_default_url() -> None:
    context = ProviderContext(httpx.AsyncClient(), lambda url: None)  # type: ignore[arg-type,return-value]
    without = OpenAIProvider(ProviderConfig(id="o", type="openai"), context)
    assert not without.available
    assert without.url("generations", "gpt-image-1") == (
        "https://api.openai.com/v1/images/generations",
        {},
    )
    config = ProviderConfig(id="o", type="openai", api_key_env="IMAGEGATE_TEST_NO_SUCH_VAR")
    assert not OpenAIProvider(config, context).available
    assert OpenAIProvider(ProviderConfig(id="o", type="openai", api_key="k"), context).available
    assert not OpenAIProvider.capabilities.supports_seed


@pytest.mark.parametrize("account", ["billing_hard_limit_reached", "insufficient_quota"])
async def test_our_account_errors_fail_over_and_are_never_the_callers(
    fake: FakeOpenAIPlatform, account: str
) -> None:
    """OpenAI answers an exhausted account with 400 billing_hard_limit_reached or 429
    insufficient_quota: our account, so another endpoint is tried and the caller never
    sees a 400; a quota error is not waited out either."""
    fake.account = account
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-2")
    error = info.value
    assert error.retryable and error.ours and error.client_error is None
    assert error.retry_after_s is None
    assert error.status == (400 if account == "billing_hard_limit_reached" else 429)


async def test_retired_model_is_model_gone(fake: FakeOpenAIPlatform) -> None:
    fake.retired.add("gpt-image-1")
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1")
    error = info.value
    assert error.status == 404 and error.retryable and error.model_gone
    assert error.client_error is None


async def test_unlisted_4xx_is_ours_not_the_callers(fake: FakeOpenAIPlatform) -> None:
    error = {"message": "Unavailable For Legal Reasons", "type": "x", "param": None, "code": None}
    fake.failures.append(Failure(451, error))
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1")
    assert info.value.retryable and info.value.client_error is None


async def test_input_fidelity_is_not_sent_to_mini(fake: FakeOpenAIPlatform) -> None:
    req = request("edit", images=[png(64, 64)], input_fidelity="high", size="1024x1024")
    await run(fake, req, "gpt-image-1-mini")
    assert "input_fidelity" not in fake.calls[-1].fields
    await run(fake, req, "gpt-image-2")
    assert fake.calls[-1].fields["input_fidelity"] == "high"


async def test_moderation_is_the_operators_by_default(fake: FakeOpenAIPlatform) -> None:
    """A caller cannot lower OpenAI's moderation unless the operator allows it."""
    await run(fake, request(moderation="low"), "gpt-image-2")
    assert "moderation" not in fake.calls[-1].fields
    await run(fake, request(moderation="low"), "gpt-image-2", moderation="auto")
    assert fake.calls[-1].fields["moderation"] == "auto"
