"""Pricing forms: parsing, worst-case holds, settlement, routing by price, and the 402."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest

import pricing_support
from fakes.openai_images import FakeOpenAI, serve_fake
from gateway import RunningGateway, run_gateway
from imagegate.catalog.catalog import Catalog
from imagegate.catalog.spec import CatalogError, parse_model
from imagegate.core.errors import InsufficientCredits
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import (
    InputImage,
    RoutingPreferences,
    TokenUsage,
)
from imagegate.providers.base import Provider, ProviderContext
from imagegate.providers.sandbox import SandboxProvider
from imagegate.routing.router import Router
from pricing_support import pricing, result

SOURCE = {"source": "https://example.com/prices", "as_of": "2026-11-21"}
GPT_TOKENS = {
    "1024x1024": {"low": 272, "medium": 1056, "high": 4160},
    "1024x1536": {"low": 408, "medium": 1584, "high": 6240},
    "1536x1024": {"low": 400, "medium": 1568, "high": 6208},
}
PER_TOKEN = {
    "per_million_tokens": {"text_input": 5, "image_input": 10, "image_output": 40},
    "output_tokens": GPT_TOKENS,
    "input_image_tokens": 1000,
}


req = partial(pricing_support.req, prompt="a cat")


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"per_image": -1}, "pricing.per_image", ">= 0"),
        ({"per_image": "cheap"}, "pricing.per_image", "number"),
        ({"per_image": {"big": 0.1}}, "pricing.per_image.big", "WIDTHxHEIGHT"),
        ({"per_image": {"1024x1024": {"high": True}}}, "per_image.1024x1024.high", "number"),
        ({"per_image": 0.1, "per_megapixel": 0.1}, "pricing", "one price form"),
        ({"per_image": 0.1, "free": True}, "pricing", "one price form"),
        ({"free": "yes"}, "pricing.free", "true or false"),
        ({"per_image": 0.1, "as_of": "last week"}, "pricing.as_of", "YYYY-MM-DD"),
        ({"per_image": 0.1, "as_of": "2026-13-40"}, "pricing.as_of", "YYYY-MM-DD"),
        ({"per_image": 0.1, "source": ""}, "pricing.source", "non-empty"),
        ({"per_image": 0.1, "cost": 1}, "pricing.cost", "unknown pricing field"),
        ({"per_megapixel": 0.1, "megapixel_rounding": "down"}, "megapixel_rounding", "'up'"),
        ({"per_megapixel": 0.1, "megapixel": 0}, "pricing.megapixel", "positive integer"),
        ({"per_million_tokens": {"text_input": 1}}, "image_input", "is required"),
        (
            {"per_million_tokens": {"text_input": 1, "image_input": 1, "image_output": 1}},
            "pricing.output_tokens",
            "is required",
        ),
        ({**PER_TOKEN, "output_tokens": {"1024x1024": 1.5}}, "output_tokens.1024x1024", "integer"),
        ({"output_tokens": GPT_TOKENS}, "pricing.output_tokens", "only applies"),
        ("0.04", "pricing", "mapping"),
    ],
)
def test_bad_pricing_names_model_and_field(raw: Any, field: str, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        pricing(raw)
    text = str(info.value)
    assert text.startswith("model 't/m': endpoints[0].pricing")
    assert field in text and message in text


def test_yaml_dates_and_missing_pricing() -> None:
    import datetime

    parsed = pricing({"per_image": 0.04, "as_of": datetime.date(2026, 11, 21), "source": "x"})
    assert parsed.as_of == "2026-11-21" and parsed.configured
    assert not pricing({}).configured
    assert pricing({"free": True}).configured
    assert not pricing({"free": False, **SOURCE}).configured


# -- per image -------------------------------------------------------------------------


def test_flat_per_image() -> None:
    p = pricing({"per_image": 0.04, **SOURCE})
    assert p.unit_price_usd(req()) == 0.04
    assert p.max_cost_micro(req(n=3)) == 120_000
    # settlement counts what came back, not what was asked for
    assert p.cost_micro(req(n=3), result((1024, 1024), (1024, 1024))) == 80_000
    assert p.cost_micro(req(n=3), result()) == 0


def test_free_costs_nothing() -> None:
    p = pricing({"free": True})
    assert p.unit_price_usd(req()) == 0.0
    assert p.max_cost_micro(req(n=10)) == 0
    assert p.cost_micro(req(), result((1024, 1024))) == 0


DALLE3 = {
    "per_image": {
        "1024x1024": {"standard": 0.04, "hd": 0.08},
        "1792x1024": {"standard": 0.08, "hd": 0.12},
    },
    "default_quality": "standard",
    **SOURCE,
}


def test_size_by_quality_table() -> None:
    p = pricing(DALLE3)
    assert p.unit_price_usd(req()) == 0.04  # no quality given: the default, standard
    assert p.unit_price_usd(req(quality="hd")) == 0.08
    assert p.unit_price_usd(req("1792x1024", quality="hd")) == 0.12
    assert p.max_cost_micro(req("1792x1024", n=2)) == 160_000
    assert p.cost_micro(req("1792x1024", quality="hd"), result((1792, 1024))) == 120_000


def test_auto_quality_and_size_hold_the_highest_and_settle_what_resolved() -> None:
    p = pricing(
        {
            "per_image": {
                "1024x1024": {"low": 0.011, "high": 0.167},
                "1536x1024": {"low": 0.016, "high": 0.25},
            }
        }
    )
    auto = req("auto", quality="auto", n=2)
    assert p.unit_price_usd(auto) == 0.25
    assert p.max_cost_micro(auto) == 500_000
    # the upstream says 'auto' became low, and the images came back square
    produced = result((1024, 1024), (1024, 1024), quality="low")
    assert p.cost_micro(auto, produced) == 22_000


def test_unlisted_size_is_priced_at_its_tier() -> None:
    p = pricing({"per_image": {"1024x1024": 0.067, "2048x2048": 0.101, "4096x4096": 0.151}})
    assert p.unit_price_usd(req("1264x848")) == 0.067  # Gemini's 1K at 3:2, 2% more pixels
    assert p.unit_price_usd(req("1536x1536")) == 0.101  # next tier up
    assert p.unit_price_usd(req("8000x8000")) == 0.151  # above the table: the largest
    catch_all = pricing({"per_image": {"256x256": 0.016, "*": 0.02}})
    assert catch_all.unit_price_usd(req("777x555")) == 0.02


def test_settlement_never_exceeds_the_hold_for_per_image() -> None:
    p = pricing({"per_image": {"512x512": 0.018, "1024x1024": 0.02}})
    small = req("512x512")
    # an upstream that returned a bigger image than asked is not charged above the hold
    assert p.cost_micro(small, result((1024, 1024))) == p.max_cost_micro(small) == 18_000


# -- per megapixel ---------------------------------------------------------------------


def test_per_megapixel_rounds_up_to_whole_megapixels() -> None:
    p = pricing({"per_megapixel": 0.025, **SOURCE})
    assert p.unit_price_usd(req()) == 0.025  # 1024x1024 is exactly 1 MP
    assert p.unit_price_usd(req("1024x768")) == 0.025  # 0.75 MP bills as 1
    assert p.unit_price_usd(req("1440x1024")) == 0.05  # 1.4 MP bills as 2
    assert p.max_cost_micro(req("1440x1024", n=4)) == 200_000
    assert p.cost_micro(req("1440x1024", n=4), result((1440, 1024))) == 50_000


def test_per_megapixel_exact_with_decimal_megapixels() -> None:
    p = pricing({"per_megapixel": 0.04, "megapixel": 1_000_000, "megapixel_rounding": "none"})
    assert p.max_cost_micro(req()) == 41_944  # 1.048576 MP x $0.04 = $0.04194304, rounded up
    assert p.cost_micro(req(), result((1024, 1024))) == 41_943  # half up


def test_per_megapixel_edit_holds_for_the_input_size() -> None:
    p = pricing({"per_megapixel": 0.025})
    big = InputImage(data=b"", format="png", width=2048, height=2048)
    edit = req(operation="edit", images=[big])
    assert p.max_cost_micro(edit) == 100_000  # output follows the 4 MP input
    assert p.cost_micro(edit, result((2048, 2048))) == 100_000


# -- per token -------------------------------------------------------------------------


def test_per_token_hold_is_output_table_plus_input_bound() -> None:
    p = pricing({**PER_TOKEN, **SOURCE})
    r = req("1024x1536", quality="high", n=2, prompt="x" * 100)
    # 2 x 6240 output tokens at $40/M + 100 prompt bytes at $5/M
    assert p.max_cost_micro(r) == 2 * 249_600 + 500
    assert p.unit_price_usd(req(quality="low", prompt="")) == pytest.approx(0.01088)
    auto = req("auto", quality="auto", prompt="")
    assert p.unit_price_usd(auto) == pytest.approx(0.2496)
    image = InputImage(data=b"", format="png", width=512, height=512)
    edit = req(operation="edit", images=[image, image], prompt="")
    assert p.max_cost_micro(edit) == 166_400 + 2 * 1000 * 10  # + 2 images x 1000 tokens x $10/M


def test_per_token_settles_from_usage() -> None:
    p = pricing(PER_TOKEN)
    usage = TokenUsage(
        input_tokens=50,
        output_tokens=4160,
        total_tokens=4210,
        input_tokens_details={"text_tokens": 20, "image_tokens": 30},
    )
    image = InputImage(data=b"", format="png", width=512, height=512)
    r = req(operation="edit", images=[image], quality="high", prompt="x" * 20)
    cost = p.cost_micro(r, result((1024, 1024), usage=usage))
    assert cost == 100 + 300 + 166_400  # 20 x $5 + 30 x $10 + 4160 x $40, per million
    assert cost <= p.max_cost_micro(r)


def test_per_token_usage_without_details_counts_input_by_operation() -> None:
    p = pricing(PER_TOKEN)
    usage = TokenUsage(input_tokens=100, output_tokens=0, total_tokens=100)
    assert p.cost_micro(req(), result((1024, 1024), usage=usage)) == 500  # text rate
    image = InputImage(data=b"", format="png", width=64, height=64)
    edit = req(operation="edit", images=[image])
    assert p.cost_micro(edit, result((1024, 1024), usage=usage)) == 1000  # image rate


def test_per_token_more_tokens_than_estimated_is_charged_as_reported() -> None:
    p = pricing(PER_TOKEN)
    r = req(quality="low", prompt="")
    usage = TokenUsage(input_tokens=0, output_tokens=10_000, total_tokens=10_000)
    assert p.cost_micro(r, result((1024, 1024), usage=usage)) == 400_000 > p.max_cost_micro(r)


def test_per_token_without_usage_falls_back_to_the_table() -> None:
    p = pricing(PER_TOKEN)
    r = req("1536x1024", quality="auto", n=2, prompt="abcd")
    produced = result((1536, 1024), (1536, 1024), quality="medium")
    assert p.cost_micro(r, produced) == 2 * 62_720 + 20  # 1568 tokens each + 4 prompt bytes


def test_streamed_partial_images_are_in_the_hold() -> None:
    p = pricing(PER_TOKEN)
    plain, partials = req(quality="low", prompt=""), req(quality="low", prompt="", partial_images=3)
    assert p.max_cost_micro(partials) - p.max_cost_micro(plain) == 300 * 40  # 3 x 100 tokens


# -- the built-in catalog --------------------------------------------------------------


def test_every_builtin_endpoint_is_priced_with_source_and_date() -> None:
    catalog = Catalog.load()
    seen = 0
    for spec in catalog:
        for endpoint in spec.endpoints:
            where = f"{spec.id} on {endpoint.provider}"
            if endpoint.provider == "sandbox":
                assert endpoint.pricing.free, where
                continue
            seen += 1
            p = endpoint.pricing
            assert p.configured and not p.free, where
            assert p.source and p.source.startswith("https://"), where
            assert p.as_of and len(p.as_of) == 10, where
            price = p.unit_price_usd(req(model=spec.id))
            assert price is not None and 0 < price < 1, where
    assert seen >= 30


def test_builtin_gpt_image_1_matches_openais_per_image_table() -> None:
    spec = Catalog.load().resolve("openai/gpt-image-1")
    p = next(e.pricing for e in spec.endpoints if e.provider == "openai")
    # OpenAI publishes $0.011 / $0.042 / $0.167 for 1024x1024 low / medium / high
    for quality, published in [("low", 0.011), ("medium", 0.042), ("high", 0.167)]:
        assert p.unit_price_usd(req(quality=quality, prompt="")) == pytest.approx(
            published, abs=0.001
        )


# -- routing ---------------------------------------------------------------------------


async def _no_fetch(url: str) -> Any:
    raise AssertionError("planning fetches nothing")


def sandbox_router(*ids: str) -> Router:
    """Planning only: the sandbox engine needs no credentials and makes no calls here."""
    context = ProviderContext(httpx.AsyncClient(), _no_fetch)
    providers: dict[str, Provider] = {
        i: SandboxProvider(ProviderConfig(id=i, type="sandbox"), context) for i in ids
    }
    return Router(providers)


def test_max_price_uses_the_table_for_the_requested_parameters() -> None:
    spec = parse_model(
        {
            "id": "t/m",
            "endpoints": [
                {"provider": "a", "upstream_model": "s", "pricing": DALLE3},
                {"provider": "b", "upstream_model": "s", "pricing": {"per_image": 0.07}},
            ],
        }
    )
    router = sandbox_router("a", "b")
    cheap = req(provider=RoutingPreferences(max_price=0.05))
    assert [c.provider.id for c in router.plan(spec, cheap)] == ["a"]
    hd = req(quality="hd", provider=RoutingPreferences(max_price=0.075))
    assert [c.provider.id for c in router.plan(spec, hd)] == ["b"]
    wide = req("1792x1024", quality="hd", provider=RoutingPreferences(sort="price"))
    assert [c.provider.id for c in router.plan(spec, wide)] == ["b", "a"]


def test_unpriced_endpoints_are_left_out_and_alone_are_402() -> None:
    mixed = parse_model(
        {
            "id": "t/m",
            "endpoints": [
                {"provider": "a", "upstream_model": "s"},
                {"provider": "b", "upstream_model": "s", "pricing": {"per_image": 0.1}},
            ],
        }
    )
    router = sandbox_router("a", "b")
    assert [c.provider.id for c in router.plan(mixed, req())] == ["b"]
    unpriced = parse_model({"id": "t/u", "endpoints": [{"provider": "a", "upstream_model": "s"}]})
    with pytest.raises(InsufficientCredits) as info:
        router.plan(unpriced, req())
    assert info.value.code == "pricing_not_configured" and info.value.param == "model"
    assert "t/u" in info.value.message and "free: true" in info.value.message


# -- through a gateway process ---------------------------------------------------------

CONFIG = """
providers:
  - {{id: sb2, type: sandbox}}
  - {{id: oai, type: openai_compatible, base_url: "{oai}/v1", api_key: sk-fake}}
