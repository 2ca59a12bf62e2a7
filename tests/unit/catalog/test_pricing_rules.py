"""Pricing rules stated as a price list reads: what one image of a given size and quality
costs, what a request holds, and what a result is charged. Non-square sizes both ways
round, so a formula that swaps width and height cannot pass."""

from __future__ import annotations

from typing import Any

import pytest

from imagegate.catalog.spec import CatalogError
from imagegate.core.errors import InvalidRequest
from imagegate.core.types import InputImage, TokenUsage
from pricing_support import pricing, req, result

SOURCE = {"source": "https://example.com/prices", "as_of": "2026-11-21"}
PER_TOKEN = {
    "per_million_tokens": {"text_input": 5, "image_input": 10, "image_output": 40},
    "output_tokens": {"1024x1024": {"low": 272, "high": 4160}, "1024x1536": 6240},
    "input_image_tokens": 1000,
}


def image(width: int, height: int) -> InputImage:
    return InputImage(data=b"", format="png", width=width, height=height)


def bad(raw: Any) -> str:
    with pytest.raises(CatalogError) as info:
        pricing(raw)
    return str(info.value)


# -- per megapixel -------------------------------------------------------------------------


def test_a_1024x1536_image_costs_1_5_megapixels_either_way_round() -> None:
    p = pricing({"per_megapixel": 0.04, "megapixel_rounding": "none"})
    assert p.max_cost_micro(req("1024x1536")) == 60_000  # 1.5 MP x $0.04
    assert p.max_cost_micro(req("1536x1024")) == 60_000
    assert p.cost_micro(req("1024x1536"), result((1024, 1536))) == 60_000
    assert p.cost_micro(req("1536x1024"), result((1536, 1024))) == 60_000
    assert p.unit_price_usd(req("512x2048")) == 0.04  # 1 MP, however thin


def test_whole_megapixels_round_up_per_image() -> None:
    p = pricing({"per_megapixel": 0.04})
    assert p.max_cost_micro(req("1024x1536")) == 80_000  # 1.5 MP bills as 2
    assert p.max_cost_micro(req("1024x1024", n=3)) == 120_000  # exactly 1 MP: not rounded
    assert p.to_json() == {
        "form": "per_megapixel",
        "per_megapixel": 0.04,
        "megapixel": 1_048_576,
        "megapixel_rounding": "up",
    }


def test_a_custom_megapixel_size_is_the_unit() -> None:
    p = pricing({"per_megapixel": 0.01, "megapixel": 1_000_000, "megapixel_rounding": "none"})
    assert p.max_cost_micro(req("1000x2000")) == 20_000
    assert p.to_json()["megapixel"] == 1_000_000
    assert p.to_json()["megapixel_rounding"] == "none"


def test_an_edit_holds_for_its_largest_input_or_mask_but_settles_what_came_back() -> None:
    p = pricing({"per_megapixel": 0.01, "megapixel": 1_000_000, "megapixel_rounding": "none"})
    small, wide = image(500, 500), image(2000, 1000)
    edit = req("1000x1000", operation="edit", images=[small, wide])
    assert p.max_cost_micro(edit) == 20_000  # the 2 MP input, not the 1 MP request
    masked = req("1000x1000", operation="edit", images=[small], mask=image(1000, 3000))
    assert p.max_cost_micro(masked) == 30_000
    smaller = req("1000x1000", operation="edit", images=[small])
    assert p.max_cost_micro(smaller) == 10_000  # a smaller input does not lower the hold
    assert p.cost_micro(edit, result((1000, 1000))) == 10_000
    generate = req("1000x1000", images=[wide])  # generate: inputs (if any) do not count
    assert p.max_cost_micro(generate) == 10_000


def test_per_image_edits_are_priced_at_the_requested_size() -> None:
    p = pricing({"per_image": {"1024x1024": 0.02, "2048x2048": 0.08}})
    edit = req(operation="edit", images=[image(2048, 2048)])
    assert p.max_cost_micro(edit) == 20_000


