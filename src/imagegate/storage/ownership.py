"""Which API key a stored file belongs to, carried in the file id itself.

A file id is ``<24 random chars><16-char owner tag>.<fmt>``; the tag is an HMAC (the
gateway's signing secret) over the owner's key id and the random part. So ownership needs
no table, works the same for every store and every worker, and cannot be forged: a key
may name a file as an input only if the tag matches its own id (admin keys read all).
The owner is the authenticated key of the request storing the file, set per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from contextvars import ContextVar
from dataclasses import dataclass

TOKEN_LEN = 24  # secrets.token_urlsafe(18)
TAG_LEN = 16


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    is_admin: bool


_caller: ContextVar[Caller | None] = ContextVar("imagegate_file_caller", default=None)
_secret: list[bytes] = []


def configure(secret: bytes) -> None:
    """Set the tag secret (once per process, at start-up)."""
    _secret[:] = [secret]


def set_caller(key_id: str, is_admin: bool) -> None:
    """Record the authenticated key of the current request (its files are tagged for it)."""
    _caller.set(Caller(key_id, is_admin))


def owner_tag(key_id: str, token: str) -> str:
    mac = hmac.new(_secret[0], f"file-owner\0{key_id}\0{token}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode()[:TAG_LEN]


def tag_for_new(token: str) -> str:
    """The owner tag for a new file stored by the current request ('' outside a request)."""
    caller = _caller.get()
    if caller is None or not _secret:
        return ""
    return owner_tag(caller.key_id, token)


def may_read(file_id: str) -> bool:
    """Whether the current request's key may use ``file_id`` as an input."""
    caller = _caller.get()
    if caller is None or not _secret:
        return False
    if caller.is_admin:
        return True
    stem = file_id.split(".", 1)[0]
    if len(stem) != TOKEN_LEN + TAG_LEN:
        return False
    token, tag = stem[:TOKEN_LEN], stem[TOKEN_LEN:]
    return hmac.compare_digest(tag, owner_tag(caller.key_id, token))


def log_id(file_id: str) -> str:
    """A file id as written to logs: a short hash, not the id (which names the file)."""
    return "file#" + hashlib.sha256(file_id.encode()).hexdigest()[:12]
