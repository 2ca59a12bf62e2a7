"""The image store interface behind ``response_format=url``.

Stores hold generated images for a limited time under random, unguessable ids; the API
layer hands out signed URLs naming those ids. Every backend shares the id rules here so a
URL path can never be turned into a path traversal or an arbitrary key.
"""

from __future__ import annotations

import logging
import re
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

import anyio.to_thread

from imagegate.core.errors import GatewayError
from imagegate.core.types import MIME_TYPES, OUTPUT_FORMATS, OutputFormat
from imagegate.obs import metrics
from imagegate.storage import ownership

RETRY_AFTER_S = 5
log = logging.getLogger("imagegate.storage")


class StorageUnavailable(GatewayError):
    """503: the image store could not be reached or refused us; not the caller's fault."""

    status = 503
    type = "server_error"
    code = "storage_unavailable"


def storage_failure(exc: BaseException, operation: str, where: str) -> StorageUnavailable:
    """The caller's 503 (with Retry-After), and the operator's log line and metric."""
    metrics.record_storage_error(operation)
    detail = (str(exc).splitlines() or [""])[0][:300] or type(exc).__name__
    log.warning(
        "storage unavailable: %s on %s: %s",
        operation,
        where,
        detail,
        extra={"service": "storage", "operation": operation},
    )
    return StorageUnavailable(
        f"Image storage is unavailable ({type(exc).__name__}); try again.",
        headers={"retry-after": str(RETRY_AFTER_S)},
    )


# 18 random bytes -> 24 urlsafe characters, then one extension naming the format.
_FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,64}\.(" + "|".join(OUTPUT_FORMATS) + r")")


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A stored image's bytes and the content type to serve them with."""

    data: bytes
    content_type: str


def new_file_id(fmt: OutputFormat) -> str:
    """A fresh URL-safe id such as ``Qx3..._A.png``; the extension records the format and
    the part before it ends with the storing key's owner tag (storage.ownership)."""
    if fmt not in MIME_TYPES:
        raise ValueError(f"unknown image format {fmt!r}")
    token = secrets.token_urlsafe(18)
    return f"{token}{ownership.tag_for_new(token)}.{fmt}"


def file_id_content_type(file_id: str) -> str | None:
    """The content type for a well-formed id, or None for anything else (``../x``, ``a.b.png``)."""
    match = _FILE_ID_RE.fullmatch(file_id) if isinstance(file_id, str) else None
    return MIME_TYPES[match.group(1)] if match else None


class ImageStore(ABC):
    """Where images live between a ``url`` response and the caller's download."""

    @abstractmethod
    async def put(self, data: bytes, fmt: OutputFormat) -> str:
        """Store ``data`` and return its new, unguessable file id."""

    async def get(self, file_id: str) -> StoredFile | None:
        """The file, or None if the id is unknown, malformed or expired."""
        content_type = file_id_content_type(file_id)
        if content_type is None:
            return None
        data = await anyio.to_thread.run_sync(self._read, file_id)
        return None if data is None else StoredFile(data=data, content_type=content_type)

    @abstractmethod
    def _read(self, file_id: str) -> bytes | None:
        """The bytes of a well-formed id, or None if unknown or expired (in a worker thread)."""

    @abstractmethod
    async def sweep(self, now: float | None = None) -> int:
        """Delete expired files; return how many were deleted."""

    async def public_url(self, file_id: str, ttl_s: int) -> str | None:
        """A URL the caller can download ``file_id`` from directly for ``ttl_s`` seconds.

        None (the default) means the gateway serves the file itself under a signed
        ``/v1/files/`` URL; object stores return a presigned URL instead.
        """
        return None

    async def check(self) -> None:
        """Raise if the store cannot take files now (``/readyz``, start-up); default: fine."""
        return None

    async def aclose(self) -> None:
        """Release resources (connections, clients); the default holds none."""
        return None

    async def __aenter__(self) -> ImageStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