def test_an_image_of_unknown_size_is_charged_at_the_requested_size() -> None:
    p = pricing({"per_megapixel": 0.04, "megapixel_rounding": "none"})
    assert p.cost_micro(req("1024x1536"), result((1, 1024))) == 39  # a 1-pixel-wide image
    assert p.cost_micro(req("1024x1536"), result((1024, 1))) == 39
    assert p.cost_micro(req("1024x1536"), result((0, 0))) == 60_000
    assert p.cost_micro(req("1024x1536"), result((1024, 0))) == 60_000
    assert p.cost_micro(req("1024x1536"), result((0, 1536))) == 60_000
    table = pricing({"per_image": {"1024x1024": 0.02, "1024x1536": 0.03}})
    assert table.cost_micro(req("1024x1536"), result((0, 0))) == 30_000


# -- per image -------------------------------------------------------------------------------


def test_a_price_of_exactly_zero_is_a_price() -> None:
    p = pricing({"per_image": 0, **SOURCE})
    assert p.configured and p.form == "per_image"
    assert p.unit_price_usd(req()) == 0.0
    assert p.max_cost_micro(req(n=4)) == 0
    assert p.cost_micro(req(), result((1024, 1024))) == 0
    assert pricing({"per_megapixel": 0}).form == "per_megapixel"


def test_a_result_with_no_images_costs_nothing_in_every_form() -> None:
    usage = TokenUsage(input_tokens=100, output_tokens=4160, total_tokens=4260)
    for raw in ({"per_image": 0.04}, {"per_megapixel": 0.04}, PER_TOKEN):
        assert pricing(raw).cost_micro(req(), result(usage=usage)) == 0


def test_each_image_is_charged_at_its_own_size_and_the_quality_that_resolved() -> None:
    p = pricing(
        {
            "per_image": {
                "1024x1024": {"low": 0.01, "high": 0.1},
                "1024x1536": {"low": 0.015, "high": 0.15},
            },
            "default_quality": "high",
        }
    )
    r = req("auto", n=2)
    assert p.max_cost_micro(r) == 300_000  # auto size: the dearest size, default quality
    produced = result((1024, 1024), (1024, 1536), quality="low")
    assert p.cost_micro(r, produced) == 25_000
    assert p.cost_micro(r, result((1024, 1024))) == 100_000  # no quality said: the default
    assert p.unit_price_usd(req(quality="auto")) == 0.1  # auto quality: the dearest


def test_a_size_exactly_10_percent_above_a_tier_is_still_that_tier() -> None:
    p = pricing({"per_image": {"1000x1000": 0.1, "2000x2000": 0.2}})
    assert p.unit_price_usd(req("1100x1000")) == 0.1
    assert p.unit_price_usd(req("1101x1000")) == 0.2


def test_a_wide_tier_covers_sizes_by_its_own_width_times_height() -> None:
    p = pricing({"per_image": {"1536x1024": 0.1, "2048x2048": 0.2}})
    assert p.unit_price_usd(req("1400x1000")) == 0.1  # 1.4 MP <= 1.57 MP x 1.1
    tall = pricing({"per_image": {"1024x1536": 0.1, "2048x2048": 0.2}})
    assert tall.unit_price_usd(req("1000x1400")) == 0.1


def test_an_unlisted_size_takes_the_smallest_tier_that_covers_it_within_10_percent() -> None:
    p = pricing({"per_image": {"2048x2048": 0.2, "1024x1024": 0.1}})  # listed out of order
    assert p.unit_price_usd(req("1024x1024")) == 0.1
    assert p.unit_price_usd(req("1100x1040")) == 0.1  # 9% more pixels than 1024x1024
    assert p.unit_price_usd(req("1200x1024")) == 0.2  # 17% more: the next tier
    assert p.unit_price_usd(req("512x512")) == 0.1  # below the table: its smallest tier
    assert p.unit_price_usd(req("4096x4096")) == 0.2  # above it: the largest


