"""``imagegate keys top-up`` and ``imagegate usage`` through subprocess, on a real database."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update

from cli_support import cli
from imagegate.accounts.ledger import Ledger
from imagegate.accounts.usage import UsageRecord
from imagegate.db.models import ApiKeyRow
from imagegate.db.session import Database


def test_top_up_and_usage(tmp_path: Path) -> None:
    assert cli("migrate", data_dir=tmp_path).returncode == 0  # admin commands create no db
    created = cli(
        "keys", "create", "--name", "team", "--credits", "1.5", "--ipm", "30", data_dir=tmp_path
    )
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.strip().splitlines()[-1].split("_")[1]

    topped = cli("keys", "top-up", key_id, "2.25", "--note", "invoice 9", data_dir=tmp_path)
    assert topped.returncode == 0, topped.stderr
    assert f"{key_id}: balance $3.750000" in topped.stdout

    listed = cli("keys", "list", data_dir=tmp_path)
    assert "3.750000" in listed.stdout and "30" in listed.stdout

    missing = cli("keys", "top-up", "nosuchkey", "1", data_dir=tmp_path)
    assert missing.returncode == 1 and "No API key with id 'nosuchkey'" in missing.stderr

    # Two requests settled by the gateway's ledger, in the same database the CLI reads.
    db = Database(f"sqlite:///{tmp_path / 'imagegate.db'}")
    ledger = Ledger(db, hold_ttl_s=60)
    for i, model in enumerate(["openai/gpt-image-1", "imagegate/sandbox"]):
        hold = ledger.hold(key_id, 100_000, f"gen_{i}")
        ledger.settle(
            hold,
            42_000 * (1 - i),
            UsageRecord(f"gen_{i}", key_id, model, "generate", provider="p", images=2),
        )
    db.dispose()

    table = cli("usage", "--group-by", "model", data_dir=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "openai/gpt-image-1" in table.stdout and "0.042000" in table.stdout
    as_json = json.loads(cli("usage", "--json", "--key", key_id, data_dir=tmp_path).stdout)
    assert as_json["totals"] == {"requests": 2, "succeeded": 2, "images": 4, "cost_usd": 0.042}
    bad = cli("usage", "--group-by", "colour", data_dir=tmp_path)
    assert bad.returncode == 2 and "--group-by" in bad.stderr


def test_ledger_verify_names_the_first_discrepancy(tmp_path: Path) -> None:
    """`imagegate ledger verify`: 0 on balanced books, 1 naming what does not add up."""
    assert cli("migrate", data_dir=tmp_path).returncode == 0  # admin commands create no db
    created = cli("keys", "create", "--name", "team", "--credits", "1", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.strip().splitlines()[-1].split("_")[1]
    db = Database(f"sqlite:///{tmp_path / 'imagegate.db'}")
    ledger = Ledger(db, hold_ttl_s=60)
    hold = ledger.hold(key_id, 100_000, "gen_v")
    attempt = {"provider": "p", "upstream_model": "m", "status": 200, "cost_micro": 30_000}
    usage = UsageRecord("gen_v", key_id, "m/a", "generate", provider="p", images=1)
    usage.attempts = [attempt]
    ledger.settle(hold, 30_000, usage)

    ok = cli("ledger", "verify", data_dir=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "ok: 1 keys, 1 holds, 1 usage records, 1 upstream calls" in ok.stdout

    with db.write() as conn:  # money that appears without a ledger row
        conn.execute(
            update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(credits_micro=2_000_000)
        )
    db.dispose()
    bad = cli("ledger", "verify", data_dir=tmp_path)
    assert bad.returncode == 1
    assert f"key {key_id}: ledger entries sum to 970000 micro-USD, its balance is 2000000" in (
        bad.stderr
    )
