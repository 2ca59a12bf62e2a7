"""Tenant isolation (issue 12, 3): one key cannot read what another key created."""

from __future__ import annotations

import re

import httpx
import pytest

from gateway import RunningGateway
from security.support import auth


@pytest.fixture
def gw(plain_gateway: RunningGateway) -> RunningGateway:
    return plain_gateway


def _generate(gw: RunningGateway, key: str) -> tuple[str, str, str]:
    """(file id, signed URL, generation id) of one hosted sandbox image made by ``key``."""
    reply = httpx.post(
        f"{gw.v1}/images/generations",
        json={
            "model": "sandbox",
            "prompt": "mine",
            "size": "64x64",
            "response_format": "url",
            "meta": True,
        },
        headers=auth(key),
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    url = reply.json()["data"][0]["url"]
    match = re.search(r"/v1/files/([^?]+)\?", url)
    assert match, url
    return match.group(1), url, reply.json()["meta"]["generation_id"]


def _edit_with(gw: RunningGateway, key: str, file_id: str) -> httpx.Response:
    return httpx.post(
        f"{gw.v1}/images/edits",
        json={"model": "sandbox", "prompt": "x", "size": "64x64", "images": [{"file_id": file_id}]},
        headers=auth(key),
        timeout=30,
    )


def _shape(reply: httpx.Response, file_id: str) -> tuple[int, str]:
    error = reply.json()["error"]
    return reply.status_code, f"{error['code']}|{error['param']}|" + error["message"].replace(
        file_id, "ID"
    )


def test_another_keys_file_id_is_the_same_404_as_a_missing_one(gw: RunningGateway) -> None:
    owner, other = gw.create_key(), gw.create_key()
    file_id, _, _ = _generate(gw, owner)
    assert _edit_with(gw, owner, file_id).status_code == 200
    assert _edit_with(gw, gw.admin_key, file_id).status_code == 200
    stolen = _edit_with(gw, other, file_id)
    missing_id = "A" * 40 + ".png"
    missing = _edit_with(gw, other, missing_id)
    assert stolen.status_code == 404, stolen.text
    assert _shape(stolen, file_id) == _shape(missing, missing_id)


def test_file_ids_are_not_written_to_the_log(gw: RunningGateway) -> None:
    key = gw.create_key()
    file_id, url, _ = _generate(gw, key)
    assert httpx.get(url, timeout=30).status_code == 200
    stem = file_id.split(".")[0]
    assert stem not in gw.log_once("/v1/files/")


def test_generation_usage_and_ledger_routes_are_per_key(gw: RunningGateway) -> None:
    owner, other = gw.create_key(), gw.create_key()
    _, _, generation_id = _generate(gw, owner)
    mine = httpx.get(f"{gw.v1}/generations/{generation_id}", headers=auth(owner), timeout=30)
    assert mine.status_code == 200
    theirs = httpx.get(f"{gw.v1}/generations/{generation_id}", headers=auth(other), timeout=30)
    missing = httpx.get(f"{gw.v1}/generations/gen_{'0' * 24}", headers=auth(other), timeout=30)
    assert theirs.status_code == missing.status_code == 404
    keys = httpx.get(f"{gw.v1}/admin/keys", headers=auth(gw.admin_key), timeout=30).json()
    owner_id = next(k["id"] for k in keys["data"] if owner.startswith(f"ig_{k['id']}_"))
    usage = httpx.get(f"{gw.v1}/usage", params={"key_id": owner_id}, headers=auth(other))
    assert usage.status_code == 404
    ledger = httpx.get(f"{gw.v1}/admin/keys/{owner_id}/ledger", headers=auth(other), timeout=30)
    assert ledger.status_code == 403
