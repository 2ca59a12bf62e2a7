"""Images in an S3-compatible bucket, shared by every worker and host.

``IMAGEGATE_STORAGE_URL=s3://bucket/prefix`` selects it; credentials and region come from
the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
profiles, instance roles), and ``IMAGEGATE_S3_ENDPOINT_URL`` points it at another
S3-compatible service (MinIO, Ceph, R2...), addressed path-style.

``url`` responses hand out presigned GET URLs, so downloads go straight to the bucket. boto3
is blocking, so every call runs in a worker thread. Deleting old objects is the bucket's
lifecycle rule's job (the operator's); here an object past its TTL is simply not served.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread

from imagegate.core.types import OutputFormat
from imagegate.storage.base import (
    ImageStore,
    StorageUnavailable,
    file_id_content_type,
    new_file_id,
    storage_failure,
)

ENDPOINT_ENV = "IMAGEGATE_S3_ENDPOINT_URL"
PUBLIC_ENDPOINT_ENV = "IMAGEGATE_S3_PUBLIC_ENDPOINT_URL"
GRACE_S = 60.0
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's limit on a presigned URL's lifetime
_MISSING = {"NoSuchKey", "404", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise ValueError(f"storage URL {url!r} names no bucket: use s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class S3Store(ImageStore):
    """Objects ``<prefix>/<file_id>`` in ``bucket``, served while younger than ``ttl_s``."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        ttl_s: int,
        *,
        endpoint_url: str | None = None,
        public_endpoint: str | None = None,
        grace_s: float = GRACE_S,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if ttl_s > MAX_PRESIGN_S:
            raise ValueError(
                f"storage.url_ttl_s is {ttl_s}; presigned S3 URLs last at most {MAX_PRESIGN_S} s"
            )
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ValueError(
                "S3 storage needs boto3: install it with `pip install 'imagegate[s3]'`"
            ) from None
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        )
        session = boto3.session.Session()
        self._client: Any = session.client("s3", endpoint_url=endpoint_url or None, config=config)
        # Presigned URLs name the host callers download from (a public or CDN endpoint when
        # the gateway reaches the bucket by an internal name); signing needs no connection.
        self._presigner: Any = self._client
        if public_endpoint:
            public_config = config.merge(Config(s3={"addressing_style": "path"}))
            self._presigner = session.client(
                "s3", endpoint_url=public_endpoint, config=public_config
            )

    def key(self, file_id: str) -> str:
        return f"{self.prefix}/{file_id}" if self.prefix else file_id

    async def put(self, data: bytes, fmt: OutputFormat) -> str:
        file_id = new_file_id(fmt)
        content_type = file_id_content_type(file_id)
        await self._run(
            self._client.put_object,
            Bucket=self.bucket,
            Key=self.key(file_id),
            Body=data,
            ContentType=content_type,
        )
        return file_id

    def _read(self, file_id: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self.key(file_id))
            modified: datetime = obj["LastModified"]
            if modified.timestamp() + self.ttl_s + self.grace_s < time.time():
                obj["Body"].close()
                return None
            data: bytes = obj["Body"].read()
            return data
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise _unavailable(exc, "get_object", self.bucket) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, "get_object", self.bucket) from exc

    async def public_url(self, file_id: str, ttl_s: int) -> str | None:
        url: str = await self._run(
            self._presigner.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(file_id)},
            ExpiresIn=min(ttl_s, MAX_PRESIGN_S),
        )
        return url

    async def check(self) -> None:
        """The bucket exists and these credentials reach it (HEAD bucket)."""
        await self._run(self._client.head_bucket, Bucket=self.bucket)

    async def sweep(self, now: float | None = None) -> int:
        """Nothing to do: a bucket lifecycle rule deletes old objects (see docs/deploy.md)."""
        return 0

    async def aclose(self) -> None:
        self._client.close()
        if self._presigner is not self._client:
            self._presigner.close()

    async def _run(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        def call() -> Any:
            return method(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(call)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc, getattr(method, "__name__", "call"), self.bucket) from exc


def _unavailable(exc: Exception, operation: str, bucket: str) -> StorageUnavailable:
    return storage_failure(exc, operation, f"bucket {bucket}")
