"""Helpers every adapter needs: error mapping, output decoding, size mapping, fan-out
and polling. Provider quirks stay in the adapters; only the shared mechanics live here."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import httpx
import orjson
from PIL import Image

from imagegate.core.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    is_retryable_status,
)
from imagegate.core.types import GeneratedImage, InputImage
from imagegate.media.images import decode, probe_head, probe_image
from imagegate.media.mask import edit_region, edit_region_from_image_alpha, to_white_means_edit
from imagegate.providers._shared import b64json

T = TypeVar("T")
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
MAX_OUTPUT_PIXELS = 16384 * 16384
# image_from_b64 decodes this much of a long base64 image to probe it: 64 KiB of bytes
# holds any PNG/WebP header and most JPEG ones, in about 1/50 of a 3.6 MB body's decode.
_B64_HEAD_CHARS = 4 * -(-64 * 1024 // 3)
_B64_TAIL_CHARS = 4096  # ... and this much of its end, for its padding and exact size
_B64_WHITESPACE = ("\n", "\r", " ", "\t")
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
# Statuses that can only be about the request the caller sent (as we passed it on).
CALLER_STATUSES = frozenset({400, 413, 422})
# Error codes that describe this gateway's account with the provider, whatever the
# status they come with (docs/providers.md, "Upstream errors: ours or the caller's").
ACCOUNT_CODES = frozenset(
    {
        # OpenAI: developers.openai.com/api/docs/guides/error-codes
        "billing_hard_limit_reached",
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "invalid_api_key",
        "invalid_organization",
        "unsupported_country_region_territory",
        "model_not_found",
        # Google: ai.google.dev/gemini-api/docs/troubleshooting
        "permission_denied",
        "failed_precondition",
        "unauthenticated",
    }
)
# "This model does not exist" as the providers spell it (OpenAI/Together, Azure, Google).
# A bare 404 is not enough: it can also be a poll URL or a request id that expired.
MODEL_GONE_CODES = frozenset({"model_not_found", "deploymentnotfound", "not_found"})


def upstream_error(
    provider_id: str,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    retry_after_s: float | None = None,
    content_policy: bool = False,
    ours: bool = False,
) -> UpstreamError:
    """Classify an upstream HTTP failure: the caller's own request, or ours (fail over).

    The caller's: content-policy refusals, and 400/413/422 whose code is not about our
    account. Ours, failing over and never shown as the caller's fault: 408/429/5xx, every
    other 4xx (401/403 credentials, 402 funds, 404/410 a model or path the catalog named,
    and statuses no request of the caller could cause), and any status with an account
    code (``ACCOUNT_CODES``: OpenAI's ``billing_hard_limit_reached`` is a 400,
    ``insufficient_quota`` a 429) or with ``ours`` set by the adapter. A "model not
    found" code (or 410 Gone) is also ``model_gone``: the router skips that endpoint for a
    while instead of counting breaker failures.
    """
    text = f"{provider_id} returned {status}: {message}"
    lowered = (code or "").lower()
    if content_policy or (lowered in CONTENT_POLICY_CODES):
        client: GatewayError = InvalidRequest(
            f"Upstream {provider_id}: {message}", code="content_policy_violation"
        )
        return UpstreamError(text, status=status, retryable=False, client_error=client)
    gone = lowered in MODEL_GONE_CODES or status == 410
    ours = (
        ours
        or lowered in ACCOUNT_CODES
        or (not is_retryable_status(status) and status not in CALLER_STATUSES)
    )
    if ours or gone or is_retryable_status(status):
        return UpstreamError(
            text,
            status=status,
            retryable=True,
            retry_after_s=None if ours else retry_after_s,
            model_gone=gone,
            ours=ours,
        )
    client = InvalidRequest(
        f"Upstream {provider_id}: {message}", code=code or "upstream_rejected", param=param
    )
    return UpstreamError(text, status=status, retryable=False, client_error=client)


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    payload: object,
    *,
    api_key: str | None,
    timeout_s: float,
) -> httpx.Response:
    """POST ``payload`` as JSON with an optional Bearer key (OpenAI-shaped APIs).

    Timeouts and transport failures are left to the router, which turns them into
    retryable attempt errors for every adapter alike.
    """
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return await http.post(url, content=orjson.dumps(payload), headers=headers, timeout=timeout_s)


def json_reply(provider_id: str, response: httpx.Response) -> object:
    """An upstream's JSON body; invalid JSON is the upstream's failure (fail over).

    Long ``b64_json`` strings are copied out rather than parsed (``b64json.loads``)."""
    try:
        return b64json.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise bad_upstream(provider_id, "returned invalid JSON") from exc


def data_items(provider_id: str, reply: object) -> list[object]:
    """The non-empty ``data`` list of an OpenAI-shaped images response (else fail over)."""
    items = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(items, list) or not items:
        raise bad_upstream(provider_id, "returned no images")
    return items


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def bad_upstream(provider_id: str, what: str) -> UpstreamError:
    """A malformed upstream answer: another provider may do better, so fail over."""
    return UpstreamError(f"{provider_id} {what}", status=502, retryable=True)


def image_from_bytes(
    provider_id: str, data: bytes, *, b64: str | None = None, revised_prompt: str | None = None
) -> GeneratedImage:
    """Verify upstream output bytes and read their real format and size."""
    try:
        probed = probe_image(
            data, param="upstream", max_bytes=MAX_OUTPUT_BYTES, max_pixels=MAX_OUTPUT_PIXELS
        )
    except GatewayError as exc:
        raise bad_upstream(provider_id, f"returned an unreadable image: {exc.message}") from exc
    return GeneratedImage(
        data=data,
        format=probed.format,
        width=probed.width,
        height=probed.height,
        revised_prompt=revised_prompt,
        b64=b64,
    )


def image_from_b64(
    provider_id: str, b64: str, *, revised_prompt: str | None = None
) -> GeneratedImage:
    """Verify an upstream's base64 image, decoding only what the checks need.

    A ``data:`` URL prefix and whitespace (MIME-style line wrapping, a final newline) are
    dropped; the text is kept as the image's ``b64`` and sent on as is in ``b64_json``
    responses. Checked now, as for bytes (failing is ``bad_upstream``: the router fails
    over): the size (from the text's length), the type and header dimensions (from a
    64 KiB decoded prefix), that the text is ASCII, and that its first 64 KiB and last
    4 KiB are valid base64. Not checked now: the middle's base64 validity, which a
    passed-through image never needs. ``GeneratedImage.data`` decodes it all where bytes
    are needed (``response_format: url``, format conversion); invalid base64 then raises the
    same retryable 502 ``UpstreamError``, which the API turns into ``upstream_failed``
    (too late to fail over). Short images, and headers the prefix does not hold (a JPEG
    with large metadata before its SOF), are decoded whole at once, as before.
    """
    if b64.startswith("data:"):
        b64 = b64.partition(",")[2]
    if _has_space(b64[:_B64_HEAD_CHARS]) or _has_space(b64[-_B64_TAIL_CHARS:]):
        b64 = "".join(b64.split())  # wrapped lines show in the head, a final newline at the end
    if not b64.isascii():
        raise bad_upstream(provider_id, "returned invalid base64")
    if len(b64) <= _B64_HEAD_CHARS + _B64_TAIL_CHARS:
        data = _b64decode(provider_id, b64)
        return image_from_bytes(provider_id, data, b64=b64, revised_prompt=revised_prompt)
    head_text = b64[:_B64_HEAD_CHARS]
    if "=" in head_text:  # padding before the end
        raise bad_upstream(provider_id, "returned invalid base64")
    head = _b64decode(provider_id, head_text)
    tail_start = (len(b64) - _B64_TAIL_CHARS) // 4 * 4  # on a 4-character group boundary
    size = tail_start // 4 * 3 + len(_b64decode(provider_id, b64[tail_start:]))
    try:
        probed = probe_head(
            head,
            size=size,
            param="upstream",
            max_bytes=MAX_OUTPUT_BYTES,
            max_pixels=MAX_OUTPUT_PIXELS,
        )
    except GatewayError as exc:
        raise bad_upstream(provider_id, f"returned an unreadable image: {exc.message}") from exc
    if probed is None:  # the header runs past the prefix: probe the whole image
        data = _b64decode(provider_id, b64)
        return image_from_bytes(provider_id, data, b64=b64, revised_prompt=revised_prompt)
    fmt, width, height = probed
    return GeneratedImage.from_b64(
        b64, fmt, width, height, revised_prompt=revised_prompt, source=provider_id
    )


def _has_space(text: str) -> bool:
    return any(space in text for space in _B64_WHITESPACE)


def _b64decode(provider_id: str, text: str) -> bytes:
    try:
        # ``base64.b64decode(text, validate=True)`` without its str -> bytes copy.
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_upstream(provider_id, "returned invalid base64") from exc


def nearest_aspect_ratio(width: int, height: int, options: Sequence[str]) -> str:
    """The option ("W:H") whose ratio is closest to width/height, compared in log space so
    2:1 and 1:2 are equally far from 1:1."""
    import math

    target = math.log(width / height)

    def distance(option: str) -> float:
        w, h = option.split(":")
        return abs(math.log(float(w) / float(h)) - target)

    return min(options, key=distance)


async def fan_out(n: int, per_call: int, call: Callable[[int], Awaitable[list[T]]]) -> list[T]:
    """Make ``n`` outputs from an API that makes at most ``per_call`` per request: calls run
    concurrently, ``call(k)`` asks for ``k`` outputs, results keep call order."""
    sizes = [per_call] * (n // per_call) + ([n % per_call] if n % per_call else [])
    batches = await asyncio.gather(*(call(k) for k in sizes))
    return [item for batch in batches for item in batch]


async def poll(
    check: Callable[[], Awaitable[T | None]],
    *,
    interval_s: float,
    timeout_s: float,
    provider_id: str,
    max_interval_s: float = 5.0,
) -> T:
    """Call ``check`` until it returns a value; back off gently; time out as a 504 attempt."""
    deadline = time.monotonic() + timeout_s
    delay = interval_s
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() + delay > deadline:
            raise UpstreamError(
                f"{provider_id} did not finish within {timeout_s:g}s",
                status=504,
                retryable=True,
                timeout=True,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, max_interval_s)


def data_url(data: bytes, mime_type: str) -> str:
    """Inline bytes as a base64 data URL (how several providers take input images)."""
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def white_edit_mask(
    image: InputImage, mask: InputImage | None, *, missing: str | None = None
) -> bytes:
    """The edit region as a white-means-edit PNG at the image's size (Stability, BFL, fal,
    Replicate). Without a mask: the image's transparent pixels, else the whole image, or,
    where the model must have a region (``missing`` given), a 400 with that message."""
    size = (image.width, image.height)
    region: Image.Image | None
    if mask is not None:
        region = edit_region(decode(mask, param="mask"), size)
    else:
        region = edit_region_from_image_alpha(decode(image))
        if region is None and missing is not None:
            raise InvalidRequest(missing, param="mask", code="missing_required_parameter")
        region = region or Image.new("L", size, 255)
    return to_white_means_edit(region)


def host_allowed(url: str, hosts: Sequence[str]) -> bool:
    """Is the URL's host one of ``hosts`` (exact, or ``*.suffix`` wildcards)?"""
    try:
        host = httpx.URL(url).host.lower()
    except httpx.InvalidURL:
        return False
    return any(
        host.endswith(entry[1:]) if entry.startswith("*.") else host == entry
        for entry in (h.lower() for h in hosts)
    )


