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

from imagegate.core.errors import UpstreamError
from imagegate.core.types import ImageRequest, ImageResult, TokenUsage
from imagegate.providers._shared.answers import OpenAIStyleError, item_image
from imagegate.providers._shared.common import caller_fields, data_items, json_reply
from imagegate.providers._shared.inputs import auth_headers, post_body
from imagegate.providers.base import Capabilities, Provider
from imagegate.providers.openai.wire import _file

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
        return await self._post("/images/generations", body)

    async def edit(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        fields = self._fields(request, upstream_model)
        fields["prompt"] = request.prompt
        key = "image[]" if len(request.images) > 1 else "image"
        files = [(key, _file(img)) for img in request.images]
        if request.mask is not None:
            files.append(("mask", _file(request.mask)))
        return await self._post("/images/edits", fields, files)

    async def variation(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        fields = self._fields(request, upstream_model)
        files = [("image", _file(request.images[0]))]
        return await self._post("/images/variations", fields, files)

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
        self, path: str, fields: dict[str, Any], files: list[tuple[str, Any]] | None = None
    ) -> ImageResult:
        """One call: JSON fields, or (with ``files``) a multipart form."""
        form = None if files is None else {k: _form_value(v) for k, v in fields.items()}
        response = await post_body(
            self.context.http,
            f"{self.config.base_url}{path}",
            headers=auth_headers(self.config.resolved_api_key(), json_body=False),
            timeout_s=self.config.timeout_s,
            json_body=fields if files is None else None,
            form=form,
            files=files,
        )
        if response.status_code >= 400:
            raise self._error(response)
        payload = json_reply(self.id, response)
        items = data_items(self.id, payload)
        assert isinstance(payload, dict)  # data_items found a list under "data"
        return ImageResult(
            images=[await item_image(self.id, self.context.fetch_url, i) for i in items],
            usage=_usage(payload.get("usage")),
            quality=payload.get("quality"),
            background=payload.get("background"),
        )

    def _error(self, response: httpx.Response) -> UpstreamError:
        return OpenAIStyleError.read(response).upstream(self.id, response)


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
