"""API keys: their format, storage, authentication and the admin bootstrap.

A key reads ``ig_<id>_<secret>``. The id is public (it names the key in listings, logs
and usage records) and is the primary key used for lookup; only the SHA-256 of the
secret is stored. Keys given from outside in another format (``IMAGEGATE_ADMIN_KEY``)
are stored under an id derived from their hash and hashed whole.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import os
import re
import secrets
import string
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imagegate.accounts.key_epoch import REVOCATION_BOUND_S, bump_key_epoch, read_key_epoch
from imagegate.accounts.ledger import opening_entry
from imagegate.core.errors import InvalidRequest, Unauthorized
from imagegate.db.models import ApiKeyRow, LedgerEntryRow, utcnow
from imagegate.db.session import Database

logger = logging.getLogger(__name__)

KEY_PREFIX = "ig"
ADMIN_KEY_FILE = "admin-key"
ID_LENGTH = 12
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_RE = re.compile(r"[a-z0-9]{1,32}")
_MAX_TOKEN_LENGTH = 512
_MAX_NAME_LENGTH = 200
_MICROS_PER_USD = 1_000_000

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
INCORRECT_KEY_MESSAGE = "Incorrect API key provided."
REVOKED_KEY_MESSAGE = "This API key has been revoked."


@dataclass(frozen=True)
class ApiKey:
    """What the rest of the gateway knows about a key: never its secret or hash."""

    id: str
    name: str
    is_admin: bool
    models: tuple[str, ...] | None  # None: every model
    credits_micro: int | None  # None: no credit limit
    rpm: int | None  # None: no request limit
    created_at: datetime
    revoked_at: datetime | None
    ipm: int | None = None  # images per minute; None: no limit
    max_concurrent: int | None = None  # requests in flight; None: no limit

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows_model(self, model_id: str, aliases: Iterable[str] = ()) -> bool:
        """Whether the key may use a model, named by its id or any of its aliases.

        A restriction may list either form, so ``gpt-image-1`` in a key's list admits
        ``openai/gpt-image-1`` when the catalog gives that alias.
        """
        if self.models is None:
            return True
        return model_id in self.models or any(alias in self.models for alias in aliases)


def bearer_token(header_value: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if header_value:
        parts = header_value.strip().split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].strip():
            return parts[1].strip()
    raise Unauthorized(MISSING_KEY_MESSAGE)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "backslashreplace")).hexdigest()


def _split_token(token: str) -> tuple[str, str]:
    """``(key id, secret)``; a token outside the ``ig_`` format gets a derived id.

    ``token_urlsafe`` secrets may contain ``_``, hence at most two splits.
    """
    parts = token.split("_", 2)
    if len(parts) == 3 and parts[0] == KEY_PREFIX and _ID_RE.fullmatch(parts[1]) and parts[2]:
        return parts[1], parts[2]
    derived = hashlib.sha256(b"imagegate-key-id\0" + token.encode("utf-8", "backslashreplace"))
    return derived.hexdigest()[:ID_LENGTH], token


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


def usd_to_micro(usd: float) -> int:
    """USD to integer micro-USD, exactly (decimal, half-even)."""
    try:
        value = Decimal(str(usd))
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        raise InvalidRequest("credits must be a non-negative amount of USD.", param="credits")
    return int((value * _MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Built once (see accounts/ledger.py).
_KEY_BY_ID = select(ApiKeyRow.__table__).where(ApiKeyRow.__table__.c.id == bindparam("key_id"))
_CACHE_MAX = 100_000


def _to_api_key(row: ApiKeyRow | Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        is_admin=bool(row.is_admin),
        models=None if row.models is None else tuple(str(m) for m in row.models),
        credits_micro=row.credits_micro,
        rpm=row.rpm,
        created_at=_as_utc(row.created_at),
        revoked_at=None if row.revoked_at is None else _as_utc(row.revoked_at),
        ipm=row.ipm,
        max_concurrent=row.max_concurrent,
    )


def _spent(key: ApiKey) -> bool:
    return key.credits_micro is not None and key.credits_micro <= 0


def _new_row(
    name: str,
    *,
    models: Sequence[str] | None,
    admin: bool,
    credits_usd: float | None,
    rpm: int | None,
    plaintext: str | None,
    ipm: int | None = None,
    max_concurrent: int | None = None,
) -> tuple[ApiKeyRow, str]:
    """Validate the arguments of :meth:`KeyStore.create` into an unsaved row."""
    name = name.strip()
    if not name or len(name) > _MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {_MAX_NAME_LENGTH} characters.", param="name")
    if isinstance(models, str):
        raise TypeError("models must be a sequence of model ids, not a string")
    model_list = None if models is None else list(dict.fromkeys(m.strip() for m in models))
    if model_list is not None and not all(model_list):
        raise InvalidRequest("models must not contain empty ids.", param="models")
    for field_name, value in (("rpm", rpm), ("ipm", ipm), ("max_concurrent", max_concurrent)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise InvalidRequest(f"{field_name} must be a positive integer.", param=field_name)
    if plaintext is None:
        key_id, secret = _new_id(), secrets.token_urlsafe(32)
        plaintext = f"{KEY_PREFIX}_{key_id}_{secret}"
    else:
        if (
            not plaintext
            or len(plaintext) > _MAX_TOKEN_LENGTH
            or plaintext != "".join(plaintext.split())
        ):
            raise InvalidRequest(
                f"an API key must be 1 to {_MAX_TOKEN_LENGTH} characters without whitespace.",
                param="key",
            )
        key_id, secret = _split_token(plaintext)
    row = ApiKeyRow(
        id=key_id,
        name=name,
        secret_hash=_hash(secret),
        is_admin=admin,
        models=model_list,
        credits_micro=None if credits_usd is None else usd_to_micro(credits_usd),
        rpm=rpm,
        ipm=ipm,
        max_concurrent=max_concurrent,
        created_at=utcnow(),
        revoked_at=None,
    )
    return row, plaintext


def _write_private_file(path: Path, text: str) -> Path:
    """Write ``text`` to a file only its owner can read, even if it existed before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, 0o600)  # O_CREAT's mode applies only to a new file
        handle.write(text + "\n")
    return path.absolute()


