"""The OpenAPI request bodies are derived from the field declaration (``core.fields``), and
the error responses cover every status the gateway's errors can have: checked in-process,
beside the fuzz test that holds the live server to the document."""

from __future__ import annotations

import pytest

from imagegate.api import openapi
from imagegate.core.errors import GatewayError
from imagegate.core.fields import FIELDS, INPUT_FIELDS, ROUTING_FIELDS
from imagegate.core.types import Operation

BODIES: dict[str, tuple[Operation, bool]] = {
    "CreateImageRequest": ("generate", False),
    "CreateImageEditRequest": ("edit", True),
    "CreateImageEditJsonRequest": ("edit", False),
    "CreateImageVariationRequest": ("variation", True),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_each_body_has_exactly_the_declared_fields(name: str) -> None:
    operation, multipart = BODIES[name]
    schema = openapi.request_schemas()[name]
    expected = {
        f.name
        for f in (*INPUT_FIELDS, *FIELDS)
        if operation in f.operations and not (multipart and f.kind == "image_refs")
    }
    assert set(schema["properties"]) == expected
    required = {f.name for f in (*INPUT_FIELDS, *FIELDS) if operation in f.required}
    if not multipart:
        required -= {"image"}  # JSON may name its inputs in `images` instead
    assert set(schema["required"]) == required
    for f in FIELDS:
        if f.name in schema["properties"] and f.choices:
            assert schema["properties"][f.name]["enum"] == list(f.choices)


def test_limits_and_defaults_come_from_the_declaration() -> None:
    props = openapi.request_schemas()["CreateImageRequest"]["properties"]
    assert (props["n"]["minimum"], props["n"]["maximum"], props["n"]["default"]) == (1, 10, 1)
    assert props["partial_images"]["maximum"] == 3
    routing = openapi.request_schemas()["RoutingPreferences"]["properties"]
    assert set(routing) == {f.name for f in ROUTING_FIELDS}
    assert routing["max_price"]["minimum"] == 0


def test_each_images_operation_points_at_its_bodies() -> None:
    edit = openapi.OPERATIONS[("post", "/v1/images/edits")]
    assert edit["operationId"] == "createImageEdit"
    content = edit["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"]["$ref"].endswith("/CreateImageEditRequest")
    assert content["application/json"]["schema"]["$ref"].endswith("/CreateImageEditJsonRequest")
    ids = {
        path: op["operationId"]
        for (method, path), op in openapi.OPERATIONS.items()
        if path.startswith("/v1/images/")
    }
    assert ids == {
        "/v1/images/generations": "createImage",
        "/v1/images/edits": "createImageEdit",
        "/v1/images/variations": "createImageVariation",
    }


def _error_classes(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _error_classes(sub)
    return found


def test_every_error_status_has_a_documented_response() -> None:
    import imagegate.api.disconnect  # noqa: F401  (its 499 class must be among the subclasses)

    # 499 is nginx's "client closed request": the caller is gone, nobody reads that envelope.
    statuses = {cls.status for cls in _error_classes(GatewayError)} - {499}
    assert statuses, "no error classes found"
    assert {f"Error{s}" for s in statuses} <= set(openapi._error_responses())
