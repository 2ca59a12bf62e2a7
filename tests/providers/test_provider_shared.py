"""The adapters' shared mechanics (``providers/_shared``) on their own: each adapter's
test runs them against its fake; these pin the rules every adapter now relies on."""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image

from imagegate.core.errors import InvalidRequest, UpstreamError
from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import InputImage
from imagegate.media.images import decode
from imagegate.providers._shared.answers import (
    OpenAIStyleError,
    failure,
    item_image,
    json_object,
    refusal,
)
from imagegate.providers._shared.common import white_edit_mask
from imagegate.providers._shared.inputs import (
    auth_headers,
    fan_out_numbered,
    limit_images,
    refuse_mask,
    with_overrides,
)
from imagegate.providers._shared.tasks import poll_task
from imagegate.providers.sandbox import SandboxProvider
from request_support import image_request


def answer(status: int, body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers)


def png(width: int, height: int, mode: str = "RGB") -> InputImage:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    data = buffer.getvalue()
    return InputImage(data=data, format="png", width=width, height=height)


def test_an_openai_style_error_is_read_field_by_field() -> None:
    body = b'{"error": {"message": "bad size", "code": "invalid_size", "param": "", "type": "t"}}'
    error = OpenAIStyleError.read(answer(400, body))
    assert (error.message, error.code, error.param, error.type) == (
        "bad size",
        "invalid_size",
        None,  # an empty param names no field
        "t",
    )
    classified = error.upstream("p", answer(400, body))
    assert isinstance(classified.client_error, InvalidRequest)
    assert classified.client_error.code == "invalid_size"


def test_a_plain_string_error_is_a_message_only_where_the_adapter_says_so() -> None:
    response = answer(400, b'{"error": "NSFW content detected"}')
    assert OpenAIStyleError.read(response, flat=True).message == "NSFW content detected"
    assert OpenAIStyleError.read(response).message == "Bad Request"  # the reason phrase


def test_a_failure_takes_its_status_and_retry_after_from_the_answer() -> None:
    error = failure("p", answer(429, b"", **{"retry-after": "7"}), "x" * 900)
    assert (error.status, error.retryable, error.retry_after_s) == (429, True, 7.0)
    assert error.message == f"p returned 429: {'x' * 500}"
    hinted = failure("p", answer(429, b"", **{"retry-after": "7"}), "slow", retry_after_s=2.0)
    assert hinted.retry_after_s == 2.0
    reclassified = failure("p", answer(400, b""), "wrong key", status=401)
    assert reclassified.retryable and reclassified.ours and reclassified.status == 401


def test_a_refusal_is_the_callers_content_policy_400() -> None:
    error = refusal("p", "flagged")
    assert not error.retryable
    assert isinstance(error.client_error, InvalidRequest)
    assert error.client_error.code == "content_policy_violation"


def test_json_object_fails_over_on_anything_but_an_object() -> None:
    def error(response: httpx.Response) -> UpstreamError:
        return UpstreamError("adapter's own", status=response.status_code, retryable=False)

    assert json_object("p", answer(200, b'{"a": 1}'), error) == {"a": 1}
    with pytest.raises(UpstreamError, match="adapter's own"):
        json_object("p", answer(503, b"{}"), error)
    with pytest.raises(UpstreamError, match="returned invalid JSON") as bad:
        json_object("p", answer(200, b"<html>"), error)
    assert bad.value.retryable and bad.value.status == 502
    with pytest.raises(UpstreamError, match="returned a malformed answer"):
        json_object("p", answer(200, b"[1]"), error, what="a malformed answer")


async def test_an_entry_without_an_image_raises_what_the_adapter_says() -> None:
    async def never(url: str) -> bytes:
        raise AssertionError("nothing to fetch")

    with pytest.raises(UpstreamError, match="neither b64_json nor url"):
        await item_image("p", never, {"b64_json": ""})
    with pytest.raises(UpstreamError, match="withheld"):
        await item_image("p", never, {}, lambda item: refusal("p", "withheld"))
    with pytest.raises(UpstreamError, match="malformed image entry"):
        await item_image("p", never, "not an entry")


def test_edit_checks_name_the_field() -> None:
    image = png(8, 8)
    request = image_request(
        operation="edit", model="m", prompt="x", images=[image, image], mask=image
    )
    with pytest.raises(InvalidRequest) as mask:
        refuse_mask(request, "no masks here")
    assert (mask.value.param, mask.value.code) == ("mask", "unsupported_parameter")
    with pytest.raises(InvalidRequest) as images:
        limit_images(request, 1, "one image only")
    assert (images.value.param, images.value.code) == ("image", "too_many_images")
    limit_images(request, 2, "two are fine")


def test_a_required_edit_region_is_refused_when_the_image_has_none() -> None:
    opaque = png(8, 8)
    with pytest.raises(InvalidRequest) as missing:
        white_edit_mask(opaque, None, missing="needs a mask")
    assert (missing.value.param, missing.value.code) == ("mask", "missing_required_parameter")
    whole = decode(InputImage(white_edit_mask(opaque, None), "png", 8, 8))
    assert whole.convert("L").getextrema() == (255, 255)  # no region: edit everywhere


def test_auth_headers_put_the_key_where_the_upstream_reads_it() -> None:
    assert auth_headers("k") == {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Authorization": "Bearer k",
    }
    assert auth_headers("k", "x-key", "", json_body=False) == {
        "Accept": "application/json",
        "x-key": "k",
    }
    assert "Authorization" not in auth_headers(None)


@dataclass(frozen=True)
class _Spec:
    size: str = "image_size"
    ratios: tuple[str, ...] = ()


def test_operator_overrides_replace_fields_of_one_model_only() -> None:
    models = {"m": {"ratios": ["1:1", "16:9"]}, "other": "not a mapping"}
    assert with_overrides(_Spec(), models, "m") == _Spec(ratios=("1:1", "16:9"))
    assert with_overrides(_Spec(), models, "other") == _Spec()
    assert with_overrides(_Spec(), None, "m") == _Spec()


async def test_numbered_fan_out_numbers_the_calls_in_order() -> None:
    seen: list[tuple[int, int]] = []

    async def call(index: int, k: int) -> list[int]:
        seen.append((index, k))
        return [index] * k

    assert await fan_out_numbered(5, 2, call) == [0, 0, 1, 1, 2]
    assert seen == [(0, 2), (1, 2), (2, 1)]


async def test_a_task_that_never_finishes_times_out_as_a_retryable_504() -> None:
    config = ProviderConfig(
        id="slow", type="sandbox", options={"poll_timeout_s": 0.05, "poll_interval_s": 0.01}
    )
    provider = SandboxProvider(config, None)  # type: ignore[arg-type]  # polls nothing

    async def pending() -> int | None:
        return None

    with pytest.raises(UpstreamError) as timed_out:
        await poll_task(provider, pending, interval_s=1.0)
    assert (timed_out.value.status, timed_out.value.timeout) == (504, True)
    assert timed_out.value.retryable