class KeyStore:
    """API keys in the database, served to ``authenticate`` from memory.

    The cache is dropped when the key change counter (``key_epoch``) moves, read at most
    every ``bound_s``; a revocation here drops it at once, one pushed through Redis
    (:meth:`invalidate`) too. A key whose balance reads as spent is re-read every time:
    its cached balance (which holds move without counting a change) is not trusted.
    """

    def __init__(self, db: Database, *, bound_s: float = REVOCATION_BOUND_S) -> None:
        self._db = db
        self._bound_s = bound_s
        self._cache: dict[str, tuple[str, ApiKey]] = {}
        self._generation = 0  # moves with every drop: a read begun before is not cached
        self._epoch: int | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Forget every cached key (a change was pushed, or made here)."""
        with self._lock:
            self._cache.clear()
            self._generation += 1

    def _check_epoch(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._bound_s
        with self._db.engine.connect() as conn:
            epoch = read_key_epoch(conn)
        if epoch != self._epoch:
            self.invalidate()
            self._epoch = epoch

    def _lookup(self, key_id: str) -> tuple[str, ApiKey] | None:
        """``(secret hash, key)`` from the cache, else from the database."""
        self._check_epoch()
        entry = self._cache.get(key_id)
        if entry is not None and not _spent(entry[1]):
            return entry
        generation = self._generation
        with self._db.engine.connect() as conn:  # a Core read: no ORM session per request
            row = conn.execute(_KEY_BY_ID, {"key_id": key_id}).one_or_none()
        if row is None:
            return None
        entry = (row.secret_hash, _to_api_key(row))
        with self._lock:
            if generation == self._generation:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                self._cache[key_id] = entry
        return entry

    def create(
        self,
        name: str,
        *,
        models: Sequence[str] | None = None,
        admin: bool = False,
        credits_usd: float | None = None,
        rpm: int | None = None,
        plaintext: str | None = None,
        ipm: int | None = None,
        max_concurrent: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key and return it with its plaintext, which is never shown again.

        ``plaintext`` stores a given key instead of generating one (the bootstrap admin
        key). ``credits_usd=None`` means no credit limit; ``rpm=None`` no request limit.
        """
        row, token = _new_row(
            name,
            models=models,
            admin=admin,
            credits_usd=credits_usd,
            rpm=rpm,
            plaintext=plaintext,
            ipm=ipm,
            max_concurrent=max_concurrent,
        )
        try:
            with self._db.session() as session, session.begin():
                session.add(row)
                if row.credits_micro:  # the ledger starts where the balance starts
                    session.flush()
                    session.add(LedgerEntryRow(**opening_entry(row.id, row.credits_micro)))
        except IntegrityError:
            raise InvalidRequest(
                f"An API key with id {row.id!r} already exists.", param="key", code="key_exists"
            ) from None
        return _to_api_key(row), token

    def authenticate(self, token: str) -> ApiKey:
        """The active key ``token`` belongs to, or :class:`Unauthorized`."""
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            raise Unauthorized(INCORRECT_KEY_MESSAGE)
        key_id, secret = _split_token(token)
        entry = self._lookup(key_id)
        key = None if entry is None else entry[1]
        stored_hash = "" if entry is None else entry[0]
        if key is None or not hmac.compare_digest(stored_hash, _hash(secret)):
            raise Unauthorized(INCORRECT_KEY_MESSAGE)
        if key.revoked:
            raise Unauthorized(REVOKED_KEY_MESSAGE)
        return key

    def get(self, key_id: str) -> ApiKey | None:
        with self._db.session() as session:
            row = session.get(ApiKeyRow, key_id)
            return None if row is None else _to_api_key(row)

    def list(self, *, include_revoked: bool = True) -> builtins.list[ApiKey]:
        """All keys, oldest first."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        with self._db.session() as session:
            return [_to_api_key(row) for row in session.scalars(query)]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key at once; False if there is no such key. Revoking twice keeps
        the first revocation time."""
        with self._db.session() as session, session.begin():
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                return False
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.flush()
                bump_key_epoch(session.connection())
        self.invalidate()
        return True

    def ensure_admin(self, env_key: str | None, data_dir: Path) -> Path | None:
        """Make sure an administrator can get in; run once at startup.

        With ``env_key`` (``IMAGEGATE_ADMIN_KEY``) that exact key is stored as an admin
        key if absent and no active admin key exists (a bootstrap, not a back door). A
        revoked one stays revoked: an environment variable must not undo
        a revocation. Without it, on a database with no active admin key, a key is
        generated and written to ``<data_dir>/admin-key`` (mode 0600); its path is
        returned for the caller to print. Otherwise returns None.

        Raises ValueError when ``env_key`` collides with a different existing key.
        Concurrent starters are serialised by :meth:`Database.exclusive`.
        """
        env_key = env_key.strip() if env_key else None
        with self._db.exclusive() as conn, Session(bind=conn) as session:
            if env_key:
                self._ensure_env_admin(session, env_key)
                return None
            active_admin = session.scalar(
                select(ApiKeyRow.id)
                .where(ApiKeyRow.is_admin.is_(True), ApiKeyRow.revoked_at.is_(None))
                .limit(1)
            )
            if active_admin is not None:
                return None
            row, token = _new_row(
                "admin", models=None, admin=True, credits_usd=None, rpm=None, plaintext=None
            )
            session.add(row)
            session.flush()
            # Written before the commit: if the write fails, no unknown admin key remains.
            return _write_private_file(data_dir / ADMIN_KEY_FILE, token)

    @staticmethod
    def _ensure_env_admin(session: Session, env_key: str) -> None:
        key_id, secret = _split_token(env_key)
        row = session.get(ApiKeyRow, key_id)
        if row is None:
            active_admin = session.scalar(
                select(ApiKeyRow.id)
                .where(ApiKeyRow.is_admin.is_(True), ApiKeyRow.revoked_at.is_(None))
                .limit(1)
            )
            if active_admin is not None:  # a bootstrap key only: never a second way in
                logger.warning(
                    "IMAGEGATE_ADMIN_KEY is not stored: an admin key already exists (%s); "
                    "it only bootstraps an empty database. Create more admin keys with "
                    "`imagegate keys create --admin`",
                    active_admin,
                )
                return
            new_row, _ = _new_row(
                "admin", models=None, admin=True, credits_usd=None, rpm=None, plaintext=env_key
            )
            session.add(new_row)
            session.flush()
            return
        if not hmac.compare_digest(row.secret_hash, _hash(secret)):
            raise ValueError(
                f"IMAGEGATE_ADMIN_KEY uses the id {key_id!r} of another existing key; "
                "choose a different key"
            )
        if not row.is_admin:
            raise ValueError(
                f"IMAGEGATE_ADMIN_KEY is the existing non-admin key {key_id!r}; "
                "choose a different key"
            )
        if row.revoked_at is not None:
            logger.warning(
                "IMAGEGATE_ADMIN_KEY (key %s) has been revoked; it stays revoked", key_id
            )
