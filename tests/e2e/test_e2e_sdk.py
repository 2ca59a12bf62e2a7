"""The official openai SDK against a real gateway process serving the sandbox."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Literal

import httpx
import pytest
from openai import OpenAI
from PIL import Image, ImageChops

from e2e_support import Stack, b64, open_image, png_bytes


@pytest.fixture
def client(stack: Stack) -> OpenAI:
    return OpenAI(base_url=stack.gateway.v1, api_key=stack.gateway.admin_key, max_retries=0)


def test_generate_b64_honours_size_n_and_format(client: OpenAI) -> None:
    result = client.images.generate(
        model="imagegate/sandbox",
        prompt="a lighthouse at dusk",
        n=2,
        size="320x192",
        output_format="webp",
    )
    assert result.data is not None and len(result.data) == 2
    images = [open_image(base64.b64decode(item.b64_json or "")) for item in result.data]
    assert all(img.size == (320, 192) and img.format == "WEBP" for img in images)
    assert result.size == "320x192" and result.output_format == "webp"
    assert all(item.url is None for item in result.data)
    assert result.data[0].b64_json != result.data[1].b64_json


def test_generate_is_deterministic_for_prompt_size_seed(client: OpenAI) -> None:
    def one(seed: int) -> str:
        result = client.images.generate(
            model="sandbox",
            prompt="same",
            size="128x128",
            extra_body={"seed": seed},
        )
        assert result.data is not None
        return result.data[0].b64_json or ""

    assert one(7) == one(7)
    assert one(7) != one(8)


def test_url_response_is_fetchable_image_of_requested_size(client: OpenAI) -> None:
    formats: tuple[tuple[Literal["png", "jpeg", "webp"], str], ...] = (
        ("png", "PNG"),
        ("jpeg", "JPEG"),
        ("webp", "WEBP"),
    )
    for fmt, pil_name in formats:
        result = client.images.generate(
            model="sandbox",
            prompt="bridge",
            size="200x120",
            response_format="url",
            output_format=fmt,
        )
        assert result.data is not None
        url = result.data[0].url or ""
        assert "/v1/files/" in url and "sig=" in url and result.data[0].b64_json is None
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == f"image/{fmt}"
        image = open_image(response.content)
        assert image.size == (200, 120) and image.format == pil_name


def test_edit_one_image(client: OpenAI) -> None:
    result = client.images.edit(
        model="sandbox",
        image=("in.png", png_bytes(160, 96), "image/png"),
        prompt="add a hat",
    )
    assert result.data is not None
    assert open_image(base64.b64decode(result.data[0].b64_json or "")).size == (160, 96)


def test_edit_with_list_of_images_sends_image_array(client: OpenAI, stack: Stack) -> None:
    files = [("a.png", png_bytes(64, 64), "image/png"), ("b.png", png_bytes(32, 32), "image/png")]
    result = client.images.edit(model="sandbox", image=files, prompt="combine", size="64x64")
    assert result.data is not None
    assert open_image(base64.b64decode(result.data[0].b64_json or "")).size == (64, 64)
    before = len(stack.good.calls)
    client.images.edit(model="test/good-first", image=files, prompt="combine", size="256x256")
    upstream = stack.good.calls[before]
    assert upstream.path == "/v1/images/edits"
    assert len(upstream.files["image[]"]) == 2


def test_edit_with_mask_changes_only_masked_pixels(client: OpenAI) -> None:
    base = Image.effect_noise((128, 128), 60).convert("RGB")
    buffer = io.BytesIO()
    base.save(buffer, "PNG")
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 32, 96, 96))  # transparent = edit here
    mask_buffer = io.BytesIO()
    mask.save(mask_buffer, "PNG")
    result = client.images.edit(
        model="sandbox",
        image=("base.png", buffer.getvalue(), "image/png"),
        mask=("mask.png", mask_buffer.getvalue(), "image/png"),
        prompt="a red square",
    )
    assert result.data is not None
    out = open_image(base64.b64decode(result.data[0].b64_json or "")).convert("RGB")
    assert out.size == (128, 128)
    diff = ImageChops.difference(out, base)
    outside = Image.new("L", (128, 128), 255)
    outside.paste(0, (32, 32, 96, 96))
    assert ImageChops.multiply(diff.convert("L"), outside).getbbox() is None
    assert diff.crop((32, 32, 96, 96)).getbbox() is not None


def test_create_variation(client: OpenAI) -> None:
    source = png_bytes(96, 96, (10, 200, 40))
    result = client.images.create_variation(
        model="sandbox",
        image=("v.png", source, "image/png"),
        n=2,
    )
    assert result.data is not None
    outs = [base64.b64decode(item.b64_json or "") for item in result.data]
    assert len(outs) == 2 and outs[0] != outs[1]
    assert all(open_image(o).size == (96, 96) for o in outs)


def test_json_edit_openai_images_form(stack: Stack) -> None:
    data_url = "data:image/png;base64," + b64(png_bytes(80, 48))
    body = {
        "model": "sandbox",
        "prompt": "p",
        "images": [{"image_url": data_url}, {"image_url": f"{stack.images.url}/red.png"}],
    }
    response = _post_json(stack, "/images/edits", body)
    assert response.status_code == 200, response.text
    out = open_image(base64.b64decode(response.json()["data"][0]["b64_json"]))
    assert out.size == (80, 48)


def test_json_edit_simple_image_and_mask_strings(stack: Stack) -> None:
    mask = png_bytes(70, 40, (0, 0, 0, 0), mode="RGBA")
    body = {
        "model": "sandbox",
        "prompt": "p",
        "image": b64(png_bytes(70, 40)),
        "mask": "data:image/png;base64," + b64(mask),
        "response_format": "url",
    }
    response = _post_json(stack, "/images/edits", body)
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    assert open_image(httpx.get(url).content).size == (70, 40)


def test_json_edit_by_file_id_of_a_stored_image(stack: Stack) -> None:
    made = _post_json(
        stack,
        "/images/generations",
        {"model": "sandbox", "prompt": "x", "size": "64x64", "response_format": "url"},
    ).json()
    file_id = made["data"][0]["url"].split("/v1/files/")[1].split("?")[0]
    response = _post_json(
        stack,
        "/images/edits",
        {"model": "sandbox", "prompt": "p", "images": [{"file_id": file_id}]},
    )
    assert response.status_code == 200, response.text


def test_multipart_text_fields_and_bracketed_provider(stack: Stack) -> None:
    before_flaky = len(stack.flaky.calls)
    response = httpx.post(
        f"{stack.gateway.v1}/images/edits",
        headers={"Authorization": f"Bearer {stack.gateway.admin_key}"},
        files=[
            (name, (None, value))
            for name, value in [
                ("model", "test/failover"),
                ("prompt", "p"),
                ("size", "256x256"),
                ("image", "data:image/png;base64," + b64(png_bytes(64, 64))),
                ("provider[ignore][]", "flaky"),
                ("meta", "1"),
                ("usage", "true"),
            ]
        ],
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(stack.flaky.calls) == before_flaky
    assert body["meta"]["provider"] == "good"
    assert body["usage"]["images"] == 1 and body["usage"]["cost_usd"] == pytest.approx(0.02)


def _post_json(stack: Stack, path: str, body: Mapping[str, object]) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway.v1}{path}",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {stack.gateway.admin_key}"},
    )


def test_urlencoded_variation_with_image_url_and_json_provider(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway.v1}/images/variations",
        headers={"Authorization": f"Bearer {stack.gateway.admin_key}"},
        data={
            "model": "sandbox",
            "image": f"{stack.images.url}/red.png",
            "provider": '{"only": ["sandbox"]}',
            "meta": "true",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["provider"] == "sandbox"
    assert open_image(base64.b64decode(response.json()["data"][0]["b64_json"])).size == (96, 64)
