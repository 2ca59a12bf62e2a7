"""``imagegate migrate``, ``serve --no-migrate`` and how admin commands find the database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from gateway import run_gateway
from imagegate.db.session import Database


def imagegate(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    for name in ("IMAGEGATE_CONFIG", "IMAGEGATE_DATA_DIR", "IMAGEGATE_DATABASE_URL"):
        if name not in (env or {}):
            full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "imagegate", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=120,
    )


def test_admin_commands_refuse_to_create_a_database_and_say_where_they_looked(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in (["keys", "list"], ["keys", "create", "--name", "x"], ["usage"]):
        result = imagegate(*command, cwd=elsewhere)
        assert result.returncode == 2, result.stdout
        assert str(elsewhere / ".imagegate" / "imagegate.db") in result.stderr
        assert "--data-dir" in result.stderr and "IMAGEGATE_DATA_DIR" in result.stderr
    assert not (elsewhere / ".imagegate" / "imagegate.db").exists()

    via_env = imagegate("keys", "list", cwd=elsewhere, env={"IMAGEGATE_DATA_DIR": "/nowhere/x"})
    assert via_env.returncode == 2 and "/nowhere/x/imagegate.db" in via_env.stderr
    assert "IMAGEGATE_DATA_DIR" in via_env.stderr


def test_admin_commands_find_the_servers_data_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with run_gateway(tmp_path) as gw:
        listed = imagegate("keys", "list", "--data-dir", str(gw.data_dir), cwd=elsewhere)
        assert listed.returncode == 0, listed.stderr
        assert "testadmin01" in listed.stdout
        config = tmp_path / "ops.yaml"
        config.write_text(f"server: {{data_dir: {gw.data_dir}}}\n")
        created = imagegate(
            "keys", "create", "--name", "cli", "--config", str(config), cwd=elsewhere
        )
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        body = {"model": "sandbox", "prompt": "x", "size": "64x64"}
        answer = httpx.post(
            f"{gw.v1}/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 200  # the server sees the key the CLI made


def test_migrate_creates_the_database_on_purpose_and_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = imagegate("migrate", "--data-dir", str(data), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "migrated" in first.stdout
    again = imagegate("migrate", "--data-dir", str(data), cwd=tmp_path)
    assert again.returncode == 0 and "already at revision" in again.stdout
    created = imagegate("keys", "create", "--name", "n", "--data-dir", str(data), cwd=tmp_path)
    assert created.returncode == 0, created.stderr


@pytest.mark.postgres
def test_migrate_from_several_hosts_at_once_then_serve_with_a_dml_only_user(
    tmp_path: Path, pg_url: str
) -> None:
    env = {"IMAGEGATE_DATABASE_URL": pg_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "imagegate", "migrate"],
            env={**os.environ, **env},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    db = Database(pg_url)
    assert db.current_revision() == db.head_revision()
    db.dispose()

    # A role that may read and write rows but not change the schema.
    role = f"ig_dml_{uuid.uuid4().hex[:8]}"
    admin = Database(pg_url)
    with admin.engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.exec_driver_sql(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        conn.exec_driver_sql(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        conn.commit()
    try:
        dml_url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        serve_env = {"IMAGEGATE_DATABASE_URL": dml_url}
        with run_gateway(tmp_path, env=serve_env, serve_args=["--no-migrate"]) as gw:
            ready = httpx.get(f"{gw.url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
    finally:
        with admin.engine.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
            conn.commit()
        admin.dispose()


def test_serve_no_migrate_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "IMAGEGATE_DATA_DIR": str(data)}
    result = subprocess.run(
        [sys.executable, "-m", "imagegate", "serve", "--no-migrate", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "imagegate migrate" in result.stderr


def test_workers_migrate_once_in_the_parent_and_warn_without_redis(tmp_path: Path) -> None:
    with run_gateway(tmp_path, serve_args=["--workers", "2"]) as gw:
        assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200
        log = gw.log()
    assert log.count("Running upgrade  -> 0001") == 1, log
    assert "rate limits and concurrency limits are enforced by each worker alone" in log


def _serve_refusal(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "IMAGEGATE_DATA_DIR": str(tmp_path / "data"), **env}
    for name in ("IMAGEGATE_ADMIN_KEY", "IMAGEGATE_SIGNING_SECRET"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "imagegate", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"IMAGEGATE_ADMIN_KEY": "a"},
        {"IMAGEGATE_ADMIN_KEY": "ig_abc_" + "s" * 43},
        {"IMAGEGATE_SIGNING_SECRET": "x"},
        {"IMAGEGATE_SIGNING_SECRET": "not-hex-though-long-" * 4},
    ],
)
def test_weak_secrets_refuse_to_start_and_say_how_to_generate_one(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = _serve_refusal(tmp_path, **env)
    assert result.returncode == 2, result.stdout
    assert "imagegate secret" in result.stderr
    assert next(iter(env)) in result.stderr


def test_generated_secrets_and_file_variants_are_accepted(tmp_path: Path) -> None:
    signing = imagegate("secret", cwd=tmp_path).stdout.strip()
    admin = imagegate("secret", "--admin-key", cwd=tmp_path).stdout.strip()
    assert len(bytes.fromhex(signing)) == 32 and admin.startswith("ig_")
    (tmp_path / "admin").write_text(admin + "\n")
    (tmp_path / "signing").write_text(signing + "\n")
    env = {
        "IMAGEGATE_ADMIN_KEY_FILE": str(tmp_path / "admin"),
        "IMAGEGATE_SIGNING_SECRET_FILE": str(tmp_path / "signing"),
        "IMAGEGATE_ADMIN_KEY": "",
        "IMAGEGATE_SIGNING_SECRET": "",
    }
    with run_gateway(tmp_path, env=env) as gw:
        models = httpx.get(
            f"{gw.v1}/models", headers={"Authorization": f"Bearer {admin}"}, timeout=10
        )
        assert models.status_code == 200
    both = _serve_refusal(
        tmp_path, IMAGEGATE_ADMIN_KEY=admin, IMAGEGATE_ADMIN_KEY_FILE=str(tmp_path / "admin")
    )
    assert both.returncode == 2 and "set only one" in both.stderr


@pytest.mark.postgres
def test_migrate_waits_for_another_hosts_lock_beyond_the_statement_timeout(
    tmp_path: Path, pg_url: str
) -> None:
    import threading

    import psycopg

    from imagegate.db.session import _PG_LOCK_KEY

    config = tmp_path / "imagegate.yaml"
    config.write_text("database: {connect_timeout_s: 2, statement_timeout_s: 1}\n")
    holder = psycopg.connect(pg_url)
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))  # another host migrating
    timer = threading.Timer(3.0, holder.commit)
    timer.start()
    try:
        result = imagegate(
            "migrate", "--config", str(config), cwd=tmp_path, env={"IMAGEGATE_DATABASE_URL": pg_url}
        )
    finally:
        timer.join()
        holder.close()
    assert result.returncode == 0, result.stderr
    db = Database(pg_url)
    assert db.current_revision() == db.head_revision()
    db.dispose()


def test_sighup_reloads_the_config_into_new_workers(tmp_path: Path) -> None:
    """``serve --workers N``: SIGHUP replaces the workers one by one, and the new ones read
    the config file again."""
    import signal
    import time

    extra = """
  - id: test/added
    endpoints:
      - {provider: sandbox, upstream_model: sandbox, pricing: {free: true}}