def test_a_quality_not_in_the_table_costs_its_star_or_else_its_dearest() -> None:
    starred = pricing({"per_image": {"1024x1024": {"low": 0.01, "high": 0.09, "*": 0.05}}})
    assert starred.unit_price_usd(req(quality="ultra")) == 0.05
    assert starred.unit_price_usd(req(quality="low")) == 0.01
    plain = pricing({"per_image": {"1024x1024": {"low": 0.01, "high": 0.09, "mid": 0.05}}})
    assert plain.unit_price_usd(req(quality="ultra")) == 0.09


def test_the_hold_rounds_up_and_the_charge_rounds_half_up_to_a_micro_usd() -> None:
    p = pricing({"per_image": 0.0000025})
    assert p.max_cost_micro(req()) == 3
    assert p.cost_micro(req(), result((1024, 1024))) == 3  # 2.5 -> 3, not to even
    tokens = pricing({**PER_TOKEN, "per_million_tokens": {**RATES, "text_input": 2.5}})
    usage = TokenUsage(input_tokens=1, output_tokens=0, total_tokens=1)
    assert tokens.cost_micro(req(), result((1024, 1024), usage=usage)) == 3
    q = pricing({"per_image": 0.0000014})
    assert q.max_cost_micro(req()) == 2 and q.cost_micro(req(), result((1024, 1024))) == 1


def test_n_zero_holds_for_one_image() -> None:
    assert pricing({"per_image": 0.04}).max_cost_micro(req(n=0)) == 40_000


def test_a_per_image_table_is_listed_as_given() -> None:
    p = pricing({"per_image": {"1024x1024": {"low": 0.01, "high": 0.1}, "*": 0.2}, **SOURCE})
    assert p.to_json() == {
        "form": "per_image",
        "per_image": {"1024x1024": {"low": 0.01, "high": 0.1}, "*": 0.2},
        **SOURCE,
    }
    assert pricing({"free": True}).to_json() == {"form": "free"}
    assert pricing({}).to_json() == {"form": None}


# -- per token -------------------------------------------------------------------------------


def test_per_token_usage_splits_input_into_text_and_image_rates() -> None:
    p = pricing(PER_TOKEN)
    usage = TokenUsage(
        input_tokens=70,
        output_tokens=1000,
        total_tokens=1070,
        input_tokens_details={"text_tokens": 20, "image_tokens": 30},
    )
    # 20 text x $5 + 30 image x $10 + 20 unclassified (a generate: text rate) + 1000 x $40
    assert p.cost_micro(req(), result((1024, 1024), usage=usage)) == 100 + 300 + 100 + 40_000
    masked = req(operation="edit", mask=image(8, 8))  # an edit: unclassified at image rate
    assert p.cost_micro(masked, result((1024, 1024), usage=usage)) == 100 + 500 + 40_000


def test_per_token_reported_details_above_the_input_total_charge_no_negative_rest() -> None:
    p = pricing(PER_TOKEN)
    usage = TokenUsage(
        input_tokens=10,
        output_tokens=0,
        total_tokens=10,
        input_tokens_details={"text_tokens": 20, "image_tokens": 0},
    )
    assert p.cost_micro(req(), result((1024, 1024), usage=usage)) == 100


def test_per_token_hold_counts_prompt_bytes_input_images_and_the_mask() -> None:
    p = pricing(PER_TOKEN)
    output = 4160 * 40  # high quality 1024x1024
    assert p.max_cost_micro(req(quality="high", prompt="é" * 10)) == output + 20 * 5
    edit = req(operation="edit", quality="high", images=[image(8, 8)], mask=image(8, 8))
    assert p.max_cost_micro(edit) == output + 2 * 1000 * 10
    assert p.to_json()["per_million_tokens"] == {
        "text_input": 5.0,
        "image_input": 10.0,
        "image_output": 40.0,
    }
    assert p.to_json()["output_tokens"]["1024x1536"] == 6240.0
    assert p.form == "per_token"


