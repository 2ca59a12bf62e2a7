"""Where the gateway is, how to authenticate, and how patient to be."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "http://127.0.0.1:8080/v1"


@dataclass
class Configuration:
    """Settings shared by every call an ``ApiClient`` makes.

    ``host`` is the API base including ``/v1``. Failed calls with status 429 or 5xx, and
    connection errors, are retried up to ``max_retries`` times: the server's ``Retry-After``
    when it sends one (up to ``max_retry_after`` seconds), else exponential backoff from
    ``backoff_base`` doubling up to ``backoff_max``, jittered (half to all of it).
    """

    host: str = DEFAULT_HOST
    access_token: str | None = None
    timeout: float = 300.0
    connect_timeout: float = 10.0
    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 60.0
    verify_ssl: bool = True
    idempotency: bool = True
    default_headers: dict[str, str] = field(default_factory=dict)
    user_agent: str = "imagegate-python"

    def __post_init__(self) -> None:
        self.host = self.host.rstrip("/")

    @classmethod
    def from_env(cls, **overrides: object) -> Configuration:
        """``IMAGEGATE_BASE_URL`` and ``IMAGEGATE_API_KEY``, falling back to the local data
        dir's ``admin-key`` file (``IMAGEGATE_DATA_DIR``, default ``./.imagegate``)."""
        host = os.environ.get("IMAGEGATE_BASE_URL") or DEFAULT_HOST
        token = os.environ.get("IMAGEGATE_API_KEY") or local_admin_key()
        config = cls(host=host, access_token=token)
        for name, value in overrides.items():
            setattr(config, name, value)
        config.__post_init__()
        return config

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based), jittered."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    def headers(self) -> dict[str, str]:
        out = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.access_token:
            out["Authorization"] = f"Bearer {self.access_token}"
        out.update(self.default_headers)
        return out


def admin_key_path() -> Path:
    """Where a local ``imagegate serve`` writes its generated admin key."""
    return Path(os.environ.get("IMAGEGATE_DATA_DIR", "./.imagegate")).resolve() / "admin-key"


def local_admin_key() -> str | None:
    """The admin key a local ``imagegate serve`` wrote to its data dir, if readable."""
    try:
        return admin_key_path().read_text().strip() or None
    except OSError:
        return None