"""
    with run_gateway(tmp_path, "models: []\n", serve_args=["--workers", "2"]) as gw:
        auth = {"Authorization": f"Bearer {gw.admin_key}"}

        def model_ids() -> set[str]:
            listed = httpx.get(f"{gw.v1}/models", headers=auth, timeout=10).json()["data"]
            return {m["id"] for m in listed}

        assert "test/added" not in model_ids()
        (tmp_path / "imagegate.yaml").write_text("models:" + extra)
        assert gw.process is not None
        gw.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 90
        seen: set[str] = set()
        while time.monotonic() < deadline:
            try:
                seen = model_ids()
            except httpx.HTTPError:
                seen = set()
            if "test/added" in seen and all(
                "test/added" in model_ids() for _ in range(6)
            ):  # every worker answers with it
                break
            time.sleep(0.2)
        assert "test/added" in seen, "\n".join(
            line[:300] for line in gw.log().splitlines() if '"request"' not in line
        )[-4000:]
        assert gw.process.poll() is None  # the server itself kept running


def test_sighup_does_not_kill_a_single_process_server(tmp_path: Path) -> None:
    import signal
    import time

    with run_gateway(tmp_path) as gw:
        assert gw.process is not None
        gw.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert gw.process.poll() is None
        assert httpx.get(f"{gw.url}/readyz", timeout=10).status_code == 200
        assert "SIGHUP ignored" in gw.log()


def test_admin_commands_refuse_a_missing_sqlite_url_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    result = imagegate("keys", "list", cwd=tmp_path, env={"IMAGEGATE_DATABASE_URL": url})
    assert result.returncode == 2 and "IMAGEGATE_DATABASE_URL" in result.stderr
    assert not (tmp_path / "nothing.db").exists()


def test_serve_with_an_unreachable_database_says_so_in_one_line(tmp_path: Path) -> None:
    from gateway import free_port

    env = {
        **os.environ,
        "IMAGEGATE_DATA_DIR": str(tmp_path),
        "IMAGEGATE_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
    }
    env.pop("IMAGEGATE_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "imagegate", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot start: the database is unavailable" in result.stderr
    assert "Traceback" not in result.stderr
