"""Admin numbers (issue 12, 5): out-of-range values are a 400 naming the field, never a
500; a revoked key cannot be topped up (409)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cli_support import cli
from gateway import RunningGateway
from security.support import auth

INT64_MAX = 2**63 - 1


@pytest.fixture
def gw(plain_gateway: RunningGateway) -> RunningGateway:
    return plain_gateway


def _create(gw: RunningGateway, **fields: object) -> httpx.Response:
    return httpx.post(
        f"{gw.v1}/admin/keys",
        json={"name": "k", **fields},
        headers=auth(gw.admin_key),
        timeout=30,
    )


def _top_up(gw: RunningGateway, key_id: str, amount: object) -> httpx.Response:
    return httpx.post(
        f"{gw.v1}/admin/keys/{key_id}/credits",
        json={"amount": amount},
        headers=auth(gw.admin_key),
        timeout=30,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rpm", 2**63),
        ("ipm", 10**30),
        ("max_concurrent", 2**64),
        ("rpm", str(INT64_MAX + 1)),
        ("credits", 1e30),
        ("credits", 10**25),
        ("credits", INT64_MAX / 1_000_000 + 1),
    ],
)
def test_key_numbers_past_int64_are_a_400_naming_the_field(
    gw: RunningGateway, field: str, value: object
) -> None:
    reply = _create(gw, **{field: value})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == field


def test_top_up_past_int64_or_to_a_balance_past_it_is_a_400(gw: RunningGateway) -> None:
    key = _create(gw, credits=9_000_000_000_000)  # 9e18 micro-USD: just under int64
    assert key.status_code == 201, key.text
    key_id = key.json()["id"]
    for amount in (1e30, 10**25, 1_000_000_000_000):
        reply = _top_up(gw, key_id, amount)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == "amount"
    assert _top_up(gw, key_id, 1).status_code == 200


def test_revoked_key_cannot_be_topped_up(gw: RunningGateway) -> None:
    key_id = _create(gw, credits=1).json()["id"]
    revoked = httpx.delete(f"{gw.v1}/admin/keys/{key_id}", headers=auth(gw.admin_key))
    assert revoked.status_code == 200
    reply = _top_up(gw, key_id, 5)
    assert reply.status_code == 409, reply.text
    assert reply.json()["error"]["code"] == "key_revoked"
    ledger = httpx.get(f"{gw.v1}/admin/keys/{key_id}/ledger", headers=auth(gw.admin_key)).json()
    assert [e["kind"] for e in ledger["data"]].count("topup") <= 1


def test_cli_refuses_to_top_up_a_revoked_key(tmp_path: Path) -> None:
    assert cli("migrate", data_dir=tmp_path).returncode == 0  # admin commands create no db
    created = cli("keys", "create", "--name", "gone", "--credits", "1", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.strip().splitlines()[-1].split("_")[1]
    assert cli("keys", "revoke", key_id, data_dir=tmp_path).returncode == 0
    topped = cli("keys", "top-up", key_id, "5", data_dir=tmp_path)
    assert topped.returncode == 1
    assert "revoked" in topped.stderr
    huge = cli("keys", "create", "--name", "big", "--credits", "1", data_dir=tmp_path)
    big_id = huge.stdout.strip().splitlines()[-1].split("_")[1]
    too_much = cli("keys", "top-up", big_id, "1e13", data_dir=tmp_path)
    assert too_much.returncode == 1 and "too large" in too_much.stderr
