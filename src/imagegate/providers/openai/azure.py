"""Adapter for Azure OpenAI image deployments (gpt-image-1 series and dall-e-3).

Wire protocol, from Microsoft Learn "How to use Azure OpenAI image generation models"
(MicrosoftDocs/azure-ai-docs ``articles/ai-foundry/openai/how-to/dall-e.md``) and the
"Azure OpenAI latest preview inference API" reference (sections "Image generations -
Create" / "Image generations - Edit", ``dalleErrorResponse``):
``POST {endpoint}/openai/deployments/{deployment}/images/generations?api-version=...``
(JSON) and ``.../images/edits?api-version=...`` (multipart/form-data, ``image[]`` for several
images, ``mask``), header ``api-key: <key>``. Bodies and answers are OpenAI's; errors are
``{"error": {"code", "message", "param"?, "type"?, "inner_error"?: {"code":
"ResponsibleAIPolicyViolation", "content_filter_results", "revised_prompt"}}}``, and a
filtered prompt or image answers 400 with ``code: "contentFilter"`` (gpt-image deployments
may also say ``moderation_blocked`` or ``content_policy_violation``): all of these become the
caller's 400 ``content_policy_violation``.

Differences from OpenAI handled here: no variations endpoint, and dall-e deployments do not
edit; ``output_format`` is png or jpeg only (a webp request gets png and the gateway
re-encodes); ``output_compression`` is documented for jpeg only; ``moderation`` is not an
Azure parameter and is not sent. Size mapping, masks and ``n`` fan-out are the OpenAI
adapter's (see ``providers/openai/provider.py``).

Configuration: ``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``),
falling back to ``AZURE_OPENAI_ENDPOINT``; the key comes from ``api_key`` /
``api_key_env`` (``AZURE_OPENAI_API_KEY`` for the built-in entry). ``upstream_model`` is the
model name and, by default, the deployment name; ``options.deployments`` maps model names to
differently named deployments (``{gpt-image-1: my-images}``), and ``options.api_version``
overrides the default API version.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import quote

from imagegate.core.errors import UpstreamError
from imagegate.core.types import ImageRequest, Operation
from imagegate.providers.base import Capabilities
from imagegate.providers.openai.provider import MAX_GPT_IMAGE_INPUTS, MAX_N_PER_CALL, OpenAIProvider

# The latest API version documented for deployment image generations and edits
# (Azure OpenAI preview inference reference, read 2026-11).
DEFAULT_API_VERSION = "2025-04-01-preview"
ENDPOINT_ENV = "AZURE_OPENAI_ENDPOINT"
_CONTENT_FILTER_CODES = frozenset(
    {"contentFilter", "content_filter", "content_policy_violation", "moderation_blocked"}
)


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI deployments; unavailable until both an endpoint and a key are set."""

    type_name: ClassVar[str] = "azure"
    capabilities: ClassVar[Capabilities] = Capabilities(
        operations=frozenset({"generate", "edit"}),
        max_input_images=MAX_GPT_IMAGE_INPUTS,
        supports_mask=True,
        output_formats=frozenset({"png", "jpeg"}),
        transparent_background=True,
        supports_seed=False,
        max_n_per_call=MAX_N_PER_CALL,
        native_compression=True,
    )
    compression_formats: ClassVar[frozenset[str]] = frozenset({"jpeg"})
    edit_families: ClassVar[frozenset[str]] = frozenset({"gpt-image"})
    # Azure's image streaming is not covered by its fake here: send the completed event only.
    stream_passthrough: ClassVar[bool] = False

    @property
    def endpoint(self) -> str | None:
        value = self.config.base_url or os.environ.get(ENDPOINT_ENV) or ""
        return value.rstrip("/") or None

    @property
    def available(self) -> bool:
        return self.endpoint is not None and self.config.resolved_api_key() is not None

    @property
    def api_version(self) -> str:
        return str(self.config.options.get("api_version") or DEFAULT_API_VERSION)

    def deployment(self, upstream_model: str) -> str:
        deployments = self.config.options.get("deployments") or {}
        return str(deployments.get(upstream_model, upstream_model))

    def url(self, operation: str, upstream_model: str) -> tuple[str, dict[str, str]]:
        if self.endpoint is None:
            raise UpstreamError(
                f"{self.id} has no endpoint: set base_url or {ENDPOINT_ENV}",
                status=503,
                retryable=True,
            )
        deployment = quote(self.deployment(upstream_model), safe="")
        url = f"{self.endpoint}/openai/deployments/{deployment}/images/{operation}"
        return url, {"api-version": self.api_version}

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.config.resolved_api_key() or ""}

    def is_content_policy(self, error: dict[str, Any]) -> bool:
        inner = error.get("inner_error") or error.get("innererror")
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        return error.get("code") in _CONTENT_FILTER_CODES or (
            inner_code == "ResponsibleAIPolicyViolation"
        )

    def _fields(self, request: ImageRequest, model: str, operation: Operation) -> dict[str, Any]:
        fields = super()._fields(request, model, operation)
        fields.pop("moderation", None)
        return fields