def test_per_token_without_usage_charges_the_table_plus_the_input_bound() -> None:
    p = pricing(PER_TOKEN)
    r = req(quality="low", prompt="abcd", n=2)
    assert p.cost_micro(r, result((1024, 1024), quality="low")) == 272 * 40 + 4 * 5


def test_per_token_unit_price_adds_the_prompt_bound() -> None:
    p = pricing(PER_TOKEN)
    assert p.unit_price_usd(req(quality="low", prompt="abcd")) == pytest.approx(0.01088 + 0.00002)


def test_a_flat_price_is_one_catch_all_cell() -> None:
    assert pricing({"per_image": 0.04}).to_json()["per_image"] == {"*": 0.04}
    assert pricing({**PER_TOKEN, "output_tokens": 100}).to_json()["output_tokens"] == {"*": 100.0}


def test_a_megapixel_of_one_pixel_is_allowed() -> None:
    assert pricing({"per_megapixel": 0.000001, "megapixel": 1}).max_cost_micro(req("10x10")) == 100


def test_per_token_input_image_tokens_default_to_zero() -> None:
    raw = {k: v for k, v in PER_TOKEN.items() if k != "input_image_tokens"}
    p = pricing(raw)
    edit = req(operation="edit", quality="low", images=[image(8, 8)])
    assert p.max_cost_micro(edit) == 272 * 40


# -- parsing ---------------------------------------------------------------------------------


KNOWN = (
    "as_of, default_quality, default_steps, free, input_image_tokens, megapixel, "
    "megapixel_rounding, output_tokens, per_image, per_input_image, per_megapixel, "
    "per_million_tokens, source, unpriced"
)
NUMBER = "must be a number >= 0 (USD)"
COUNT = "must be an integer >= 0 (tokens)"
DATE = "must be a date YYYY-MM-DD"
MP = "must be a positive integer (pixels in one MP)"
ONLY = "only applies with a price form that uses it"
RATES = {"text_input": 5, "image_input": 10, "image_output": 40}


