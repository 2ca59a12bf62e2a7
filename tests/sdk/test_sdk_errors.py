"""SDK errors and retries against a real gateway: one exception class per status, the
parsed error envelope, and retries that wait the server's Retry-After."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fakes.asgi import serve_app
from gateway import free_port
from imagegate.client import (
    ApiClient,
    ApiConnectionError,
    ApiError,
    AsyncApiClient,
    AsyncImagesApi,
    BadRequestException,
    Configuration,
    ForbiddenException,
    ImageGenerationResponse,
    ImagePartialImageEvent,
    ImagesApi,
    ImageStream,
    NotFoundException,
    PaymentRequiredException,
    ServiceException,
    StreamError,
    TooManyRequestsException,
    UnauthorizedException,
)
from sdk_support import SdkStack, sdk_stack_fixture  # noqa: F401


def make_api(stack: SdkStack, key: str | None = None, retries: int = 0) -> ImagesApi:
    config = Configuration(
        host=stack.v1, access_token=key or stack.gateway.admin_key, max_retries=retries
    )
    return ImagesApi(ApiClient(config))


def test_400_names_the_field(sdk_stack: SdkStack) -> None:
    with pytest.raises(BadRequestException) as info:
        make_api(sdk_stack).create_image(model="sandbox", prompt="x", size="10x10")
    error = info.value
    assert error.status == 400 and error.reason == "Bad Request"
    assert error.param == "size" and error.type == "invalid_request_error"
    assert "10x10" in error.message and error.code
    assert error.request_id and error.headers["x-request-id"] == error.request_id
    assert '"error"' in (error.body or "")


def test_401_bad_key(sdk_stack: SdkStack) -> None:
    with pytest.raises(UnauthorizedException) as info:
        make_api(sdk_stack, key="ig_nope_" + "x" * 40).create_image(model="sandbox", prompt="x")
    assert info.value.status == 401 and info.value.message


def test_402_nothing_affordable(sdk_stack: SdkStack) -> None:
    with pytest.raises(PaymentRequiredException) as info:
        make_api(sdk_stack).create_image(
            model="test/priced", prompt="x", size="64x64", provider={"max_price": 0.01}
        )
    assert info.value.status == 402 and info.value.param == "provider.max_price"


def test_402_key_without_credits(sdk_stack: SdkStack) -> None:
    key = sdk_stack.create_key(credits=0)
    with pytest.raises(PaymentRequiredException) as info:
        make_api(sdk_stack, key=key).create_image(model="test/priced", prompt="x", size="64x64")
    assert info.value.status == 402


def test_403_model_not_allowed_for_key(sdk_stack: SdkStack) -> None:
    key = sdk_stack.create_key(models=["test/priced"])
    with pytest.raises(ForbiddenException) as info:
        make_api(sdk_stack, key=key).create_image(model="sandbox", prompt="x")
    assert info.value.status == 403 and "imagegate/sandbox" in info.value.message


def test_404_unknown_model(sdk_stack: SdkStack) -> None:
    with pytest.raises(NotFoundException) as info:
        make_api(sdk_stack).create_image(model="nobody/nothing", prompt="x")
    assert info.value.status == 404 and info.value.param == "model"


def test_429_rate_limited_key(sdk_stack: SdkStack) -> None:
    api = make_api(sdk_stack, key=sdk_stack.create_key(rpm=1))
    api.create_image(model="sandbox", prompt="x", size="64x64")
    with pytest.raises(TooManyRequestsException) as info:
        api.create_image(model="sandbox", prompt="x", size="64x64")
    assert info.value.status == 429
    assert info.value.retry_after is not None and info.value.retry_after > 0


def test_5xx_when_every_upstream_fails(sdk_stack: SdkStack) -> None:
    with pytest.raises(ServiceException) as info:
        make_api(sdk_stack).create_image(model="test/broken", prompt="x", size="256x256")
    assert info.value.status == 502 and "broken" in info.value.message


def test_upstream_429_is_passed_on_with_its_retry_after(sdk_stack: SdkStack) -> None:
    """One endpoint, upstream 429 + Retry-After: the gateway answers 502 with the wait."""
    sdk_stack.limited.reset(fail_first=1)
    with pytest.raises(ServiceException) as info:
        make_api(sdk_stack).create_image(model="test/limited", prompt="x", size="256x256")
    assert info.value.status == 502 and info.value.retry_after == 1.0
    assert len(sdk_stack.limited.calls) == 1


def test_retry_waits_the_servers_retry_after(sdk_stack: SdkStack) -> None:
    sdk_stack.limited.reset(fail_first=1)
    result = make_api(sdk_stack, retries=2).create_image(
        model="test/limited", prompt="x", size="256x256"
    )
    assert isinstance(result, ImageGenerationResponse) and len(result.data) == 1
    first, second = sdk_stack.limited.arrivals
    assert second - first >= 1.0  # the gateway's Retry-After: 1, waited out by the SDK


async def test_async_retry_and_error_classes(sdk_stack: SdkStack) -> None:
    sdk_stack.limited.reset(fail_first=1)
    config = Configuration(host=sdk_stack.v1, access_token=sdk_stack.gateway.admin_key)
    async with AsyncApiClient(config) as client:
        api = AsyncImagesApi(client)
        result = await api.create_image(model="test/limited", prompt="x", size="256x256")
        assert isinstance(result, ImageGenerationResponse)
        first, second = sdk_stack.limited.arrivals
        assert second - first >= 1.0
        with pytest.raises(BadRequestException):
            await api.create_image(model="sandbox", prompt="x", size="1x1")
        with pytest.raises(NotFoundException):
            await api.create_image_edit(b"\x89PNG", "x", model="nobody/nothing")
    client_no_retry = AsyncApiClient(
        Configuration(host=sdk_stack.v1, access_token="ig_bad_" + "y" * 40, max_retries=0)
    )
    async with client_no_retry:
        with pytest.raises(UnauthorizedException):
            await AsyncImagesApi(client_no_retry).create_image(model="sandbox", prompt="x")


def test_retries_are_not_spent_on_client_errors(sdk_stack: SdkStack) -> None:
    sdk_stack.limited.reset(fail_first=0)
    with pytest.raises(BadRequestException):
        make_api(sdk_stack, retries=3).create_image(
            model="test/limited", prompt="x", size="512x512"
        )
    assert sdk_stack.limited.calls == []


def test_connection_errors_are_retried_then_raised() -> None:
    config = Configuration(
        host=f"http://127.0.0.1:{free_port()}/v1", access_token="k", backoff_base=0.01
    )
    with pytest.raises(ApiConnectionError) as info:
        ImagesApi(ApiClient(config)).create_image(model="sandbox", prompt="x")
    assert isinstance(info.value, ApiError) and info.value.status == 0


def test_error_event_mid_stream_raises_stream_error() -> None:
    """A server that fails after the first event ends the stream with OpenAI's ``error``."""
    partial = {
        "type": "image_generation.partial_image",
        "b64_json": "AA==",
        "partial_image_index": 0,
    }
    error = {"type": "error", "error": {"message": "engine crashed", "type": "server_error",
                                         "param": None, "code": "upstream_error"}}  # fmt: skip
    body = (
        f"event: image_generation.partial_image\ndata: {json.dumps(partial)}\n\n"
        f": keep-alive comment\n\nevent: error\ndata: {json.dumps(error)}\n\n"
    )

    async def app(request: Request) -> Response:
        return Response(body, media_type="text/event-stream")

    with serve_app(
        Starlette(routes=[Route("/v1/images/generations", app, methods=["POST"])])
    ) as url:
        api = ImagesApi(ApiClient(Configuration(host=f"{url}/v1", access_token="k")))
        stream = api.create_image(model="m", prompt="p", stream=True)
        assert isinstance(stream, ImageStream)
        events = iter(stream)
        first = next(events)
        assert isinstance(first, ImagePartialImageEvent) and first.bytes() == b"\x00"
        with pytest.raises(StreamError) as info:
            next(events)
    assert info.value.message == "engine crashed" and info.value.code == "upstream_error"
