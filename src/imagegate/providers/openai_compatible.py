"""Adapter for any server that speaks OpenAI's Images API (LocalAI, vLLM-Omni, imagegate).

Wire protocol: OpenAI API reference, "Images" (POST /images/generations as JSON;
/images/edits and /images/variations as multipart/form-data, several edit inputs as
repeated ``image[]`` parts; ``Authorization: Bearer``; errors as
``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import httpx
import orjson

from imagegate.core.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    UpstreamError,
    is_retryable_status,
)
from imagegate.core.types import (
    GeneratedImage,
    ImageRequest,
    ImageResult,
    InputImage,
    TokenUsage,
)
from imagegate.media.images import probe_image
from imagegate.providers.base import Capabilities, Provider

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
_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
_MAX_OUTPUT_PIXELS = 16384 * 16384


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
        for name, value in request.extra.items():
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
        headers = {"Accept": "application/json"}
        key = self.config.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = f"{self.config.base_url}{path}"
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            response = await self.context.http.post(
                url,
                content=orjson.dumps(json_body),
                headers=headers,
                timeout=self.config.timeout_s,
            )
        else:
            data = {k: _form_value(v) for k, v in (form or {}).items()}
            response = await self.context.http.post(
                url, data=data, files=files, headers=headers, timeout=self.config.timeout_s
            )
        if response.status_code >= 400:
            raise self._error(response)
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"{self.id} returned invalid JSON", status=502, retryable=True
            ) from exc
        return await self._result(payload)

    async def _result(self, payload: Any) -> ImageResult:
        items = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            raise UpstreamError(f"{self.id} returned no images", status=502, retryable=True)
        images = [await self._image(item) for item in items]
        usage = _usage(payload.get("usage"))
        return ImageResult(
            images=images,
            usage=usage,
            quality=payload.get("quality"),
            background=payload.get("background"),
        )

    async def _image(self, item: Any) -> GeneratedImage:
        b64 = item.get("b64_json") if isinstance(item, dict) else None
        url = item.get("url") if isinstance(item, dict) else None
        if isinstance(b64, str):
            try:
                data = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise UpstreamError(
                    f"{self.id} returned invalid base64", status=502, retryable=True
                ) from exc
        elif isinstance(url, str):
            data = await self.context.fetch_url(url)
            b64 = None
        else:
            raise UpstreamError(
                f"{self.id} returned an image with neither b64_json nor url",
                status=502,
                retryable=True,
            )
        try:
            probed = probe_image(
                data, param="upstream", max_bytes=_MAX_OUTPUT_BYTES, max_pixels=_MAX_OUTPUT_PIXELS
            )
        except GatewayError as exc:
            raise UpstreamError(
                f"{self.id} returned an unreadable image: {exc.message}", status=502, retryable=True
            ) from exc
        return GeneratedImage(
            data=data,
            format=probed.format,
            width=probed.width,
            height=probed.height,
            revised_prompt=item.get("revised_prompt"),
            b64=b64,
        )

    def _error(self, response: httpx.Response) -> UpstreamError:
        status = response.status_code
        message, code = _error_details(response)
        text = f"{self.id} returned {status}: {message}"
        if is_retryable_status(status) or status in (401, 403):
            return UpstreamError(
                text, status=status, retryable=True, retry_after_s=_retry_after(response)
            )
        client: GatewayError
        if status == 404:
            client = NotFound(f"Upstream {self.id}: {message}", code=code or "upstream_not_found")
        elif code in ("content_policy_violation", "moderation_blocked"):
            client = InvalidRequest(
                f"Upstream {self.id}: {message}", code="content_policy_violation"
            )
        else:
            client = InvalidRequest(
                f"Upstream {self.id}: {message}",
                code=code or "upstream_rejected",
                param=_error_param(response),
            )
        return UpstreamError(text, status=status, retryable=False, client_error=client)


def _file(image: InputImage) -> tuple[str, bytes, str]:
    return (f"{image.filename or 'image'}.{image.format}", image.data, image.mime_type)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_details(response: httpx.Response) -> tuple[str, str | None]:
    error = _error_body(response)
    message = error.get("message") if isinstance(error.get("message"), str) else None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    return (message or response.reason_phrase or "error")[:500], code


def _error_param(response: httpx.Response) -> str | None:
    param = _error_body(response).get("param")
    return param if isinstance(param, str) else None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, dict):
        return None
    return TokenUsage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        total_tokens=int(raw.get("total_tokens") or 0),
        input_tokens_details=raw.get("input_tokens_details"),
    )
