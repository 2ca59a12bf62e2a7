"""S3 in production: a public endpoint for presigned URLs, the bucket checked at start and
in /readyz, and storage outages answered with Retry-After, a log line and a metric
(moto in server mode, tests/s3_support.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import httpx
import pytest

from gateway import run_gateway
from imagegate.storage import open_store
from s3_support import ACCESS_KEY, REGION, SECRET_KEY, aws_env, png, sigv4_query_signature

URL_BODY = {"model": "sandbox", "prompt": "x", "size": "64x64", "response_format": "url"}


def _s3(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


async def test_presigned_urls_name_the_public_endpoint(s3_env: str) -> None:
    public = "https://images-cdn.example.test"
    bucket = f"pub-{uuid.uuid4().hex[:8]}"
    _s3(s3_env).create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    async with open_store(f"s3://{bucket}/p", Path("unused"), 600, public) as store:
        file_id = await store.put(png(), "png")
        url = await store.public_url(file_id, 600)
    assert url is not None
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == public
    assert parts.path == f"/{bucket}/p/{file_id}"
    # Signed for that host: S3 behind it verifies the signature against its own Host.
    query = dict(kv.split("=", 1) for kv in parts.query.split("&"))
    assert query["X-Amz-Signature"] == sigv4_query_signature(url, SECRET_KEY)


def test_a_missing_bucket_refuses_to_start(s3_endpoint: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        **aws_env(s3_endpoint),
        "IMAGEGATE_DATA_DIR": str(tmp_path),
        "IMAGEGATE_STORAGE_URL": "s3://no-such-bucket-here/p",
    }
    result = subprocess.run(
        [sys.executable, "-m", "imagegate", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "s3://no-such-bucket-here/p is not usable" in result.stderr


def test_a_bucket_gone_while_serving_is_503_retry_after_logged_and_counted(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = f"gone-{uuid.uuid4().hex[:8]}"
    client = _s3(s3_endpoint)
    client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    env = {**aws_env(s3_endpoint), "IMAGEGATE_STORAGE_URL": f"s3://{bucket}/gw"}
    with run_gateway(tmp_path, env=env) as gw:
        auth = {"Authorization": f"Bearer {gw.admin_key}"}
        assert httpx.get(f"{gw.url}/readyz", timeout=30).status_code == 200
        made = httpx.post(f"{gw.v1}/images/generations", json=URL_BODY, headers=auth, timeout=60)
        assert made.status_code == 200, made.text
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):  # type: ignore[attr-defined]
            client.delete_object(Bucket=bucket, Key=obj["Key"])  # type: ignore[attr-defined]
        client.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]

        failed = httpx.post(f"{gw.v1}/images/generations", json=URL_BODY, headers=auth, timeout=60)
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"]["code"] == "storage_unavailable"
        assert failed.headers["retry-after"]
        ready = httpx.get(f"{gw.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["failed"] == ["storage"]
        scrape = httpx.get(f"{gw.url}/metrics", timeout=30).text
        assert 'imagegate_storage_errors_total{operation="put_object"} 1.0' in scrape
        log = gw.log()
        assert f"storage unavailable: put_object on bucket {bucket}" in log


@pytest.fixture(autouse=True)
def _no_stray_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEGATE_S3_PUBLIC_ENDPOINT_URL", raising=False)