models:
  - id: test/unpriced
    sizes: [256x256]
    endpoints:
      - {{provider: sb2, upstream_model: sandbox}}
  - id: test/free
    sizes: [256x256]
    endpoints:
      - {{provider: sb2, upstream_model: sandbox, pricing: {{free: true}}}}
  - id: test/tokens
    sizes: [1024x1024]
    qualities: [low, medium, high, auto]
    endpoints:
      - provider: oai
        upstream_model: gpt-image-1
        pricing:
          per_million_tokens: {{text_input: 5, image_input: 10, image_output: 40}}
          output_tokens: {{"1024x1024": {{low: 272, medium: 1056, high: 4160}}}}
          source: https://example.com/openai
          as_of: 2026-11-21
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with serve_fake(FakeOpenAI()) as oai:
        config = CONFIG.format(oai=oai.url)
        with run_gateway(tmp_path_factory.mktemp("pricing"), config) as gateway:
            yield gateway


def generate(gw: RunningGateway, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.admin_key}"}
    payload = {"prompt": "a lighthouse", "size": "256x256", **body}
    return httpx.post(f"{gw.v1}/images/generations", json=payload, headers=headers, timeout=30)


def test_unpriced_model_is_402_pricing_not_configured(gw: RunningGateway) -> None:
    response = generate(gw, model="test/unpriced")
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "pricing_not_configured" and error["param"] == "model"
    assert "test/unpriced" in error["message"] and "free: true" in error["message"]
    assert error["type"]


