"""Reading upstream answers the same way in every adapter: JSON objects, failure bodies and
output URLs. What an answer *means* (a moderation flag, a provider's status words) stays in
the adapter; only the mechanics live here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import httpx
import orjson

from imagegate.core.errors import GatewayError, UpstreamError
from imagegate.core.types import GeneratedImage
from imagegate.providers._shared.common import (
    bad_upstream,
    data_items,
    host_allowed,
    image_from_b64,
    image_from_bytes,
    json_reply,
    post_json,
    retry_after,
    upstream_error,
)
from imagegate.providers.base import Provider, UrlFetcher


def json_object(
    provider_id: str,
    response: httpx.Response,
    error: Callable[[httpx.Response], UpstreamError],
    *,
    what: str = "a JSON value that is not an object",
) -> dict[str, Any]:
    """A successful answer's JSON object. A failure status raises the adapter's
    ``error(response)``; invalid JSON, or JSON that is not an object (``what`` says how the
    adapter names it), is the upstream's failure: fail over."""
    if response.status_code >= 400:
        raise error(response)
    body = json_reply(provider_id, response)
    if not isinstance(body, dict):
        raise bad_upstream(provider_id, f"returned {what}")
    return body


def error_json(response: httpx.Response) -> Any:
    """A failure's body as JSON, or None when it is not JSON (a proxy's HTML page)."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def text(value: Any) -> str | None:
    """``value`` when it is a string: upstream fields are read, never trusted for type."""
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class OpenAIStyleError:
    """The failure body OpenAI-shaped APIs send: ``{"error": {"message", "type", "param",
    "code"}}`` (OpenAI, Azure, Together, OpenAI-compatible servers)."""

    fields: dict[str, Any]
    message: str
    code: str | None
    param: str | None
    type: str | None

    @classmethod
    def read(cls, response: httpx.Response, *, flat: bool = False) -> OpenAIStyleError:
        """The ``error`` object of ``response`` ({} when absent). ``flat``: an ``error``
        that is a plain string is its message (Together answers some failures so)."""
        body = error_json(response)
        error = body.get("error") if isinstance(body, dict) else None
        if flat and isinstance(error, str):
            error = {"message": error}
        fields: dict[str, Any] = error if isinstance(error, dict) else {}
        message = text(fields.get("message")) or response.reason_phrase or "error"
        return cls(
            fields=fields,
            message=message[:500],
            code=text(fields.get("code")),
            param=text(fields.get("param")) or None,
            type=text(fields.get("type")),
        )

    def upstream(
        self,
        provider_id: str,
        response: httpx.Response,
        *,
        retry_after_s: float | None = None,
        content_policy: bool = False,
        ours: bool = False,
    ) -> UpstreamError:
        """The failure, classified with this body's message, code and param."""
        return failure(
            provider_id,
            response,
            self.message,
            code=self.code,
            param=self.param,
            retry_after_s=retry_after_s,
            content_policy=content_policy,
            ours=ours,
        )


class Classification(TypedDict, total=False):
    """What an adapter read from a failure besides its status (``upstream_error``'s terms)."""

    code: str | None
    param: str | None
    content_policy: bool
    ours: bool


def failure(
    provider_id: str,
    response: httpx.Response,
    message: str,
    *,
    status: int | None = None,
    retry_after_s: float | None = None,
    **classification: Unpack[Classification],
) -> UpstreamError:
    """A failed answer classified by ``upstream_error``: its status (or ``status``, where
    the adapter knows better what the failure means), its ``Retry-After`` (unless the
    adapter read a better hint) and the message, cut to 500 characters."""
    return upstream_error(
        provider_id,
        status or response.status_code,
        message[:500],
        retry_after_s=retry_after(response) if retry_after_s is None else retry_after_s,
        **classification,
    )


def refusal(provider_id: str, message: str) -> UpstreamError:
    """The caller's 400 ``content_policy_violation``: the upstream refused the content."""
    return upstream_error(provider_id, 400, message, content_policy=True)


async def fetch_output(
    provider_id: str,
    fetch: UrlFetcher,
    url: str,
    *,
    what: str = "result URL",
    revised_prompt: str | None = None,
) -> GeneratedImage:
    """Download and verify an output URL the upstream returned; failing to fetch it is the
    upstream's failure (fail over), named ``what`` in the message."""
    try:
        data = await fetch(url)
    except GatewayError as exc:
        raise bad_upstream(provider_id, f"{what} could not be fetched: {exc.message}") from exc
    return image_from_bytes(provider_id, data, revised_prompt=revised_prompt)


async def hosted_output(
    provider_id: str, fetch: UrlFetcher, url: str, hosts: Sequence[str], *, what: str
) -> GeneratedImage:
    """An output given as a URL on the upstream's CDN: a ``data:`` URL is decoded, any
    other host than ``hosts`` is refused before anything is fetched."""
    if url.startswith("data:"):
        return image_from_b64(provider_id, url)
    if not host_allowed(url, hosts):
        raise bad_upstream(provider_id, f"returned an {what} on an unexpected host: {url[:200]}")
    return await fetch_output(provider_id, fetch, url, what=what)


async def post_for_data(
    provider: Provider,
    url: str,
    payload: object,
    error: Callable[[httpx.Response], UpstreamError],
) -> list[object]:
    """POST ``payload`` as JSON with the provider's Bearer key and return the answer's
    non-empty ``data`` list (OpenAI-shaped images APIs); a failure raises ``error``."""
    response = await post_json(
        provider.context.http,
        url,
        payload,
        api_key=provider.config.resolved_api_key(),
        timeout_s=provider.config.timeout_s,
    )
    if response.status_code >= 400:
        raise error(response)
    return data_items(provider.id, json_reply(provider.id, response))


async def item_image(
    provider_id: str,
    fetch: UrlFetcher,
    item: object,
    missing: Callable[[dict[str, Any]], UpstreamError] | None = None,
) -> GeneratedImage:
    """The image of one OpenAI-shaped ``data`` entry: its ``b64_json``, else its ``url``
    fetched, with its ``revised_prompt``. An entry with neither raises ``missing(entry)``
    (an adapter that knows why, e.g. moderation), else a failover."""
    if not isinstance(item, dict):
        raise bad_upstream(provider_id, "returned a malformed image entry")
    revised = text(item.get("revised_prompt"))
    b64, url = item.get("b64_json"), item.get("url")
    if isinstance(b64, str) and b64:
        return image_from_b64(provider_id, b64, revised_prompt=revised)
    if isinstance(url, str) and url:
        return await fetch_output(provider_id, fetch, url, revised_prompt=revised)
    if missing is not None:
        raise missing(item)
    raise bad_upstream(provider_id, "returned an image with neither b64_json nor url")