# Caller fields that would weaken the operator's safety or moderation settings: never
# forwarded unless the operator lists them in the provider's ``options.pass_through``.
SAFETY_FIELDS = frozenset(
    {
        "safety_tolerance",  # BFL, Replicate/fal FLUX
        "disable_safety_checker",  # Together, Replicate
        "enable_safety_checker",  # fal
        "safety_checker",
        "safety_filter_level",  # Imagen
        "safety_settings",  # Gemini
        "person_generation",  # Gemini/Imagen
        "moderation",
        "nsfw",
        "enable_nsfw",
        "safe_mode",
    }
)


def caller_fields(
    options: dict[str, object], extra: dict[str, object], default: Iterable[str] | None
) -> dict[str, object]:
    """The caller's extra fields a provider may forward; the operator's policy wins.

    ``options.pass_through`` (a list) is the operator's allow-list: exactly those fields
    pass, safety ones included. Without it, the adapter's ``default`` list (None: any
    field) passes, minus ``SAFETY_FIELDS``, so a caller can never override a safety or
    moderation setting the operator chose (or left at the provider's default).
    """
    listed = options.get("pass_through")
    if isinstance(listed, list | tuple):
        allowed = {str(name) for name in listed}
        return {k: v for k, v in extra.items() if k in allowed}
    names = set(default) if default is not None else None
    return {
        k: v for k, v in extra.items() if k not in SAFETY_FIELDS and (names is None or k in names)
    }
