"""``ImagesApi`` and ``AsyncImagesApi``: the reference SDKs' surface over the gateway.

Each call exists under the gateway SDK's name (``images_generations_post`` ...), with a
``*_with_http_info`` variant returning ``(data, status_code, headers)``, and under the
OpenAI-spec SDK's name (``create_image`` ...). With ``stream=True`` the data is an
``ImageStream`` (an ``AsyncImageStream`` for the async twin) instead of a response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar, cast

import httpx

from imagegate_client import payload
from imagegate_client.api_client import ApiClient, AsyncApiClient
from imagegate_client.errors import ApiError
from imagegate_client.models import (
    ImageGenerationRequest,
    ImageGenerationResponse,
    ImageInput,
    ImagesEditRequest,
    ImageVariationRequest,
)
from imagegate_client.streaming import AsyncImageStream, ImageStream

R = TypeVar("R", ImageGenerationRequest, ImagesEditRequest, ImageVariationRequest)
Result = ImageGenerationResponse | ImageStream
AsyncResult = ImageGenerationResponse | AsyncImageStream
HttpInfo = tuple[Result, int, dict[str, str]]
AsyncHttpInfo = tuple[AsyncResult, int, dict[str, str]]


def coerce(cls: type[R], value: R | Mapping[str, Any] | None, **more: Any) -> R:
    """A request model from a model, a dict of fields, or keyword fields; unknown keys
    go to ``extra`` (sent as-is)."""
    if isinstance(value, cls):
        return value
    merged = {**(dict(cast(Mapping[str, Any], value)) if value else {}), **more}
    known = {f.name for f in fields(cls) if not f.name.startswith("_")} - {"extra"}
    extra = dict(merged.pop("extra", None) or {})
    extra.update({k: merged.pop(k) for k in list(merged) if k not in known})
    return cls(**{k: v for k, v in merged.items() if v is not None}, extra=extra)


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


def _parse(response: httpx.Response, timeout: float) -> ImageGenerationResponse:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(
            response.status_code,
            response.reason_phrase,
            headers=_headers(response),
            body=response.text,
            message="the gateway answered with something other than a JSON object",
        )
    return ImageGenerationResponse.from_dict(body, timeout)


class ImagesApi:
    """Sync Images API: ``ImagesApi(ApiClient(Configuration(host=..., access_token=...)))``."""

    def __init__(self, api_client: ApiClient | None = None) -> None:
        self.api_client = api_client or ApiClient()

    def _call(self, out: payload.Outgoing) -> HttpInfo:
        response = self.api_client.send(out)
        headers = _headers(response)
        if out.stream:
            stream = ImageStream(
                response.iter_lines(), response.close, response.status_code, headers
            )
            return stream, response.status_code, headers
        timeout = self.api_client.configuration.timeout
        return _parse(response, timeout), response.status_code, headers

    # -- the gateway SDK's names ------------------------------------------------------------

    def images_generations_post(
        self, image_generation_request: ImageGenerationRequest | Mapping[str, Any]
    ) -> Result:
        """Generate images from a prompt."""
        return self.images_generations_post_with_http_info(image_generation_request)[0]

    def images_generations_post_with_http_info(
        self, image_generation_request: ImageGenerationRequest | Mapping[str, Any]
    ) -> HttpInfo:
        request = coerce(ImageGenerationRequest, image_generation_request)
        return self._call(payload.generation(request))

    def images_edits_post(
        self, images_edit_request: ImagesEditRequest | Mapping[str, Any]
    ) -> Result:
        """Edit one or more images (paths, bytes, binary files or URLs)."""
        return self.images_edits_post_with_http_info(images_edit_request)[0]

    def images_edits_post_with_http_info(
        self, images_edit_request: ImagesEditRequest | Mapping[str, Any]
    ) -> HttpInfo:
        return self._call(payload.edit(coerce(ImagesEditRequest, images_edit_request)))

    def images_variations_post(
        self, image_variation_request: ImageVariationRequest | Mapping[str, Any]
    ) -> Result:
        """Variations of one image."""
        return self.images_variations_post_with_http_info(image_variation_request)[0]

    def images_variations_post_with_http_info(
        self, image_variation_request: ImageVariationRequest | Mapping[str, Any]
    ) -> HttpInfo:
        return self._call(payload.variation(coerce(ImageVariationRequest, image_variation_request)))

    # -- the OpenAI-spec SDKs' names --------------------------------------------------------

    def create_image(
        self,
        create_image_request: ImageGenerationRequest | Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Result:
        """``create_image(request)`` or ``create_image(prompt=..., model=..., ...)``."""
        return self.images_generations_post(
            coerce(ImageGenerationRequest, create_image_request, **fields)
        )

    def create_image_edit(
        self,
        image: ImageInput | list[ImageInput] | ImagesEditRequest,
        prompt: str | None = None,
        mask: ImageInput | None = None,
        model: str | None = None,
        n: int | None = None,
        size: str | None = None,
        response_format: str | None = None,
        user: str | None = None,
        **fields: Any,
    ) -> Result:
        """The OpenAI-spec argument order: ``(image, prompt, mask, model, n, size, ...)``."""
        if isinstance(image, ImagesEditRequest):
            return self.images_edits_post(image)
        request = coerce(
            ImagesEditRequest,
            None,
            image=image,
            prompt=prompt,
            mask=mask,
            model=model,
            n=n,
            size=size,
            response_format=response_format,
            user=user,
            **fields,
        )
        return self.images_edits_post(request)

    def create_image_variation(
        self,
        image: ImageInput | ImageVariationRequest,
        model: str | None = None,
        n: int | None = None,
        response_format: str | None = None,
        size: str | None = None,
        user: str | None = None,
        **fields: Any,
    ) -> Result:
        """The OpenAI-spec argument order: ``(image, model, n, response_format, size, user)``."""
        if isinstance(image, ImageVariationRequest):
            return self.images_variations_post(image)
        request = coerce(
            ImageVariationRequest,
            None,
            image=image,
            model=model,
            n=n,
            response_format=response_format,
            size=size,
            user=user,
            **fields,
        )
        return self.images_variations_post(request)


class AsyncImagesApi:
    """The same calls as ``ImagesApi``, awaitable, over an ``AsyncApiClient``."""

    def __init__(self, api_client: AsyncApiClient | None = None) -> None:
        self.api_client = api_client or AsyncApiClient()

    async def _call(self, out: payload.Outgoing) -> AsyncHttpInfo:
        response = await self.api_client.send(out)
        headers = _headers(response)
        if out.stream:
            stream = AsyncImageStream(
                response.aiter_lines(), response.aclose, response.status_code, headers
            )
            return stream, response.status_code, headers
        timeout = self.api_client.configuration.timeout
        return _parse(response, timeout), response.status_code, headers

    async def images_generations_post(
        self, image_generation_request: ImageGenerationRequest | Mapping[str, Any]
    ) -> AsyncResult:
        return (await self.images_generations_post_with_http_info(image_generation_request))[0]

    async def images_generations_post_with_http_info(
        self, image_generation_request: ImageGenerationRequest | Mapping[str, Any]
    ) -> AsyncHttpInfo:
        request = coerce(ImageGenerationRequest, image_generation_request)
        return await self._call(payload.generation(request))

    async def images_edits_post(
        self, images_edit_request: ImagesEditRequest | Mapping[str, Any]
    ) -> AsyncResult:
        return (await self.images_edits_post_with_http_info(images_edit_request))[0]

    async def images_edits_post_with_http_info(
        self, images_edit_request: ImagesEditRequest | Mapping[str, Any]
    ) -> AsyncHttpInfo:
        return await self._call(payload.edit(coerce(ImagesEditRequest, images_edit_request)))

    async def images_variations_post(
        self, image_variation_request: ImageVariationRequest | Mapping[str, Any]
    ) -> AsyncResult:
        return (await self.images_variations_post_with_http_info(image_variation_request))[0]

    async def images_variations_post_with_http_info(
        self, image_variation_request: ImageVariationRequest | Mapping[str, Any]
    ) -> AsyncHttpInfo:
        request = coerce(ImageVariationRequest, image_variation_request)
        return await self._call(payload.variation(request))

    async def create_image(
        self,
        create_image_request: ImageGenerationRequest | Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> AsyncResult:
        return await self.images_generations_post(
            coerce(ImageGenerationRequest, create_image_request, **fields)
        )

    async def create_image_edit(
        self,
        image: ImageInput | list[ImageInput] | ImagesEditRequest,
        prompt: str | None = None,
        mask: ImageInput | None = None,
        model: str | None = None,
        n: int | None = None,
        size: str | None = None,
        response_format: str | None = None,
        user: str | None = None,
        **fields: Any,
    ) -> AsyncResult:
        if isinstance(image, ImagesEditRequest):
            return await self.images_edits_post(image)
        request = coerce(
            ImagesEditRequest,
            None,
            image=image,
            prompt=prompt,
            mask=mask,
            model=model,
            n=n,
            size=size,
            response_format=response_format,
            user=user,
            **fields,
        )
        return await self.images_edits_post(request)

    async def create_image_variation(
        self,
        image: ImageInput | ImageVariationRequest,
        model: str | None = None,
        n: int | None = None,
        response_format: str | None = None,
        size: str | None = None,
        user: str | None = None,
        **fields: Any,
    ) -> AsyncResult:
        if isinstance(image, ImageVariationRequest):
            return await self.images_variations_post(image)
        request = coerce(
            ImageVariationRequest,
            None,
            image=image,
            model=model,
            n=n,
            response_format=response_format,
            size=size,
            user=user,
            **fields,
        )
        return await self.images_variations_post(request)
