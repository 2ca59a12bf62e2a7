"""The SDK's request models are generated from the gateway's field declaration
(``imagegate.core.fields``) by ``python -m imagegate.tools.sdk_models``: the committed module
is what the generator writes now, and what the models send is what the parser reads."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from imagegate.api.fields import parse_fields
from imagegate.api.schemas import SCHEMAS
from imagegate.core.fields import FIELDS, INPUT_FIELDS, ROUTING_FIELDS, Field
from imagegate.core.types import Operation, RequestFields, RoutingPreferences
from imagegate.tools import sdk_models
from imagegate_client import (
    Attempt,
    Image,
    ImageGenerationRequest,
    ImageGenerationResponse,
    ImagesEditRequest,
    ImageVariationRequest,
    Meta,
    ProviderRoutingOptions,
    Usage,
)
from repo_root import REPO

COMMITTED = REPO / "clients" / "python" / "src" / "imagegate_client" / "generated_models.py"
# Every request model takes the routing options (``provider``): the union says so to mypy.
RequestModel = type[ImageGenerationRequest] | type[ImagesEditRequest] | type[ImageVariationRequest]
MODELS: dict[Operation, RequestModel] = {
    "generate": ImageGenerationRequest,
    "edit": ImagesEditRequest,
    "variation": ImageVariationRequest,
}


def test_committed_module_is_what_the_generator_writes() -> None:
    assert sdk_models.TARGET == COMMITTED
    assert COMMITTED.read_text() == sdk_models.render(), "run: python -m imagegate.tools.sdk_models"
    assert "do not edit" in COMMITTED.read_text().split('"""')[1]


def test_check_mode_fails_on_a_stale_module(tmp_path: Path) -> None:
    target = tmp_path / "generated_models.py"
    assert sdk_models.main(["--check"], target) == 1  # missing
    target.write_text(sdk_models.render().replace("seed", "sed"))
    assert sdk_models.main(["--check"], target) == 1  # edited by hand
    assert sdk_models.main([], target) == 0
    assert sdk_models.main(["--check"], target) == 0
    assert target.read_text() == COMMITTED.read_text()


@pytest.mark.parametrize("operation", list(MODELS))
def test_each_model_has_exactly_the_declared_fields(operation: Operation) -> None:
    declared = {
        f.name
        for f in (*INPUT_FIELDS, *FIELDS)
        if operation in f.operations and f.kind != "image_refs"
    }
    assert {f.name for f in fields(MODELS[operation]) if f.name != "extra"} == declared
    routing = [f.name for f in fields(ProviderRoutingOptions)]
    assert routing == [f.name for f in ROUTING_FIELDS]


def _valid(f: Field) -> Any:
    """A value of ``f``'s declared kind that the parser accepts for every model."""
    if f.choices:
        return f.choices[-1]
    return {"string": "x", "integer": f.minimum or 2, "boolean": True}[f.kind]


@pytest.mark.parametrize("operation", list(MODELS))
def test_what_a_model_sends_the_parser_reads_into_the_same_fields(operation: Operation) -> None:
    values = {
        f.name: _valid(f) for f in FIELDS if operation in f.operations and f.kind not in ("object",)
    }
    routing = ProviderRoutingOptions(order=["a"], sort="price", max_price=0.5, include_alpha=True)
    model = MODELS[operation](**values, provider=routing, extra={"future": 1})
    body = model.to_dict()
    assert body["provider"] == {
        "order": ["a"],
        "include_alpha": True,
        "sort": "price",
        "max_price": 0.5,
    }

    req = parse_fields(operation, body)

    for name, value in values.items():
        assert getattr(req, name) == value, name
    assert req.provider == RoutingPreferences(
        order=["a"], include_alpha=True, sort="price", max_price=0.5
    )
    assert req.extra == {"future": 1}  # only what the declaration does not know


def test_declared_defaults_are_the_parsed_requests_defaults() -> None:
    """A field left out means its declared default, in ``RequestFields`` and routing alike."""
    bare = parse_fields("generate", {"model": "m"})
    for f in FIELDS:
        if f.default is not None:
            assert getattr(bare, f.name) == f.default, f.name
    for f in ROUTING_FIELDS:
        if f.default is not None:
            assert getattr(RoutingPreferences(), f.name) == f.default, f.name
    assert isinstance(bare, RequestFields)


def test_every_declared_field_is_an_image_request_attribute() -> None:
    """The parser sets each declared field on ``RequestFields`` (slots: a missing one is a
    500), and each routing option on ``RoutingPreferences``."""
    request_attrs = set(RequestFields.__dataclass_fields__)
    assert {f.name for f in FIELDS} <= request_attrs  # input images are resolved apart
    assert {f.name for f in ROUTING_FIELDS} == set(RoutingPreferences.__dataclass_fields__)


@pytest.mark.parametrize(
    ("model", "schema", "sdk_only"),
    [
        (ImageGenerationResponse, "ImagesResponse", {"raw"}),
        (Image, "Image", {"timeout"}),
        (Usage, "ImagesUsage", set()),
        (Meta, "GenerationMeta", set()),
        (Attempt, "Attempt", set()),
    ],
)
def test_sdk_responses_read_the_declared_response_fields(
    model: type, schema: str, sdk_only: set[str]
) -> None:
    """Response shapes are declared in ``api.schemas`` (the fuzz test holds the server to
    them); the SDK's hand-written response models, which carry behaviour, read the same."""
    assert {f.name for f in fields(model)} - sdk_only == set(SCHEMAS[schema]["properties"])
