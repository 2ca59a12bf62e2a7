"""Secrets from the environment: ``*_FILE`` variants, one encoding, a minimum strength.

``IMAGEGATE_ADMIN_KEY`` and ``IMAGEGATE_SIGNING_SECRET`` (and the URLs that may carry
passwords, ``IMAGEGATE_DATABASE_URL`` and ``IMAGEGATE_REDIS_URL``) can instead be given as
a file path in ``<NAME>_FILE`` (Docker and Kubernetes secrets); setting both is an error.

The URL-signing secret has one encoding wherever it comes from: hex, at least 32 bytes
(64 hex digits), exactly what the generated ``<data dir>/signing-key`` file holds, so the
file's content can be copied into the variable. ``imagegate secret`` prints a new one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

MIN_SIGNING_BYTES = 32
MIN_ADMIN_SECRET_CHARS = 32
MIN_ADMIN_DISTINCT_CHARS = 10
GENERATE_HINT = "generate one with `imagegate secret`"
SECRET_NAMES = (
    "IMAGEGATE_ADMIN_KEY",
    "IMAGEGATE_SIGNING_SECRET",
    "IMAGEGATE_DATABASE_URL",
    "IMAGEGATE_REDIS_URL",
)


class SecretError(ValueError):
    """A secret that is missing, unreadable, ambiguous or too weak."""


def secret_env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """``$NAME``, or the stripped content of the file named by ``$NAME_FILE``."""
    env = os.environ if env is None else env
    direct = env.get(name) or None
    path = env.get(f"{name}_FILE") or None
    if direct and path:
        raise SecretError(f"both {name} and {name}_FILE are set; set only one")
    if path is None:
        return direct
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(f"{name}_FILE={path}: cannot read it: {exc.strerror}") from None
    if not value:
        raise SecretError(f"{name}_FILE={path} is empty")
    return value


def decode_signing_secret(value: str, source: str) -> bytes:
    """The signing secret's bytes from its hex text; refuses short or non-hex values."""
    text = value.strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < MIN_SIGNING_BYTES:
        raise SecretError(
            f"{source} must be at least {MIN_SIGNING_BYTES} bytes written as hex "
            f"({MIN_SIGNING_BYTES * 2} hex digits, the format of the data dir's signing-key "
            f"file); {GENERATE_HINT}"
        )
    return secret


def check_admin_key(token: str) -> None:
    """Refuse an ``IMAGEGATE_ADMIN_KEY`` that is short or repetitive."""
    parts = token.split("_", 2)
    secret = parts[2] if len(parts) == 3 and parts[0] == "ig" else token
    if len(secret) < MIN_ADMIN_SECRET_CHARS or len(set(secret)) < MIN_ADMIN_DISTINCT_CHARS:
        raise SecretError(
            "IMAGEGATE_ADMIN_KEY is too weak: its secret needs at least "
            f"{MIN_ADMIN_SECRET_CHARS} characters with {MIN_ADMIN_DISTINCT_CHARS} different "
            f"ones; {GENERATE_HINT} --admin-key"
        )