@pytest.mark.parametrize(
    ("raw", "where", "message"),
    [
        ("0.04", "pricing", "must be a mapping"),
        ({"cost": 1}, "pricing.cost", "unknown pricing field (known: " + KNOWN + ")"),
        ({"free": "yes"}, "pricing.free", "must be true or false"),
        ({"per_image": float("inf")}, "pricing.per_image", "must be a finite number"),
        ({"per_image": True}, "pricing.per_image", NUMBER),
        ({"per_image": -0.01}, "pricing.per_image", NUMBER),
        ({"per_image": {}}, "pricing.per_image", "must not be empty"),
        ({"per_image": {"1024x1024": {}}}, "pricing.per_image.1024x1024", "must not be empty"),
        (
            {"per_image": {"1x1": {1: 0.1}}},
            "pricing.per_image.1x1.1",
            "quality keys must be strings",
        ),
        (
            {"per_image": {1024: 0.1}},
            "pricing.per_image.1024",
            "size keys are 'WIDTHxHEIGHT' or '*'",
        ),
        ({"per_image": 0.1, "default_quality": 3}, "pricing.default_quality", "must be a string"),
        (
            {"per_image": 0.1, "source": 7},
            "pricing.source",
            "must be a non-empty string (where the price comes from)",
        ),
        (
            {"per_image": 0.1, "source": "  "},
            "pricing.source",
            "must be a non-empty string (where the price comes from)",
        ),
        ({"per_image": 0.1, "as_of": 20261121}, "pricing.as_of", DATE),
        ({"per_image": 0.1, "as_of": "2026-02-30"}, "pricing.as_of", DATE),
        ({"per_megapixel": 0.1, "megapixel": True}, "pricing.megapixel", MP),
        ({"per_megapixel": 0.1, "megapixel": 1.5}, "pricing.megapixel", MP),
        ({"per_megapixel": 0.1, "megapixel": 0}, "pricing.megapixel", MP),
        (
            {"per_megapixel": 0.1, "megapixel_rounding": "down"},
            "pricing.megapixel_rounding",
            "must be 'up' or 'none'",
        ),
        ({"per_megapixel": -0.1}, "pricing.per_megapixel", NUMBER),
        (
            {"per_million_tokens": 5},
            "pricing.per_million_tokens",
            "must be a mapping of text_input, image_input, image_output",
        ),
        (
            {**PER_TOKEN, "per_million_tokens": {**RATES, "video": 1}},
            "pricing.per_million_tokens.video",
            "unknown rate",
        ),
        (
            {**PER_TOKEN, "per_million_tokens": {"text_input": 1, "image_output": 1}},
            "pricing.per_million_tokens.image_input",
            "is required",
        ),
        (
            {**PER_TOKEN, "per_million_tokens": {**RATES, "image_output": -1}},
            "pricing.per_million_tokens.image_output",
            NUMBER,
        ),
        (
            {"per_million_tokens": RATES},
            "pricing.output_tokens",
            "is required with per_million_tokens (for the hold)",
        ),
        ({**PER_TOKEN, "input_image_tokens": -1}, "pricing.input_image_tokens", COUNT),
        ({**PER_TOKEN, "input_image_tokens": True}, "pricing.input_image_tokens", COUNT),
        ({**PER_TOKEN, "output_tokens": {"1x1": -1}}, "pricing.output_tokens.1x1", COUNT),
        (
            {"free": True, "per_megapixel": 1},
            "pricing",
            "give one price form, not per_megapixel and free",
        ),
        ({"megapixel": 1000}, "pricing.megapixel", ONLY),
        ({"megapixel_rounding": "up"}, "pricing.megapixel_rounding", ONLY),
        ({"input_image_tokens": 1}, "pricing.input_image_tokens", ONLY),
        ({"output_tokens": {"1x1": 1}}, "pricing.output_tokens", ONLY),
        (
            {"per_image": 0.1, "per_million_tokens": {}},
            "pricing",
            "give one price form, not per_image and per_million_tokens",
        ),
    ],
)
def test_a_bad_price_names_its_field(raw: Any, where: str, message: str) -> None:
    assert bad(raw) == f"model 't/m': endpoints[0].{where}: {message}"


def test_a_good_price_keeps_its_source_date_and_default_quality() -> None:
    p = pricing({"per_image": 0.1, "default_quality": "hd", **SOURCE})
    assert (p.source, p.as_of, p.default_quality) == (SOURCE["source"], "2026-11-21", "hd")
    assert not p.free and p.form == "per_image"
    assert pricing({"per_image": 0.25}).per_image is not None
    assert pricing({"free": False, "per_image": 1}).max_cost_micro(req()) == 1_000_000
    assert pricing(None).form is None and not pricing(None).configured
    assert pricing({}).unit_price_usd(req()) is None
    assert pricing({}).max_cost_micro(req()) == 0
    assert pricing({}).cost_micro(req(), result((1024, 1024))) == 0
    assert pricing({"per_megapixel": 0.5}).round_megapixels is True
    assert pricing({"per_megapixel": 0.5, "megapixel_rounding": "up"}).round_megapixels is True


# -- steps, input images, unpriced parameters ------------------------------------------------


@pytest.mark.parametrize("raw", [{"per_image": 0.1}, {"per_megapixel": 0.1}])
def test_steps_scale_the_price_by_steps_over_default_steps(raw: dict[str, Any]) -> None:
    """Together bills FLUX by steps / default steps: twice the steps, twice the price;
    a price without default_steps ignores steps."""
    scaled = pricing({**raw, "default_steps": 4})
    assert scaled.max_cost_micro(req("1000x1000")) == 100_000
    for steps, micro in ((1, 25_000), (8, 200_000), (1000, 25_000_000)):
        assert scaled.max_cost_micro(req("1000x1000", extra={"steps": steps})) == micro
        got = scaled.cost_micro(req("1000x1000", extra={"steps": steps}), result((1000, 1000)))
        assert got == micro
    assert scaled.unit_price_usd(req("1000x1000", extra={"steps": 2})) == 0.05
    one = pricing({**raw, "default_steps": 1})  # the smallest default allowed
    assert one.max_cost_micro(req("1000x1000", extra={"steps": 3})) == 300_000
    plain = pricing(raw)
    assert plain.max_cost_micro(req("1000x1000", extra={"steps": 8})) == 100_000
    assert plain.max_cost_micro(req("1000x1000", extra={"steps": "many"})) == 100_000


