"""Start a real imagegate server process on a loopback port for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_KEY = "ig_testadmin01_Vq3rT8xLm2Kp9ZbW4nYc7HdJ6sGfA1eU0oRiQyXtNwM"
SIGNING_SECRET = "7e" * 16 + "a3" * 16  # hex, 32 bytes: the one encoding (imagegate secret)


@dataclass
class RunningGateway:
    url: str
    admin_key: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_once(self, marker: str, timeout: float = 20.0) -> str:
        """The log once ``marker`` is in it: access lines are written off the event loop
        (obs/log_queue.py), so one may land a moment after its response."""
        deadline = time.monotonic() + timeout
        while marker not in (text := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker in text, f"{marker!r} never reached the log: {text[-2000:]}"
        return text

    def create_key(self, name: str = "user", **fields: object) -> str:
        """A new API key, made through the admin API (``fields``: its credits and limits)."""
        reply = httpx.post(
            f"{self.v1}/admin/keys",
            json={"name": name, **fields},
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=30,
        )
        assert reply.status_code == 201, reply.text
        return str(reply.json()["key"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def run_gateway(
    tmp: Path,
    config_yaml: str | None = None,
    env: dict[str, str] | None = None,
    serve_args: list[str] | None = None,
) -> Iterator[RunningGateway]:
    """``serve_args`` are added to ``imagegate serve`` (e.g. ``["--workers", "2"]``)."""
    port = free_port()
    data_dir = tmp / "data"
    args = [sys.executable, "-m", "imagegate", "serve", "--port", str(port), *(serve_args or [])]
    if config_yaml is not None:
        config = tmp / "imagegate.yaml"
        config.write_text(config_yaml)
        args += ["--config", str(config)]
    full_env = {
        **os.environ,
        "IMAGEGATE_DATA_DIR": str(data_dir),
        "IMAGEGATE_ADMIN_KEY": ADMIN_KEY,
        "IMAGEGATE_SIGNING_SECRET": SIGNING_SECRET,
        **(env or {}),
    }
    full_env.pop("IMAGEGATE_CONFIG", None)
    log_path = tmp / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log_path)
        yield RunningGateway(url, ADMIN_KEY, data_dir, log_path, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# Start-up takes ~2 s on a quiet machine and was seen at ~43 s on a loaded 2-core one: the
# limit only bounds how long a gateway that never starts holds the suite up.
START_LIMIT_S = 120


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gateway did not start:\n{log_path.read_text()}")
