"""The ``google`` adapter against a loopback fake of the Gemini API's image endpoints."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from adapter_support import adapter, png, refusal, upstream_failure
from fakes.google_genai import FakeGoogle, dims_for, serve_fake
from imagegate.catalog.catalog import Catalog, builtin_providers
from imagegate.core.errors import InvalidRequest
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest
from imagegate.providers.base import ProviderContext
from imagegate.providers.google import GoogleProvider
from request_support import image_request

FLASH = "gemini-3.1-flash-image"
PRO = "gemini-3-pro-image"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGoogle]:
    with serve_fake(FakeGoogle()) as running:
        yield running


def provider(fake: FakeGoogle, context: ProviderContext, **options: Any) -> GoogleProvider:
    return adapter(GoogleProvider, context, base_url=fake.url, api_key="gk-fake", **options)


def request(operation: str = "generate", **fields: Any) -> ImageRequest:
    fields.setdefault("prompt", "a lighthouse at dusk")
    return image_request(operation=operation, model="google/x", **fields)


# --- Gemini generateContent --------------------------------------------------------------


async def test_generate_sends_the_documented_request(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    fake.thinking = True  # interim "thought" drafts must not become the result
    result = await provider(fake, context).run(request(seed=42), FLASH)

    (call,) = fake.calls
    assert (call.model, call.method, call.api_key) == (FLASH, "generateContent", "gk-fake")
    assert call.body["contents"] == [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}]
    assert call.body["generationConfig"] == {
        "responseModalities": ["IMAGE"],
        "imageConfig": {"aspectRatio": "1:1", "imageSize": "1K"},
        "seed": 42,
    }
    (image,) = result.images
    assert (image.format, image.width, image.height) == ("png", 1024, 1024)
    assert image.revised_prompt is None
    assert result.upstream_model == FLASH
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 1290 + 100)
    assert result.usage.input_tokens_details == {"text_tokens": 4}


async def test_models_path_prefix_and_versioned_base_url(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    config = ProviderConfig(
        id="google", type="google", base_url=f"{fake.url}/v1beta/", api_key="gk-fake"
    )
    await GoogleProvider(config, context).run(request(), f"models/{PRO}")
    assert [(c.model, c.method) for c in fake.calls] == [(PRO, "generateContent")]


@pytest.mark.parametrize(
    ("model", "size", "ratio", "tier"),
    [
        (FLASH, "1536x1024", "3:2", "1K"),
        (FLASH, "1792x1024", "16:9", "1K"),
        (FLASH, "1024x1792", "9:16", "1K"),
        (FLASH, "2048x2048", "1:1", "2K"),
        (FLASH, "2048x1152", "16:9", "2K"),
        (FLASH, "3840x2160", "16:9", "2K"),  # 8.3 MP is nearer 2K (4.2 MP) than 4K (16.8 MP)
        (FLASH, "4096x4096", "1:1", "4K"),
        (FLASH, "448x4096", "1:8", "1K"),
        (FLASH, "512x512", "1:1", "512"),
        (PRO, "512x512", "1:1", "1K"),
        (PRO, "448x4096", "9:16", "1K"),
        (PRO, "2560x1080", "21:9", "2K"),
        ("gemini-2.5-flash-image", "2048x2048", "1:1", None),
        ("gemini-3.1-flash-lite-image", "1600x672", "21:9", None),
    ],
)
async def test_size_maps_to_nearest_ratio_and_tier(
    fake: FakeGoogle, context: ProviderContext, model: str, size: str, ratio: str, tier: str | None
) -> None:
    width, height = map(int, size.split("x"))
    result = await provider(fake, context).run(
        request(size=size, width=width, height=height), model
    )
    image_config = fake.calls[0].body["generationConfig"]["imageConfig"]
    assert image_config.get("aspectRatio") == ratio
    assert image_config.get("imageSize") == tier
    # the size reported is the size the upstream actually produced
    produced = dims_for(ratio, {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}[tier or "1K"])
    assert (result.images[0].width, result.images[0].height) == produced


async def test_n_fans_out_one_call_per_image_and_sums_usage(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    result = await provider(fake, context).run(request(n=3, seed=5), FLASH)
    assert len(fake.calls) == 3 and len(result.images) == 3
    # one seed per call, so the images differ yet stay reproducible
    assert sorted(c.body["generationConfig"]["seed"] for c in fake.calls) == [5, 6, 7]
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 3 * 1290)
    assert result.usage.total_tokens == 3 * (4 + 1290)


async def test_text_parts_become_the_revised_prompt(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    gemini = provider(fake, context, response_modalities=["TEXT", "IMAGE"])
    result = await gemini.run(request(), FLASH)
    assert fake.calls[0].body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert result.images[0].revised_prompt == "Here is your image: a lighthouse at dusk"


# --- edits ------------------------------------------------------------------------------


async def test_edit_sends_input_images_inline_and_keeps_their_aspect(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    first, second = png(1200, 800), png(300, 300, fmt="jpeg")
    req = request(
        "edit", prompt="put them together", images=[first, second], width=1200, height=800
    )
    result = await provider(fake, context).run(req, PRO)

    parts = fake.calls[0].body["contents"][0]["parts"]
    assert parts[0] == {"text": "put them together"}
    assert [p["inlineData"]["mimeType"] for p in parts[1:]] == ["image/png", "image/jpeg"]
    assert base64.b64decode(parts[1]["inlineData"]["data"]) == first.data
    # size "auto": no aspectRatio, so the model keeps the input's 3:2
    assert fake.calls[0].body["generationConfig"]["imageConfig"] == {"imageSize": "1K"}
    assert (result.images[0].width, result.images[0].height) == (1248, 832)


async def test_edit_with_explicit_size_sends_the_aspect_ratio(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    req = request("edit", images=[png(640, 640)], size="1024x1536", width=1024, height=1536)
    await provider(fake, context).run(req, FLASH)
    image_config = fake.calls[0].body["generationConfig"]["imageConfig"]
    assert image_config == {"aspectRatio": "2:3", "imageSize": "1K"}


async def test_edit_with_a_mask_is_refused_before_any_call(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    req = request("edit", images=[png(64, 64)], mask=png(64, 64))
    error = await refusal(provider(fake, context), req, FLASH)
    assert (error.param, error.code) == ("mask", "unsupported_parameter")
    assert fake.calls == []


async def test_too_many_input_images_names_the_limit(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    req = request("edit", images=[png(16, 16)] * 15)
    error = await refusal(provider(fake, context), req, FLASH)
    assert (error.param, error.code) == ("image", "too_many_images")
    assert "at most 14" in error.message
    assert fake.calls == []


async def test_variation_is_not_offered(fake: FakeGoogle, context: ProviderContext) -> None:
    req = request("variation", prompt=None, images=[png(64, 64)])
    error = await refusal(provider(fake, context), req, FLASH)
    assert error.code == "unsupported_operation"


# --- errors and refusals ----------------------------------------------------------------


async def test_bad_key_fails_over_like_a_401(fake: FakeGoogle, context: ProviderContext) -> None:
    fake.api_key = "another-key"
    error = await upstream_failure(provider(fake, context), request(), FLASH)
    assert error.retryable and error.status == 401
    assert "API key not valid" in error.message


@pytest.mark.parametrize(
    ("status", "name", "retryable"),
    [
        (500, None, True),
        (503, None, True),
        (403, None, True),
        (400, "FAILED_PRECONDITION", True),
    ],
)
async def test_server_and_account_errors_fail_over(
    fake: FakeGoogle, context: ProviderContext, status: int, name: str | None, retryable: bool
) -> None:
    fake.fail_status, fake.fail_status_name = status, name
    error = await upstream_failure(provider(fake, context), request(), FLASH)
    assert error.retryable is retryable
    assert error.client_error is None


async def test_depleted_prepay_credits_are_ours_and_not_waited_out(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    fake.prepay_depleted, fake.retry_after = True, "30"
    error = await upstream_failure(provider(fake, context), request(), FLASH)
    assert (error.status, error.retryable, error.ours) == (402, True, True)
    assert error.client_error is None and error.retry_after_s is None


async def test_429_takes_retry_info_or_retry_after(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    fake.fail_status, fake.retry_delay = 429, "7s"
    error = await upstream_failure(provider(fake, context), request(), FLASH)
    assert (error.retryable, error.status, error.retry_after_s) == (True, 429, 7.0)
    assert "RESOURCE_EXHAUSTED" in error.message

    fake.retry_delay, fake.retry_after = None, "3"
    error = await upstream_failure(provider(fake, context), request(), FLASH)
    assert error.retry_after_s == 3.0


async def test_invalid_argument_is_the_callers_error_with_the_upstream_message(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    gemini = provider(fake, context, models={FLASH: {"aspect_ratios": ["7:3"]}})
    error = await upstream_failure(gemini, request(), FLASH)
    error = error
    assert not error.retryable
    assert isinstance(error.client_error, InvalidRequest)
    assert error.client_error.status == 400
    assert "Unsupported aspect ratio: 7:3" in error.client_error.message
    assert error.client_error.code == "invalid_argument"


async def test_unknown_upstream_model_fails_over(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    """The upstream model id comes from our catalog, not the caller: a 404 for it is a stale
    catalog entry, so another endpoint may still serve the request."""
    error = await upstream_failure(provider(fake, context), request(), "gemini-0-image")
    assert error.retryable and error.status == 404
    assert "gemini-0-image" in error.message


@pytest.mark.parametrize("prompt", ["blocked: something", "unsafe: something"])
async def test_safety_refusals_are_content_policy_violations(
    fake: FakeGoogle, context: ProviderContext, prompt: str
) -> None:
    error = await upstream_failure(provider(fake, context), request(prompt=prompt), FLASH)
    assert not error.retryable
    assert error.client_error is not None
    assert (error.client_error.status, error.client_error.code) == (
        400,
        "content_policy_violation",
    )
    assert ("PROHIBITED_CONTENT" if prompt.startswith("blocked") else "IMAGE_SAFETY") in (
        error.client_error.message
    )


async def test_an_answer_without_an_image_fails_over(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    error = await upstream_failure(provider(fake, context), request(prompt="chatty: a cat"), FLASH)
    assert error.retryable and error.status == 502
    assert "rather describe it in words" in error.message


# --- Imagen predict ---------------------------------------------------------------------


async def test_imagen_batches_four_per_call(fake: FakeGoogle, context: ProviderContext) -> None:
    req = request(
        n=6,
        size="1792x1024",
        width=1792,
        height=1024,
        seed=7,
        extra={"person_generation": "allow_all"},  # a safety setting: the operator's
    )
    result = await provider(fake, context, person_generation="dont_allow").run(
        req, "imagen-4.0-generate-001"
    )

    assert [c.method for c in fake.calls] == ["predict", "predict"]
    counts = sorted(c.body["parameters"]["sampleCount"] for c in fake.calls)
    assert counts == [2, 4]
    body = fake.calls[0].body
    assert body["instances"] == [{"prompt": "a lighthouse at dusk"}]
    assert body["parameters"]["aspectRatio"] == "16:9"
    assert body["parameters"]["sampleImageSize"] == "1K"
    assert body["parameters"]["personGeneration"] == "dont_allow"
    assert "seed" not in body["parameters"]  # not accepted by Imagen on the Gemini API
    assert len(result.images) == 6
    assert {(i.width, i.height) for i in result.images} == {(1408, 768)}


async def test_imagen_fast_sends_no_image_size(fake: FakeGoogle, context: ProviderContext) -> None:
    req = request(size="2048x2048", width=2048, height=2048)
    await provider(fake, context).run(req, "imagen-4.0-fast-generate-001")
    assert "sampleImageSize" not in fake.calls[0].body["parameters"]


async def test_imagen_ultra_picks_2k(fake: FakeGoogle, context: ProviderContext) -> None:
    req = request(size="2048x2048", width=2048, height=2048)
    result = await provider(fake, context).run(req, "imagen-4.0-ultra-generate-001")
    assert fake.calls[0].body["parameters"]["sampleImageSize"] == "2K"
    assert (result.images[0].width, result.images[0].height) == (2048, 2048)


async def test_imagen_filtered_images_are_content_policy_violations(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    error = await upstream_failure(
        provider(fake, context), request(prompt="forbidden: x"), "imagen-4.0-generate-001"
    )
    assert error.client_error is not None
    assert error.client_error.code == "content_policy_violation"
    assert "filtered out" in error.client_error.message


async def test_imagen_does_not_edit(fake: FakeGoogle, context: ProviderContext) -> None:
    req = request("edit", images=[png(64, 64)])
    error = await refusal(provider(fake, context), req, "imagen-4.0-generate-001")
    assert error.code == "unsupported_operation"
    assert fake.calls == []


# --- built-in catalog -------------------------------------------------------------------


def test_builtin_catalog_lists_google() -> None:
    (config,) = [p for p in builtin_providers() if p.id == "google"]
    assert (config.type, config.api_key_env) == ("google", "GEMINI_API_KEY")
    assert config.base_url == "https://generativelanguage.googleapis.com"
    catalog = Catalog.load()
    for model_id, upstream in [
        ("google/gemini-3.1-flash-image", FLASH),
        ("google/gemini-3-pro-image", PRO),
        ("nano-banana-2", FLASH),
        ("nano-banana-pro", PRO),
    ]:
        spec = catalog.resolve(model_id)
        assert [(e.provider, e.upstream_model) for e in spec.endpoints] == [("google", upstream)]
        assert not spec.supports_mask
        assert spec.operations == {"generate", "edit"}


async def test_a_512_request_is_made_and_billed_at_the_512_tier(
    fake: FakeGoogle, context: ProviderContext
) -> None:
    """Gemini 3.1 Flash Image has a 0.5K ("512") tier; asking for 1K instead would make
    (and bill) a 1024x1024 image for a 512x512 request."""
    from imagegate.catalog.catalog import Catalog

    req = request(size="512x512", width=512, height=512)
    result = await provider(fake, context).run(req, FLASH)
    assert fake.calls[-1].body["generationConfig"]["imageConfig"]["imageSize"] == "512"
    assert (result.images[0].width, result.images[0].height) == (512, 512)
    spec = Catalog.load().resolve("google/gemini-3.1-flash-image")
    pricing = next(e.pricing for e in spec.endpoints if e.provider == "google")
    assert pricing.cost_micro(req, result) == 45_000  # $0.045, the 512 tier's price
