"""The S3 image store against a real S3-compatible server (moto in server mode) over HTTP.

moto does not enforce a presigned URL's expiry, so the expiry is checked the way S3 checks
it: the test recomputes the AWS Signature Version 4 query signature independently (from
the published algorithm) and shows ``X-Amz-Expires`` is the configured TTL and is covered
by the signature, so it cannot be stretched by editing the URL.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import boto3
import httpx
import pytest
from PIL import Image

from gateway import free_port, run_gateway
from imagegate.storage import open_store
from imagegate.storage.s3 import S3Store
from s3_support import (
    BUCKET,
    PNG_MAGIC,
    REGION,
    SECRET_KEY,
    aws_env,
    png,
    sigv4_query_signature,
)


async def test_put_then_get_round_trips_through_the_bucket(s3_env: str) -> None:
    store = open_store(f"s3://{BUCKET}/images/run1", Path("unused"), 600)
    assert isinstance(store, S3Store)
    data = png()
    async with store:
        file_id = await store.put(data, "png")
        stored = await store.get(file_id)
    assert stored is not None
    assert stored.data == data
    assert stored.content_type == "image/png"
    # The object really is in the bucket, under the prefix, typed.
    client = boto3.client("s3", endpoint_url=s3_env, region_name=REGION)
    head = client.head_object(Bucket=BUCKET, Key=f"images/run1/{file_id}")
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(data)


async def test_unknown_and_malformed_ids_are_none(s3_env: str) -> None:
    async with open_store(f"s3://{BUCKET}/p", Path("unused"), 600) as store:
        assert await store.get("A" * 24 + ".png") is None
        assert await store.get("../../etc/passwd") is None
        assert await store.get("a.b.png") is None


async def test_an_object_past_its_ttl_is_not_served(s3_env: str) -> None:
    async with open_store(f"s3://{BUCKET}/ttl", Path("unused"), 600) as store:
        file_id = await store.put(png(), "png")
    # The same object seen by a store whose clock is an hour past the object's TTL.
    later = S3Store(BUCKET, "ttl", 60, endpoint_url=s3_env, grace_s=-3600)
    async with later:
        assert await later.get(file_id) is None


async def test_presigned_url_downloads_the_image_and_expires_after_the_ttl(s3_env: str) -> None:
    data = png((1, 2, 3))
    async with open_store(f"s3://{BUCKET}/signed", Path("unused"), 900) as store:
        file_id = await store.put(data, "png")
        url = await store.public_url(file_id, 900)
    assert url is not None and url.startswith(f"{s3_env}/{BUCKET}/signed/{file_id}?")

    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"

    params = dict(parse_qsl(urlsplit(url).query))
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-Expires"] == "900"
    signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 300
    # The signature covers X-Amz-Expires: S3 accepts it only until X-Amz-Date + 900 s, and a
    # URL edited to last longer no longer matches its signature.
    assert params["X-Amz-Signature"] == sigv4_query_signature(url, SECRET_KEY)
    stretched = url.replace("X-Amz-Expires=900", "X-Amz-Expires=604800")
    assert params["X-Amz-Signature"] != sigv4_query_signature(stretched, SECRET_KEY)


def test_ttl_beyond_the_presign_limit_is_refused(s3_env: str) -> None:
    with pytest.raises(ValueError, match="presigned S3 URLs last at most 604800"):
        open_store(f"s3://{BUCKET}/p", Path("unused"), 8 * 24 * 3600)


async def test_unreachable_s3_is_a_503_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in aws_env(f"http://127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(name, value)
    from imagegate.core.errors import GatewayError

    async with open_store(f"s3://{BUCKET}/p", Path("unused"), 60) as store:
        with pytest.raises(GatewayError) as caught:
            await store.put(png(), "png")
    assert caught.value.status == 503
    assert caught.value.code == "storage_unavailable"


def test_gateway_with_s3_storage_returns_presigned_urls_and_edits_by_file_id(
    s3_endpoint: str, tmp_path: Path
) -> None:
    env = {**aws_env(s3_endpoint), "IMAGEGATE_STORAGE_URL": f"s3://{BUCKET}/gw"}
    with run_gateway(tmp_path, env=env) as gw:
        auth = {"Authorization": f"Bearer {gw.admin_key}"}
        made = httpx.post(
            f"{gw.v1}/images/generations",
            headers=auth,
            json={
                "model": "imagegate/sandbox",
                "prompt": "a lighthouse",
                "size": "128x128",
                "n": 2,
                "response_format": "url",
            },
            timeout=60,
        )
        assert made.status_code == 200, made.text
        urls = [item["url"] for item in made.json()["data"]]
        assert len(urls) == 2
        for url in urls:
            # Straight from the bucket, not through the gateway's /v1/files/.
            assert url.startswith(f"{s3_endpoint}/{BUCKET}/gw/")
            assert "X-Amz-Signature=" in url
            image = httpx.get(url)
            assert image.status_code == 200
            assert image.content.startswith(PNG_MAGIC)
            assert Image.open(io.BytesIO(image.content)).size == (128, 128)

        # A stored image can be edited by its file id (the last path segment).
        file_id = urlsplit(urls[0]).path.rsplit("/", 1)[1]
        edited = httpx.post(
            f"{gw.v1}/images/edits",
            headers=auth,
            json={
                "model": "imagegate/sandbox",
                "prompt": "add a hat",
                "images": [{"file_id": file_id}],
                "response_format": "b64_json",
            },
            timeout=60,
        )
        assert edited.status_code == 200, edited.text
        assert edited.json()["data"][0]["b64_json"]

        missing = httpx.post(
            f"{gw.v1}/images/edits",
            headers=auth,
            json={
                "model": "imagegate/sandbox",
                "prompt": "x",
                "images": [{"file_id": "B" * 24 + ".png"}],
            },
            timeout=60,
        )
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "file_not_found"
