"""Every error status the gateway can produce, asserted on status, type, code and param."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from e2e_support import Stack, png_bytes
from gateway import SIGNING_SECRET


def call(stack: Stack, path: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or stack.gateway.admin_key}"}
    return httpx.request(
        kwargs.pop("method", "POST"),
        f"{stack.gateway.v1}{path}",
        headers=headers,
        timeout=30,
        **kwargs,
    )


def assert_error(
    response: httpx.Response, status: int, kind: str, code: str | None, param: str | None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (kind, code, param), error
    assert error["message"]
    assert response.headers["x-request-id"]
    return error


def post_raw(stack: Stack, path: str, body: bytes, content_type: str) -> httpx.Response:
    """A body no client library would send as it is."""
    headers = {"Authorization": f"Bearer {stack.gateway.admin_key}", "Content-Type": content_type}
    return httpx.post(f"{stack.gateway.v1}{path}", content=body, headers=headers)


def upload(stack: Stack, files: Any, model: str = "sandbox") -> httpx.Response:
    """A multipart edit of the uploaded ``files`` (prompt "x")."""
    return call(stack, "/images/edits", files=files, data={"model": model, "prompt": "x"})


GEN = "/images/generations"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "sandbox", "prompt": "x", "size": "10x10"}, "invalid_size", "size"),
        ({"model": "sandbox", "prompt": "x", "size": "big"}, "invalid_size", "size"),
        ({"model": "openai/gpt-image-1", "prompt": "x", "size": "800x800"}, "invalid_size", "size"),
        (
            {"model": "openai/gpt-image-2", "prompt": "x", "size": "1000x1000"},
            "invalid_size",
            "size",
        ),
        (
            {"model": "openai/gpt-image-2", "prompt": "x", "size": "3840x1024"},
            "invalid_size",
            "size",
        ),
        ({"model": "sandbox", "prompt": "x", "n": 11}, "invalid_value", "n"),
        ({"model": "sandbox", "prompt": "x", "n": "two"}, "invalid_type", "n"),
        ({"model": "openai/gpt-image-2", "prompt": "x", "n": 11}, "invalid_value", "n"),
        (
            {"model": "stability-ai/stable-image-core", "prompt": "x" * 10001},
            "string_above_max_length",
            "prompt",
        ),
        ({"model": "sandbox"}, "missing_required_parameter", "prompt"),
        ({"prompt": "x"}, "missing_required_parameter", "model"),
        (
            {"model": "sandbox", "prompt": "x", "output_format": "png", "output_compression": 50},
            "unsupported_parameter",
            "output_compression",
        ),
        (
            {
                "model": "sandbox",
                "prompt": "x",
                "output_format": "jpeg",
                "background": "transparent",
            },
            "unsupported_parameter",
            "background",
        ),
        (
            {"model": "openai/gpt-image-1", "prompt": "x", "style": "vivid"},
            "unsupported_parameter",
            "style",
        ),
        (
            {"model": "openai/gpt-image-2", "prompt": "x", "quality": "ultra"},
            "invalid_value",
            "quality",
        ),
        (
            {"model": "sandbox", "prompt": "x", "response_format": "xml"},
            "invalid_value",
            "response_format",
        ),
        ({"model": "sandbox", "prompt": "x", "meta": "maybe"}, "invalid_type", "meta"),
        (
            {"model": "sandbox", "prompt": "x", "provider": {"sort": "vibes"}},
            "invalid_value",
            "provider.sort",
        ),
        (
            {"model": "sandbox", "prompt": "x", "provider": {"colour": 1}},
            "unknown_parameter",
            "provider.colour",
        ),
        ({"model": "sandbox", "prompt": "x", "stream": True, "n": 2}, "unsupported_parameter", "n"),
    ],
)
def test_400_names_the_field(stack: Stack, body: dict[str, Any], code: str, param: str) -> None:
    assert_error(call(stack, GEN, json=body), 400, "invalid_request_error", code, param)


def test_400_bad_json_and_edit_without_image(stack: Stack) -> None:
    bad = post_raw(stack, GEN, b"{nope", "application/json")
    assert_error(bad, 400, "invalid_request_error", "invalid_json", None)
    missing = call(stack, "/images/edits", json={"model": "sandbox", "prompt": "x"})
    assert_error(missing, 400, "invalid_request_error", "missing_required_parameter", "image")


def test_400_mask_must_match_image(stack: Stack) -> None:
    response = upload(
        stack, {"image": ("a.png", png_bytes(64, 64)), "mask": ("m.png", png_bytes(32, 32))}
    )
    assert_error(response, 400, "invalid_request_error", "invalid_mask", "mask")


def test_400_too_many_images_for_model(stack: Stack) -> None:
    files = [("image[]", (f"{i}.png", png_bytes(32, 32))) for i in range(2)]
    response = upload(stack, files, model="stability-ai/sd3.5-large")
    assert_error(response, 400, "invalid_request_error", "too_many_images", "image")


@pytest.mark.parametrize("token", ["", "nope", "ig_unknown_secret", "ig_testadmin01_wrong"])
def test_401_bad_key(stack: Stack, token: str) -> None:
    response = httpx.post(
        f"{stack.gateway.v1}{GEN}",
        json={"model": "sandbox", "prompt": "x"},
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    assert_error(response, 401, "invalid_request_error", "invalid_api_key", None)


def test_403_model_not_allowed_and_admin_only(stack: Stack) -> None:
    created = call(stack, "/admin/keys", json={"name": "limited", "models": ["test/failover"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    denied = call(stack, GEN, key=key, json={"model": "sandbox", "prompt": "x"})
    assert_error(denied, 403, "permission_error", "model_not_allowed", "model")
    admin = call(stack, "/admin/keys", key=key, method="GET")
    assert_error(admin, 403, "permission_error", "admin_required", None)


def test_404_unknown_model_file_and_route(stack: Stack) -> None:
    assert_error(
        call(stack, GEN, json={"model": "nope/nothing", "prompt": "x"}),
        404,
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    missing_file = call(
        stack,
        "/images/edits",
        json={"model": "sandbox", "prompt": "x", "images": [{"file_id": "doesnotexist.png"}]},
    )
    assert_error(missing_file, 404, "invalid_request_error", "file_not_found", "images")
    assert_error(
        call(stack, "/nothing/here", method="GET"),
        404,
        "invalid_request_error",
        "unknown_url",
        None,
    )


def test_405_method(stack: Stack) -> None:
    assert_error(
        call(stack, GEN, method="GET"), 405, "invalid_request_error", "method_not_allowed", None
    )


def test_413_upload_over_global_cap_and_model_cap(stack: Stack) -> None:
    huge = b"\x89PNG\r\n\x1a\n" + b"\0" * (9 * 1024 * 1024)
    response = upload(stack, {"image": ("a.png", huge)})
    assert_error(response, 413, "invalid_request_error", "payload_too_large", "image")
    noise = Image.effect_noise((1550, 1600), 100).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "PNG", compress_level=0)
    assert 7 * 1024 * 1024 < len(buffer.getvalue()) < 8 * 1024 * 1024  # Gemini's cap: 7 MB
    response = upload(
        stack, {"image": ("a.png", buffer.getvalue())}, model="google/gemini-3.1-flash-image"
    )
    assert_error(response, 413, "invalid_request_error", "payload_too_large", "image")


def test_413_decompression_bomb(stack: Stack) -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    response = upload(stack, {"image": ("bomb.png", buffer.getvalue())})
    assert_error(response, 413, "invalid_request_error", "image_too_large", "image")


def test_415_unsupported_types(stack: Stack) -> None:
    text = post_raw(stack, GEN, b"hello", "text/plain")
    assert_error(text, 415, "invalid_request_error", "unsupported_content_type", None)
    edit = post_raw(stack, "/images/edits", b"hello", "text/plain")
    assert_error(edit, 415, "invalid_request_error", "unsupported_content_type", None)
    gif = upload(stack, {"image": ("a.gif", b"GIF89a" + b"\0" * 64)})
    assert_error(gif, 415, "invalid_request_error", "unsupported_media_type", "image")


def test_502_503_504_from_routing(stack: Stack) -> None:
    down = call(stack, GEN, json={"model": "test/always-down", "prompt": "x", "size": "256x256"})
    assert_error(down, 502, "upstream_error", "upstream_failed", None)
    no_key = call(stack, GEN, json={"model": "openai/gpt-image-1", "prompt": "x"})
    assert_error(no_key, 503, "server_error", "no_provider_available", None)
    assert "OPENAI_API_KEY" in no_key.json()["error"]["message"]
    alpha = call(stack, GEN, json={"model": "test/alpha-only", "prompt": "x", "size": "256x256"})
    assert_error(alpha, 503, "server_error", "no_provider_available", None)
    assert "include_alpha" in alpha.json()["error"]["message"]
    slow = call(stack, GEN, json={"model": "test/slow", "prompt": "x", "size": "256x256"})
    assert_error(slow, 504, "upstream_error", "upstream_timeout", None)


def test_signed_urls_refuse_tampering_and_expiry(stack: Stack) -> None:
    import base64
    import hashlib
    import hmac

    made = call(
        stack,
        GEN,
        json={"model": "sandbox", "prompt": "x", "size": "64x64", "response_format": "url"},
    ).json()
    url = made["data"][0]["url"]
    assert httpx.get(url).status_code == 200
    file_id = url.split("/v1/files/")[1].split("?")[0]
    base = url.split("?")[0]
    exp = url.split("exp=")[1].split("&")[0]
    sig = url.split("sig=")[1]
    tampered_sig = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    later = str(int(exp) + 3600)

    def sign(e: int) -> str:
        mac = hmac.new(bytes.fromhex(SIGNING_SECRET), f"{file_id}.{e}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    assert sign(int(exp)) == sig  # the test knows the server's secret
    expired = int(time.time()) - 10
    bad_links = [
        f"{base}?exp={exp}&sig={tampered_sig}",
        f"{base}?exp={later}&sig={sig}",
        f"{base}?exp={expired}&sig={sign(expired)}",
        f"{base.rsplit('/', 1)[0]}/unknownfile.png?exp={exp}&sig={sig}",
        base,
    ]
    messages = set()
    for link in bad_links:
        response = httpx.get(link)
        error = assert_error(response, 404, "invalid_request_error", "file_not_found", None)
        messages.add(error["message"])
    assert len(messages) == 1  # refused without saying which check failed


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "[fc00::1]",
        "[fe80::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
    ],
)
def test_ssrf_blocked_address_classes(stack: Stack, host: str) -> None:
    response = call(
        stack,
        "/images/edits",
        json={"model": "sandbox", "prompt": "x", "images": [{"image_url": f"http://{host}/a.png"}]},
    )
    assert_error(response, 400, "invalid_request_error", "url_not_allowed", "images")


def test_ssrf_redirect_to_blocked_host_and_bad_scheme(stack: Stack) -> None:
    from fakes.http_server import Reply

    stack.images.routes["/hop"] = Reply(
        status=302, headers={"Location": f"http://localhost:{stack.images.port}/red.png"}
    )
    redirected = call(
        stack,
        "/images/edits",
        json={"model": "sandbox", "prompt": "x", "image": f"{stack.images.url}/hop"},
    )
    assert_error(redirected, 400, "invalid_request_error", "url_not_allowed", "image")
    scheme = call(
        stack,
        "/images/edits",
        json={"model": "sandbox", "prompt": "x", "image": "file:///etc/passwd"},
    )
    assert scheme.status_code == 400 and scheme.json()["error"]["param"] == "image"


def test_openapi_docs_served(stack: Stack) -> None:
    assert httpx.get(f"{stack.gateway.url}/docs").status_code == 200
    spec = httpx.get(f"{stack.gateway.url}/openapi.json").json()
    edit = spec["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    multipart = edit["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][multipart]["properties"]["image"]
    assert "application/json" in edit
    ops = {op["operationId"]: op for item in spec["paths"].values() for op in item.values()}
    assert {"createImage", "createImageEdit", "createImageVariation", "retrieveModel"} <= set(ops)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    statuses = set(ops["createImage"]["responses"])
    assert {"200", "400", "401", "402", "403", "404", "413", "415", "429", "503"} <= statuses
    assert ops["retrieveModel"]["parameters"][0]["name"] == "model_id"


def test_client_gone_mid_body_is_logged_499_not_500(stack: Stack) -> None:
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(stack.gateway.url)
    marker = "req_gonemidbody" + str(time.time_ns())
    head = (
        "POST /v1/images/generations HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\n"
        f"Authorization: Bearer {stack.gateway.admin_key}\r\n"
        f"x-request-id: {marker}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
        '{"model": "sandbox", "prompt": "'
    )
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode())
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while marker not in stack.gateway.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in stack.gateway.log().splitlines() if marker in line]
    assert lines and all('"status": 499' in line or '"status":499' in line for line in lines)
    assert not any("unhandled error" in line for line in lines)
