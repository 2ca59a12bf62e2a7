"""Signed, expiring URLs for stored images.

A URL carries ``exp`` (unix seconds) and ``sig`` = HMAC-SHA256 over ``"{file_id}.{exp}"``;
file ids have at most one dot and ``exp`` is digits only, so the message splits one way.
The secret is kept on disk so URLs handed out survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

SECRET_ENV = "IMAGEGATE_SIGNING_SECRET"
SECRET_FILE = "signing-key"

_EXP_RE = re.compile(r"[0-9]{1,15}")


class UrlSigner:
    """Signs and verifies ``(file_id, exp)`` pairs with one HMAC secret."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the URL signing secret must not be empty")
        self._secret = secret

    def sign(self, file_id: str, exp: int) -> str:
        """Return the urlsafe-base64 (unpadded) signature of ``file_id`` valid until ``exp``."""
        mac = hmac.new(self._secret, f"{file_id}.{int(exp)}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")

    def verify(self, file_id: str, exp: str | int, sig: str, now: float | None = None) -> bool:
        """True only for an unexpired, untampered signature; never raises on bad input."""
        try:
            if isinstance(exp, bool):
                return False
            if isinstance(exp, str):
                if not _EXP_RE.fullmatch(exp):
                    return False
                exp_s = int(exp)
            elif isinstance(exp, int):
                exp_s = exp
            else:
                return False
            if exp_s < (time.time() if now is None else now):
                return False
            expected = self.sign(file_id, exp_s).encode("ascii")
            given = sig.encode("utf-8", "surrogatepass")
            return hmac.compare_digest(expected, given)
        except (TypeError, ValueError, AttributeError):
            # UnicodeError is a ValueError: odd ids or signatures simply do not verify.
            return False


def load_or_create_secret(data_dir: Path, configured: str | None = None) -> bytes:
    """Return the signing secret: ``configured`` (``IMAGEGATE_SIGNING_SECRET`` or its
    ``_FILE``), else ``<data_dir>/signing-key``. Both are hex, at least 32 bytes.

    The key file is created once (32 random bytes, hex, mode 0600) and reused, so signed
    URLs stay valid across restarts. Creation is race-free between workers: the file is
    written aside and hard-linked into place, and a loser of the race reads the winner's.
    """
    from imagegate.config_secrets import decode_signing_secret

    from_env = configured or os.environ.get(SECRET_ENV)
    if from_env:
        return decode_signing_secret(from_env, SECRET_ENV)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    if not path.exists():
        _create_key_file(path)
    return _read_key_file(path)


def _create_key_file(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        os.link(tmp, path)
    except FileExistsError:
        pass  # another worker created it first; use theirs
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise ValueError(
            f"{path} does not hold a hex signing key; delete it to create a new one "
            f"(URLs signed with the old key stop working)"
        )
    return secret
