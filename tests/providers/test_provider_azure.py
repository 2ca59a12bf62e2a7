"""The ``azure`` adapter against a loopback fake of Azure OpenAI image deployments."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from adapter_support import png, run_once, white_mask
from fakes.openai_platform import Failure, FakeAzureOpenAI, serve
from imagegate.catalog.catalog import Catalog, builtin_providers
from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.types import ImageRequest, ImageResult
from imagegate.providers.base import ProviderContext
from imagegate.providers.openai.azure import DEFAULT_API_VERSION, AzureOpenAIProvider
from request_support import image_request

DEPLOYMENTS = {"gpt-image-1": "gpt-image-1", "img-prod": "gpt-image-1", "dall-e-3": "dall-e-3"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAzureOpenAI]:
    with serve(FakeAzureOpenAI(api_key="az-key", deployments=DEPLOYMENTS)) as fake:
        yield fake


async def run(
    fake: FakeAzureOpenAI,
    request: ImageRequest,
    model: str,
    *,
    api_key: str = "az-key",
    **options: Any,
) -> ImageResult:
    base_url = fake.url + "/"
    return await run_once(
        AzureOpenAIProvider, fake.url, request, model, base_url=base_url, api_key=api_key, **options
    )


def request(operation: str = "generate", **kwargs: Any) -> ImageRequest:
    kwargs.setdefault("prompt", "a lighthouse")
    return image_request(operation=operation, model="m", **kwargs)


async def test_generate_on_a_deployment(fake: FakeAzureOpenAI) -> None:
    req = request(
        size="1024x1536",
        width=1024,
        height=1536,
        quality="low",
        moderation="low",
        output_format="jpeg",
        output_compression=70,
        seed=3,
    )
    result = await run(fake, req, "gpt-image-1")
    (call,) = fake.calls
    assert call.path == "/openai/deployments/gpt-image-1/images/generations"
    assert call.query == {"api-version": DEFAULT_API_VERSION}
    assert call.headers["api-key"] == "az-key" and "authorization" not in call.headers
    assert call.fields == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse",
        "n": 1,
        "size": "1024x1536",
        "quality": "low",
        "output_format": "jpeg",
        "output_compression": 70,
    }  # no moderation (not an Azure parameter), no seed
    (image,) = result.images
    assert (image.format, image.width, image.height) == ("jpeg", 1024, 1536)
    assert result.usage is not None and result.usage.output_tokens == 100


async def test_deployment_names_and_api_version_are_configurable(fake: FakeAzureOpenAI) -> None:
    fake.api_versions.add("2026-01-01-preview")
    await run(
        fake,
        request(),
        "gpt-image-1",
        deployments={"gpt-image-1": "img-prod"},
        api_version="2026-01-01-preview",
    )
    (call,) = fake.calls
    assert call.path == "/openai/deployments/img-prod/images/generations"
    assert call.query == {"api-version": "2026-01-01-preview"}
    assert call.fields["model"] == "gpt-image-1"


async def test_webp_is_left_to_the_gateway(fake: FakeAzureOpenAI) -> None:
    result = await run(fake, request(output_format="webp", output_compression=50), "gpt-image-1")
    assert "output_format" not in fake.calls[0].fields
    assert "output_compression" not in fake.calls[0].fields
    assert result.images[0].format == "png"


async def test_dalle3_fans_out(fake: FakeAzureOpenAI) -> None:
    req = request(n=2, size="1792x1024", width=1792, height=1024, style="vivid", quality="hd")
    result = await run(fake, req, "dall-e-3")
    assert len(fake.calls) == 2
    assert all(c.fields["n"] == 1 and c.fields["response_format"] == "b64_json" for c in fake.calls)
    assert fake.calls[0].fields["style"] == "vivid"
    assert [(i.width, i.height) for i in result.images] == [(1792, 1024)] * 2


async def test_edit_with_images_and_mask(fake: FakeAzureOpenAI) -> None:
    images = [png(64, 64), png(64, 64, colour=(200, 0, 0))]
    mask = white_mask(64, 64, (0, 0, 64, 16))  # top strip white: edit there
    req = request("edit", images=images, mask=mask, input_fidelity="high", n=3)
    result = await run(fake, req, "gpt-image-1")
    (call,) = fake.calls
    assert call.path == "/openai/deployments/gpt-image-1/images/edits"
    assert call.query == {"api-version": DEFAULT_API_VERSION}
    assert [data for _, data in call.files["image[]"]] == [i.data for i in images]
    alpha = Image.open(io.BytesIO(call.files["mask"][0][1])).getchannel("A")
    assert alpha.getpixel((5, 5)) == 0 and alpha.getpixel((5, 40)) == 255
    assert call.fields["input_fidelity"] == "high" and call.fields["n"] == "3"
    assert len(result.images) == 3


async def test_edit_without_mask(fake: FakeAzureOpenAI) -> None:
    image = png(32, 32)
    await run(fake, request("edit", images=[image]), "gpt-image-1")
    (call,) = fake.calls
    assert [data for _, data in call.files["image"]] == [image.data]
    assert "mask" not in call.files


async def test_no_variations_and_no_dalle_edits(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(InvalidRequest) as info:
        await run(fake, request("variation", images=[png(64, 64)]), "dall-e-3")
    assert info.value.code == "unsupported_operation"
    with pytest.raises(InvalidRequest):
        await run(fake, request("edit", images=[png(64, 64)]), "dall-e-3")
    assert fake.calls == []


async def test_wrong_key_is_retryable(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1", api_key="nope")
    assert info.value.retryable and info.value.status == 401


async def test_rate_limit_keeps_retry_after(fake: FakeAzureOpenAI) -> None:
    message = "Requests to the Images_Generations operation have exceeded the call rate limit."
    fake.failures.append(Failure(429, {"code": "429", "message": message}, {"retry-after": "12"}))
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1")
    assert info.value.retryable and info.value.status == 429 and info.value.retry_after_s == 12


async def test_server_error_is_retryable(fake: FakeAzureOpenAI) -> None:
    fake.failures.append(Failure(500, {"code": "InternalServerError", "message": "oops"}))
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1")
    assert info.value.retryable and info.value.status == 500


async def test_missing_deployment_fails_over(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "gpt-image-1", deployments={"gpt-image-1": "absent"})
    assert info.value.retryable and info.value.status == 404


async def test_bad_request_keeps_the_upstream_message(fake: FakeAzureOpenAI) -> None:
    req = request(size="2048x2048", width=2048, height=2048)  # mapped to 1024x1024: fine
    await run(fake, req, "gpt-image-1")
    fake.failures.append(
        Failure(400, {"code": "invalid_value", "param": "quality", "message": "Bad quality."})
    )
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(quality="ultra"), "gpt-image-1")
    assert not info.value.retryable
    client = info.value.client_error
    assert isinstance(client, InvalidRequest) and "Bad quality." in client.message
    assert client.param == "quality"


async def test_content_filter_is_a_content_policy_violation(fake: FakeAzureOpenAI) -> None:
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(prompt="forbidden thing"), "gpt-image-1")
    client = info.value.client_error
    assert not info.value.retryable
    assert client is not None and client.code == "content_policy_violation"
    assert "safety system" in client.message
    # Only the inner error says so.
    inner = {"code": "ResponsibleAIPolicyViolation", "content_filter_results": {}}
    error = {"code": "BadRequest", "message": "Filtered.", "inner_error": inner}
    fake.failures.append(Failure(400, error))
    with pytest.raises(UpstreamError) as info:
        await run(fake, request(), "dall-e-3")
    assert info.value.client_error is not None
    assert info.value.client_error.code == "content_policy_violation"


async def test_availability_needs_endpoint_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    (builtin,) = [p for p in builtin_providers() if p.id == "azure"]
    assert builtin.type == "azure" and builtin.api_key_env == "AZURE_OPENAI_API_KEY"
    async with httpx.AsyncClient() as http:
        context = ProviderContext(http, lambda url: None)  # type: ignore[arg-type,return-value]
        adapter = AzureOpenAIProvider(builtin, context)
        assert not adapter.available
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k")
        assert not adapter.available
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/")
        assert adapter.available
        url, params = adapter.url("generations", "dall-e-3")
        assert url == "https://res.openai.azure.com/openai/deployments/dall-e-3/images/generations"
        assert params == {"api-version": DEFAULT_API_VERSION}
        monkeypatch.delenv("AZURE_OPENAI_API_KEY")
        assert not adapter.available


def test_builtin_catalog_lists_azure_as_an_alternative() -> None:
    catalog = Catalog.load()
    for model in ("openai/gpt-image-1", "openai/dall-e-3"):
        providers = [(e.provider, e.upstream_model) for e in catalog.resolve(model).endpoints]
        assert providers[0][0] == "openai"
        assert ("azure", model.split("/")[1]) in providers