@pytest.mark.parametrize("steps", [0, 1001, -1, True, 1.5, "8"])
def test_steps_outside_1_to_1000_are_refused_naming_steps(steps: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        pricing({"per_image": 0.1, "default_steps": 4}).max_cost_micro(req(extra={"steps": steps}))
    err = info.value
    assert (err.status, err.param, err.code) == (400, "steps", "invalid_value")
    assert err.message == "'steps' must be an integer from 1 to 1000."


def test_input_images_are_billed_each_on_top_of_the_output() -> None:
    p = pricing({"per_image": 0.1, "per_input_image": 0.015})
    edit = req(operation="edit", images=[image(8, 8), image(16, 16)])
    assert p.max_cost_micro(edit) == 130_000
    assert p.cost_micro(edit, result((1024, 1024))) == 130_000
    assert p.unit_price_usd(edit) == 0.13
    assert p.max_cost_micro(req()) == 100_000
    assert pricing({"per_image": 0.1}).max_cost_micro(edit) == 100_000


def test_unpriced_names_only_the_listed_parameters_the_request_carries() -> None:
    both = pricing({"per_image": 0.1, "unpriced": ["steps", "image"]})
    carrying = req(operation="edit", images=[image(8, 8)], extra={"steps": 4})
    assert both.unpriced_fields(carrying) == ["steps", "image"]
    assert both.unpriced_fields(req(extra={"steps": 4})) == ["steps"]
    assert both.unpriced_fields(req(operation="edit", images=[image(8, 8)])) == ["image"]
    assert both.unpriced_fields(req()) == []
    assert pricing({"per_image": 0.1, "unpriced": ["image"]}).unpriced_fields(carrying) == ["image"]
    assert pricing({"per_image": 0.1}).unpriced_fields(carrying) == []


def test_billed_parameters_are_shown_with_the_price_and_absent_when_unset() -> None:
    shown = pricing(
        {"per_image": 0.1, "default_steps": 28, "per_input_image": 0.02, "unpriced": ["image"]}
    ).to_json()
    assert (shown["default_steps"], shown["per_input_image"], shown["unpriced"]) == (
        28,
        0.02,
        ["image"],
    )
    plain = pricing({"per_image": 0.1, "unpriced": []}).to_json()
    assert not {"default_steps", "per_input_image", "unpriced"} & set(plain)


STEPS = "must be a positive integer"
UNPRICED = "must be a list of: steps, image"


@pytest.mark.parametrize(
    ("raw", "where", "message"),
    [
        ({"per_image": 0.1, "default_steps": 0}, "pricing.default_steps", STEPS),
        ({"per_image": 0.1, "default_steps": True}, "pricing.default_steps", STEPS),
        ({"per_image": 0.1, "default_steps": 2.5}, "pricing.default_steps", STEPS),
        ({"per_image": 0.1, "default_steps": "4"}, "pricing.default_steps", STEPS),
        ({"per_image": 0.1, "per_input_image": -0.01}, "pricing.per_input_image", NUMBER),
        ({"per_image": 0.1, "unpriced": "steps"}, "pricing.unpriced", UNPRICED),
        ({"per_image": 0.1, "unpriced": ["steps", "size"]}, "pricing.unpriced", UNPRICED),
    ],
)
def test_a_bad_billed_parameter_names_its_field(raw: Any, where: str, message: str) -> None:
    assert bad(raw) == f"model 't/m': endpoints[0].{where}: {message}"
