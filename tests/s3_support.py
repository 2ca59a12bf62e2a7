"""A moto S3 server in server mode for the S3 store's tests and the gateway's S3 operations
tests: credentials, the bucket, the fixtures, and an independent SigV4 presign check."""

from __future__ import annotations

import hashlib
import hmac
import io
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from PIL import Image

from gateway import free_port

ACCESS_KEY = "AKIAIMAGEGATETEST"
SECRET_KEY = "imagegate-test-secret-key"
REGION = "us-east-1"
BUCKET = "imagegate-test"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "IMAGEGATE_S3_ENDPOINT_URL": endpoint,
    }


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a loopback port, with an empty bucket ``imagegate-test``."""
    import boto3  # imported here: every test session loads this module through conftest.py
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in aws_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


def png(color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, "PNG")
    return buffer.getvalue()


def sigv4_query_signature(url: str, secret: str) -> str:
    """The SigV4 signature a presigned GET URL must carry (AWS's published algorithm)."""
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(params)
        if k != "X-Amz-Signature"
    )
    values = dict(params)
    assert values["X-Amz-SignedHeaders"] == "host"
    canonical = "\n".join(
        ["GET", parts.path, query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    amz_date = values["X-Amz-Date"]
    scope = values["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
