"""``GET /v1/generations``: own key's generations newest first, keyset pages; admin sees all."""

from __future__ import annotations

import httpx

from e2e_support import Stack


def _generate(stack: Stack, key: str, prompt: str) -> str:
    reply = httpx.post(
        f"{stack.gateway.v1}/images/generations",
        json={"model": "sandbox", "prompt": prompt, "size": "64x64", "meta": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert reply.status_code == 200
    return str(reply.json()["meta"]["generation_id"])


def _list(stack: Stack, key: str, **params: object) -> httpx.Response:
    return httpx.get(
        f"{stack.gateway.v1}/generations",
        params=params,  # type: ignore[arg-type]
        headers={"Authorization": f"Bearer {key}"},
    )


def test_pages_newest_first_and_only_own(stack: Stack) -> None:
    alice, bob = stack.gateway.create_key("alice"), stack.gateway.create_key("bob")
    made = [_generate(stack, alice, f"p{i}") for i in range(3)]
    bobs = _generate(stack, bob, "bob's")
    first = _list(stack, alice, limit=2).json()
    assert [g["id"] for g in first["data"]] == [made[2], made[1]]
    assert first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (made[2], made[1])
    assert first["data"][0]["model"] == "imagegate/sandbox"
    assert first["data"][0]["provider"] == "sandbox" and first["data"][0]["status"] == 200
    second = _list(stack, alice, limit=2, after=first["last_id"]).json()
    assert [g["id"] for g in second["data"]] == [made[0]] and second["has_more"] is False
    assert [g["id"] for g in _list(stack, bob).json()["data"]] == [bobs]
    # another key's generation cannot be used as a cursor
    assert _list(stack, bob, after=made[0]).status_code == 404


def test_admin_sees_every_key(stack: Stack) -> None:
    carol = stack.gateway.create_key("carol")
    mine = _generate(stack, carol, "carol's")
    listed = _list(stack, stack.gateway.admin_key, limit=100).json()
    assert mine in [g["id"] for g in listed["data"]]
    carol_id = carol.split("_")[1]
    only = _list(stack, stack.gateway.admin_key, key_id=carol_id).json()
    assert [g["id"] for g in only["data"]] == [mine]


def test_bad_paging_parameters(stack: Stack) -> None:
    key = stack.gateway.admin_key
    bad = _list(stack, key, limit=0)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    assert _list(stack, key, limit="x").status_code == 400
    missing = _list(stack, key, after="gen_nope")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "after"
    assert httpx.get(f"{stack.gateway.v1}/generations").status_code == 401
