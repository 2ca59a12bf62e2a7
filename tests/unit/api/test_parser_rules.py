"""Request-parser rules: each field's coercion, the same from JSON and from multipart text,
and the 400 a bad value gets (``code``, ``param``, a message naming the field)."""

from __future__ import annotations

from typing import Any

import pytest

from imagegate.api.fields import (
    as_bool,
    as_int,
    as_str_list,
    fold_form_fields,
    parse_fields,
)
from imagegate.catalog.catalog import Catalog, merge_providers
from imagegate.catalog.rules import resolve_request
from imagegate.core.errors import InvalidRequest
from imagegate.core.fields import declared
from imagegate.core.types import RoutingPreferences


def parse(**raw: Any) -> Any:
    return parse_fields("generate", {"model": "m", **raw})


def refused(raw: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_fields("generate", raw)
    assert info.value.status == 400
    return info.value


def test_json_and_multipart_give_the_same_request() -> None:
    json_body = {
        "model": "m",
        "prompt": "a cat",
        "n": 2,
        "stream": True,
        "provider": {"order": ["b", "a"], "sort": "price", "max_price": 0.05},
        "seed": -7,
    }
    form = fold_form_fields(
        [
            ("model", "m"),
            ("prompt", "a cat"),
            ("n", "2"),
            ("stream", "true"),
            ("provider[order][]", "b"),
            ("provider[order][]", "a"),
            ("provider[sort]", "price"),
            ("provider[max_price]", "0.05"),
            ("seed", " -7 "),
        ]
    )
    a, b = parse_fields("edit", json_body), parse_fields("edit", form)
    assert a == b
    assert a.operation == "edit" and (a.model, a.prompt, a.n, a.stream, a.seed) == (
        "m",
        "a cat",
        2,
        True,
        -7,
    )
    assert a.provider == RoutingPreferences(order=["b", "a"], sort="price", max_price=0.05)


def test_folding_multipart_fields() -> None:
    assert fold_form_fields([("tag", "xy"), ("tag", "z")]) == {"tag": ["xy", "z"]}
    assert fold_form_fields([("tag", "x"), ("tag", "y"), ("tag", "z")]) == {"tag": ["x", "y", "z"]}
    assert fold_form_fields([("a[0]", "x"), ("a[1]", "y")]) == {"a": ["x", "y"]}
    assert fold_form_fields([("a", "x"), ("a[]", "y")]) == {"a": ["x", "y"]}
    assert fold_form_fields([("p[q][r]", "1"), ("p[q][s]", "2"), ("p[t]", "3")]) == {
        "p": {"q": {"r": "1", "s": "2"}, "t": "3"}
    }
    assert fold_form_fields([("p", "flat"), ("p[q]", "1")]) == {"p": {"q": "1"}}
    assert fold_form_fields([]) == {}


def test_every_string_field_is_kept_and_must_be_a_string() -> None:
    names: tuple[str, ...] = ("prompt", "size", "quality", "style", "response_format")
    names += ("output_format", "background", "moderation", "user", "input_fidelity")
    values = {"response_format": "url", "output_format": "webp"}
    req = parse(**{n: values.get(n, f"v-{n}") for n in names})
    for name in names:
        assert getattr(req, name) == values.get(name, f"v-{name}")
    err = refused({"model": "m", "prompt": 5})
    assert (err.code, err.param, err.message) == (
        "invalid_type",
        "prompt",
        "'prompt' must be a string.",
    )
    assert refused({"model": 1}).param == "model"


def test_choice_fields_accept_only_their_values() -> None:
    assert parse(response_format="b64_json").response_format == "b64_json"
    assert parse(output_format="jpeg").output_format == "jpeg"
    err = refused({"model": "m", "response_format": "gif"})
    assert (err.code, err.param) == ("invalid_value", "response_format")
    assert err.message == "Invalid response_format 'gif'. Supported: url, b64_json."
    err = refused({"model": "m", "output_format": "bmp"})
    assert err.message == "Invalid output_format 'bmp'. Supported: png, jpeg, webp."


def test_integers_from_json_or_text() -> None:
    req = parse(n="3", output_compression=80, partial_images=2.0, seed="12")
    assert (req.n, req.output_compression, req.partial_images, req.seed) == (3, 80, 2, 12)
    assert as_int("n", "9" * 19) == int("9" * 19)
    for bad in (True, 2.5, "2.5", "", "1e3", "9" * 20, [1], "0x10"):
        with pytest.raises(InvalidRequest) as info:
            as_int("n", bad)
        err = info.value
        assert (err.code, err.param, err.message) == (
            "invalid_type",
            "n",
            "'n' must be an integer.",
        )


def test_booleans_from_json_text_or_0_and_1() -> None:
    for truthy in (True, "true", " TRUE ", "1", 1):
        assert as_bool("stream", truthy) is True
    for falsy in (False, "false", "False", "0", 0):
        assert as_bool("stream", falsy) is False
    for bad in ("yes", 2, 1.0, None, "", [True]):
        with pytest.raises(InvalidRequest) as info:
            as_bool("stream", bad)
        err = info.value
        assert (err.code, err.param) == ("invalid_type", "stream")
        assert err.message == "'stream' must be a boolean (true/false)."
    for name, bad in (("n", "two"), ("seed", 1.5), ("stream", "maybe"), ("usage", 3)):
        assert refused({"model": "m", name: bad}).param == name
    req = parse(stream="1", meta="true", usage=True)
    assert (req.stream, req.meta, req.usage) == (True, True, True)


def test_model_is_required() -> None:
    for raw in ({}, {"model": ""}, {"model": None, "prompt": "x"}):
        err = refused(raw)
        assert (err.code, err.param) == ("missing_required_parameter", "model")
        assert err.message == "Missing required parameter: 'model'."


def test_nulls_and_image_fields_are_skipped_and_unknown_fields_kept_as_extra() -> None:
    req = parse(n=None, prompt=None, image="x", images=["y"], mask="z", aspect_ratio="16:9")
    assert (req.n, req.prompt) == (1, None)
    assert req.extra == {"aspect_ratio": "16:9"}


def test_routing_preferences_every_option() -> None:
    prefs = parse(
        provider={
            "unused": None,  # a null option is skipped, and the rest still read
            "order": "a, b,,",
            "only": ["a"],
            "ignore": ["c"],
            "include_alpha": "true",
            "allow_fallbacks": False,
            "require_parameters": "1",
            "sort": "latency",
            "max_price": {"image": "0.5"},
        }
    ).provider
    assert prefs == RoutingPreferences(
        order=["a", "b"],
        only=["a"],
        ignore=["c"],
        include_alpha=True,
        allow_fallbacks=False,
        require_parameters=True,
        sort="latency",
        max_price=0.5,
    )
    assert parse(provider='{"sort": "throughput"}').provider.sort == "throughput"
    assert parse(provider={"max_price": {"per_image": 2}}).provider.max_price == 2.0
    assert parse(provider={"max_price": 0}).provider.max_price == 0.0


@pytest.mark.parametrize(
    ("provider", "param", "code", "message"),
    [
        (
            "not json",
            "provider",
            "invalid_type",
            "'provider' must be an object (or a JSON string of one).",
        ),
        ("[1]", "provider", "invalid_type", "'provider' must be an object."),
        (["a"], "provider", "invalid_type", "'provider' must be an object."),
        ({"sort": "x"}, "provider.sort", "invalid_value", "Supported: price, latency, throughput."),
        (
            {"sort": "cost"},
            "provider.sort",
            "invalid_value",
            "Invalid provider.sort 'cost'. Supported: ",
        ),
        ({"colour": 1}, "provider.colour", "unknown_parameter", "Unknown routing option 'colour'"),
        ({"order": [1]}, "provider.order", "invalid_type", "must be a list of provider ids"),
        ({"only": 3}, "provider.only", "invalid_type", "'provider.only' must be a list"),
        ({"allow_fallbacks": "maybe"}, "provider.allow_fallbacks", "invalid_type", "boolean"),
        ({"max_price": -0.01}, "provider.max_price", "invalid_type", "USD per image >= 0"),
        ({"max_price": "cheap"}, "provider.max_price", "invalid_type", "USD per image >= 0"),
        ({"max_price": True}, "provider.max_price", "invalid_type", "USD per image >= 0"),
        ({"max_price": {"video": 1}}, "provider.max_price", "invalid_type", "USD per image"),
    ],
)
def test_bad_routing_preferences_name_the_option(
    provider: Any, param: str, code: str, message: str
) -> None:
    err = refused({"model": "m", "provider": provider})
    assert (err.param, err.code) == (param, code) and message in err.message


def test_a_provider_that_is_not_an_object_is_refused_in_full_words() -> None:
    assert refused({"model": "m", "provider": "{"}).message == (
        "'provider' must be an object (or a JSON string of one)."
    )
    assert refused({"model": "m", "provider": 3}).message == "'provider' must be an object."


def test_a_provider_list_from_text_drops_blanks() -> None:
    assert as_str_list("p", " a ,b , ") == ["a", "b"]
    assert as_str_list("p", []) == []
    with pytest.raises(InvalidRequest) as info:
        as_str_list("p", ["a", 2])
    assert info.value.param == "p"


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("output_compression", -1, False),
        ("output_compression", 0, True),
        ("output_compression", 100, True),
        ("output_compression", 101, False),
        ("partial_images", 0, True),
        ("partial_images", 3, True),
        ("partial_images", 4, False),
        ("partial_images", -1, False),
    ],
)
def test_rules_enforce_the_declared_limits(field: str, value: int, ok: bool) -> None:
    """Limits every model shares come from the field declaration (``core.fields``)."""
    types = {p.id: p.type for p in merge_providers([])}
    spec = Catalog.load(None, types).resolve("imagegate/sandbox")
    req = parse_fields("generate", {"model": spec.id, "prompt": "a", "output_format": "webp"})
    setattr(req, field, value)
    limits = declared(field)
    if ok:
        resolve_request(spec, req)
        return
    with pytest.raises(InvalidRequest) as info:
        resolve_request(spec, req)
    assert info.value.param == field
    assert f"between {limits.minimum} and {limits.maximum}" in str(info.value)
