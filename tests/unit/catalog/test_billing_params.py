"""Charging what the provider bills for the parameters actually sent (issue 13):
Together's steps, xAI's input images on edits, Gemini's 512 tier."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from imagegate.catalog.catalog import Catalog
from imagegate.catalog.priceable import priceable
from imagegate.catalog.spec import EndpointSpec, ModelSpec, parse_model
from imagegate.core.errors import InvalidRequest
from imagegate.core.types import GeneratedImage, ImageRequest, ImageResult, InputImage
from request_support import image_request

CATALOG = Catalog.load()


def req(size: str = "1024x1024", **kw: Any) -> ImageRequest:
    width, height = map(int, size.split("x"))
    base: dict[str, Any] = {"operation": "generate", "model": "m", "prompt": "a cat"}
    return image_request(**{**base, "size": size, "width": width, "height": height, **kw})


def produced(width: int, height: int, n: int = 1) -> ImageResult:
    return ImageResult(
        images=[GeneratedImage(data=b"", format="png", width=width, height=height)] * n
    )


def endpoint(model: str, provider: str) -> EndpointSpec:
    return next(e for e in CATALOG.resolve(model).endpoints if e.provider == provider)


def test_together_schnell_charges_for_the_steps_sent() -> None:
    pricing = endpoint("black-forest-labs/flux-1-schnell", "together").pricing
    one_mp = Decimal(1024 * 1024) / 1_000_000 * Decimal("0.0027")  # at 4 default steps
    default = req()
    assert pricing.cost_micro(default, produced(1024, 1024)) == round(one_mp * 1_000_000)
    fifty = req(extra={"steps": 50})
    exact = one_mp * 50 / 4 * 1_000_000  # 12.5x the default-steps price: 35,389.44 micro
    assert pricing.max_cost_micro(fifty) == math.ceil(exact)  # the hold rounds up
    assert pricing.cost_micro(fifty, produced(1024, 1024)) == round(exact)
    with pytest.raises(InvalidRequest) as info:
        pricing.max_cost_micro(req(extra={"steps": "lots"}))
    assert info.value.param == "steps"


def test_steps_skip_endpoints_that_cannot_price_them() -> None:
    spec = CATALOG.resolve("black-forest-labs/flux-1.1-pro")
    kept = priceable(spec, req(extra={"steps": 30}))
    assert "together" in {e.provider for e in spec.endpoints}
    assert "together" not in {e.provider for e in kept.endpoints}
    assert kept.endpoints  # BFL, Replicate, fal still serve it
    assert priceable(spec, req()) is spec
    only = parse_model(
        {
            "id": "t/together-only",
            "endpoints": [
                {
                    "provider": "together",
                    "upstream_model": "x",
                    "pricing": {"per_megapixel": 0.04, "unpriced": ["steps"]},
                }
            ],
        }
    )
    with pytest.raises(InvalidRequest) as info:
        priceable(only, req(extra={"steps": 30}))
    assert info.value.param == "steps" and info.value.status == 400


def png(width: int = 64, height: int = 64) -> InputImage:
    return InputImage(b"\x89PNG", "png", width, height)


def test_xai_edits_are_refused_until_the_input_image_has_a_price() -> None:
    spec: ModelSpec = CATALOG.resolve("xai/grok-imagine-image")
    edit = req(operation="edit", images=[png()])
    with pytest.raises(InvalidRequest) as info:
        priceable(spec, edit)
    assert info.value.param == "image"
    assert priceable(spec, req()) is spec  # generations are priced per output image


def test_input_images_are_charged_where_the_provider_bills_them() -> None:
    spec = parse_model(
        {
            "id": "t/x",
            "endpoints": [
                {
                    "provider": "xai",
                    "upstream_model": "grok-imagine-image",
                    "pricing": {"per_image": 0.02, "per_input_image": 0.002},
                }
            ],
        }
    )
    pricing = spec.endpoints[0].pricing
    edit = req(operation="edit", images=[png(), png()], n=2)
    assert pricing.max_cost_micro(edit) == 2 * 20_000 + 2 * 2_000
    assert pricing.cost_micro(edit, produced(1024, 1024, n=2)) == 44_000
    assert pricing.to_json()["per_input_image"] == 0.002


def test_gemini_flash_512_is_priced_at_its_own_tier() -> None:
    pricing = endpoint("google/gemini-3.1-flash-image", "google").pricing
    small = req("512x512")
    assert pricing.max_cost_micro(small) == 45_000
    assert pricing.cost_micro(small, produced(512, 512)) == 45_000
    # what a 512 request cost when the adapter asked for 1K: the 1K image, capped at the hold
    assert pricing.cost_micro(req("1024x1024"), produced(1024, 1024)) == 67_000