def test_free_model_costs_zero(gw: RunningGateway) -> None:
    response = generate(gw, model="test/free")
    assert response.status_code == 200
    assert response.headers["x-imagegate-cost-usd"] == "0.000000"


def test_per_token_cost_comes_from_upstream_usage(gw: RunningGateway) -> None:
    admin = {"Authorization": f"Bearer {gw.admin_key}"}
    created = httpx.post(
        f"{gw.v1}/admin/keys", json={"name": "funded", "credits": 1}, headers=admin, timeout=10
    )
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['key']}"}
    payload = {"model": "test/tokens", "prompt": "a lighthouse", "size": "1024x1024"}
    response = httpx.post(
        f"{gw.v1}/images/generations",
        json={**payload, "quality": "high", "usage": True},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    # the fake upstream reports 10 text input and 20 output tokens: 10 x $5 + 20 x $40 per M
    assert response.headers["x-imagegate-cost-usd"] == "0.000850"
    assert response.json()["usage"]["cost_usd"] == pytest.approx(0.00085)
    keys = httpx.get(f"{gw.v1}/admin/keys", headers=admin, timeout=10).json()["data"]
    funded = next(k for k in keys if k["id"] == created.json()["id"])
    assert funded["credits_usd"] == pytest.approx(1 - 0.00085)


def test_models_list_shows_pricing(gw: RunningGateway) -> None:
    headers = {"Authorization": f"Bearer {gw.admin_key}"}
    models = httpx.get(f"{gw.v1}/models", headers=headers, timeout=10).json()["data"]
    by_id = {m["id"]: m for m in models}
    assert by_id["test/unpriced"]["endpoints"][0]["pricing"] is None
    assert by_id["test/free"]["endpoints"][0]["pricing"] == {"form": "free"}
    tokens = by_id["test/tokens"]["endpoints"][0]["pricing"]
    assert tokens["form"] == "per_token"
    assert tokens["per_million_tokens"] == {"text_input": 5, "image_input": 10, "image_output": 40}
    assert tokens["output_tokens"]["1024x1024"]["high"] == 4160
    assert tokens["as_of"] == "2026-11-21"
    flash = by_id["google/gemini-3.1-flash-image"]["endpoints"][0]["pricing"]
    assert flash["per_image"]["512x512"] == 0.045 and flash["per_image"]["4096x4096"] == 0.151
