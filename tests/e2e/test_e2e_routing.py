"""Failover and routing preferences through a real gateway and fake OpenAI-style upstreams."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from openai import BadRequestError, OpenAI

from e2e_support import Stack, open_image, png_bytes


def generate(stack: Stack, **body: Any) -> httpx.Response:
    payload = {"prompt": "a cat", "size": "256x256", "meta": True, **body}
    return httpx.post(
        f"{stack.gateway.v1}/images/generations",
        json=payload,
        timeout=30,
        headers={"Authorization": f"Bearer {stack.gateway.admin_key}"},
    )


def test_failover_from_500_to_second_endpoint(stack: Stack) -> None:
    flaky_before, good_before = len(stack.flaky.calls), len(stack.good.calls)
    response = generate(stack, model="failover", n=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-imagegate-provider"] == "good"
    assert response.headers["x-imagegate-cost-usd"] == "0.040000"
    attempts = body["meta"]["attempts"]
    assert [(a["provider"], a["status"]) for a in attempts] == [("flaky", 500), ("good", 200)]
    assert "500" in attempts[0]["error"]
    assert body["meta"]["upstream_model"] == "up-b" and body["meta"]["model"] == "test/failover"
    assert len(stack.flaky.calls) == flaky_before + 1
    call = stack.good.calls[good_before]
    assert call.auth == "Bearer sk-fake"  # ${TEST_GOOD_KEY} expanded from the environment
    assert call.fields["model"] == "up-b" and call.fields["n"] == 2
    assert len(body["data"]) == 2
    assert body["data"][0]["revised_prompt"] == "revised: a cat"
    assert body["usage"]["total_tokens"] == 30


def test_no_fallbacks_means_one_attempt(stack: Stack) -> None:
    response = generate(stack, model="failover", provider={"allow_fallbacks": False})
    assert response.status_code == 502
    assert "flaky" in response.json()["error"]["message"]


def test_order_and_only_preferences(stack: Stack) -> None:
    flaky_before = len(stack.flaky.calls)
    ordered = generate(stack, model="failover", provider={"order": ["good", "flaky"]})
    assert ordered.json()["meta"]["attempts"][0]["provider"] == "good"
    only = generate(stack, model="failover", provider={"only": ["good"]})
    assert [a["provider"] for a in only.json()["meta"]["attempts"]] == ["good"]
    assert len(stack.flaky.calls) == flaky_before


def test_caller_error_is_never_retried(stack: Stack) -> None:
    flaky_before = len(stack.flaky.calls)
    client = OpenAI(base_url=stack.gateway.v1, api_key=stack.gateway.admin_key, max_retries=0)
    try:
        client.images.generate(model="test/good-first", prompt="forbidden thing", size="256x256")
    except BadRequestError as exc:
        error = exc.body if isinstance(exc.body, dict) else {}
        assert error.get("code") == "content_policy_violation"
        assert "safety system" in str(error.get("message"))
    else:
        raise AssertionError("expected a 400")
    assert len(stack.flaky.calls) == flaky_before


def test_unknown_fields_reach_the_upstream(stack: Stack) -> None:
    before = len(stack.good.calls)
    response = generate(stack, model="test/good-first", custom_knob="on", seed=5)
    assert response.status_code == 200
    fields = stack.good.calls[before].fields
    assert fields["custom_knob"] == "on" and fields["seed"] == 5


def test_upstream_urls_are_rehosted(stack: Stack) -> None:
    b64_response = generate(stack, model="test/urls")
    assert b64_response.status_code == 200, b64_response.text
    item = b64_response.json()["data"][0]
    assert "url" not in item
    assert open_image(base64.b64decode(item["b64_json"])).size == (256, 256)
    url_response = generate(stack, model="test/urls", response_format="url", output_format="jpeg")
    url = url_response.json()["data"][0]["url"]
    assert url.startswith(stack.gateway.url) and stack.urlish.url not in url
    image = open_image(httpx.get(url).content)
    assert image.format == "JPEG" and image.size == (256, 256)


def test_edit_and_variation_through_openai_compatible(stack: Stack) -> None:
    client = OpenAI(base_url=stack.gateway.v1, api_key=stack.gateway.admin_key, max_retries=0)
    before = len(stack.good.calls)
    client.images.edit(
        model="failover",
        image=("a.png", png_bytes(), "image/png"),
        mask=("m.png", png_bytes(mode="RGBA", color=(0, 0, 0, 0)), "image/png"),
        prompt="p",
        size="256x256",
    )
    client.images.create_variation(
        model="failover", image=("a.png", png_bytes(), "image/png"), size="512x512"
    )
    edit, variation = stack.good.calls[before : before + 2]
    assert edit.path == "/v1/images/edits" and set(edit.files) == {"image", "mask"}
    assert variation.path == "/v1/images/variations" and variation.fields["size"] == "512x512"
