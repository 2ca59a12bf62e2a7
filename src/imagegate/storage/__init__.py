"""Storage of generated images for ``response_format=url``, and URL signing.

``open_store`` picks the backend from ``IMAGEGATE_STORAGE_URL``: ``file://`` (default) or
``s3://bucket/prefix`` (``storage/s3.py``, needs boto3).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imagegate.storage.base import ImageStore, StoredFile, file_id_content_type, new_file_id
from imagegate.storage.filesystem import FilesystemStore
from imagegate.storage.signing import UrlSigner, load_or_create_secret

__all__ = [
    "FilesystemStore",
    "ImageStore",
    "StoredFile",
    "UrlSigner",
    "file_id_content_type",
    "load_or_create_secret",
    "new_file_id",
    "open_store",
]


def open_store(
    storage_url: str | None, data_dir: Path, ttl_s: int, public_endpoint: str | None = None
) -> ImageStore:
    """The store named by ``storage_url``; None means ``<data_dir>/images``.

    ``file:///abs/path`` and ``file://relative/path`` (as in ``file://./.imagegate/images``)
    both work: everything after ``file://`` is the path.
    """
    if not storage_url:
        return FilesystemStore(Path(data_dir) / "images", ttl_s)
    scheme = urlsplit(storage_url).scheme.lower()
    if scheme == "file":
        raw = unquote(storage_url.split(":", 1)[1].removeprefix("//"))
        if raw.startswith("localhost/"):
            raw = raw[len("localhost") :]
        if not raw:
            raise ValueError(f"storage URL {storage_url!r} names no directory")
        return FilesystemStore(Path(raw).expanduser(), ttl_s)
    if scheme == "s3":
        from imagegate.storage.s3 import ENDPOINT_ENV, PUBLIC_ENDPOINT_ENV, S3Store, parse_s3_url

        return S3Store(
            *parse_s3_url(storage_url),
            ttl_s,
            endpoint_url=os.environ.get(ENDPOINT_ENV) or None,
            public_endpoint=public_endpoint or os.environ.get(PUBLIC_ENDPOINT_ENV) or None,
        )
    raise ValueError(
        f"unsupported storage URL scheme {scheme!r} in {storage_url!r}: use file:// or s3://"
    )
