"""Adapter for any server that speaks OpenAI's Images API (LocalAI, vLLM-Omni, imagegate).

Wire protocol: OpenAI API reference, "Images" (POST /images/generations as JSON;
/images/edits and /images/variations as multipart/form-data, several edit inputs as
repeated ``image[]`` parts; ``Authorization: Bearer``; errors as
``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from imagegate.core.errors import GatewayError, UpstreamError
from imagegate.core.types import (
    GeneratedImage,
    ImageRequest,
    ImageResult,
    InputImage,
    TokenUsage,
)
from imagegate.providers._shared.common import (
    bad_upstream,
    caller_fields,
    data_items,
    image_from_b64,
    image_from_bytes,
    json_reply,
    post_json,
    retry_after,
    upstream_error,
)
from imagegate.providers.base import Capabilities, Provider
from imagegate.providers.openai.wire import _error_body

_PASSTHROUGH = (
    "quality",
    "style",
    "output_format",
    "output_compression",
    "background",
    "moderation",
    "user",
    "input_fidelity",
)


class OpenAICompatibleProvider(Provider):
    type_name = "openai_compatible"
    capabilities = Capabilities(native_compression=True)
    requires_credentials = False

    @property
    def available(self) -> bool:
        has_key = self.config.resolved_api_key() is not None
        return bool(self.config.base_url) and (has_key or not self.config.api_key_env)

    async def generate(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        body = self._fields(request, upstream_model)
        body["prompt"] = request.prompt
        return await self._post("/images/generations", request, json_body=body)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        fields = self._fields(request, upstream_model)
        fields["prompt"] = request.prompt
        key = "image[]" if len(request.images) > 1 else "image"
        files = [(key, _file(img)) for img in request.images]
        if request.mask is not None:
            files.append(("mask", _file(request.mask)))
        return await self._post("/images/edits", request, form=fields, files=files)

    async def variation(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        fields = self._fields(request, upstream_model)
        files = [("image", _file(request.images[0]))]
        return await self._post("/images/variations", request, form=fields, files=files)

    def _fields(self, request: ImageRequest, upstream_model: str) -> dict[str, Any]:
        fields: dict[str, Any] = {"model": upstream_model, "n": request.n, "size": request.size}
        for name in _PASSTHROUGH:
            value = getattr(request, name)
            if value is not None:
                fields[name] = value
        if request.seed is not None:
            fields["seed"] = request.seed
        response_format = self.config.options.get("response_format", "b64_json")
        if response_format and not upstream_model.startswith("gpt-image"):
            fields["response_format"] = response_format
        for name, value in caller_fields(self.config.options, request.extra, None).items():
            fields.setdefault(name, value)
        return fields

    async def _post(
        self,
        path: str,
        request: ImageRequest,
        *,
        json_body: dict[str, Any] | None = None,
        form: dict[str, Any] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
    ) -> ImageResult:
        key = self.config.resolved_api_key()
        url = f"{self.config.base_url}{path}"
        if json_body is not None:
            response = await post_json(
                self.context.http, url, json_body, api_key=key, timeout_s=self.config.timeout_s
            )
        else:
            headers = {"Accept": "application/json"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            data = {k: _form_value(v) for k, v in (form or {}).items()}
            response = await self.context.http.post(
                url, data=data, files=files, headers=headers, timeout=self.config.timeout_s
            )
        if response.status_code >= 400:
            raise self._error(response)
        payload = json_reply(self.id, response)
        items = data_items(self.id, payload)
        assert isinstance(payload, dict)  # data_items found a list under "data"
        return ImageResult(
            images=[await self._image(item) for item in items],
            usage=_usage(payload.get("usage")),
            quality=payload.get("quality"),
            background=payload.get("background"),
        )

    async def _image(self, item: Any) -> GeneratedImage:
        if not isinstance(item, dict):
            raise bad_upstream(self.id, "returned a malformed image entry")
        revised = item.get("revised_prompt")
        if isinstance(item.get("b64_json"), str):
            return image_from_b64(self.id, item["b64_json"], revised_prompt=revised)
        if isinstance(item.get("url"), str):
            try:
                data = await self.context.fetch_url(item["url"])
            except GatewayError as exc:  # a dead result URL is the upstream's failure
                message = f"result URL could not be fetched: {exc.message}"
                raise bad_upstream(self.id, message) from exc
            return image_from_bytes(self.id, data, revised_prompt=revised)
        raise bad_upstream(self.id, "returned an image with neither b64_json nor url")

    def _error(self, response: httpx.Response) -> UpstreamError:
        error = _error_body(response)
        message = error.get("message") if isinstance(error.get("message"), str) else None
        code = error.get("code") if isinstance(error.get("code"), str) else None
        param = error.get("param") if isinstance(error.get("param"), str) else None
        return upstream_error(
            self.id,
            response.status_code,
            (message or response.reason_phrase or "error")[:500],
            code=code,
            param=param,
            retry_after_s=retry_after(response),
        )


def _file(image: InputImage) -> tuple[str, bytes, str]:
    return (f"{image.filename or 'image'}.{image.format}", image.data, image.mime_type)


def _usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    return TokenUsage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        total_tokens=int(raw.get("total_tokens") or 0),
        input_tokens_details=raw.get("input_tokens_details"),
    )


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
