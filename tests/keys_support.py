"""An API key as the rate limiter sees it, built in memory (no database): a fresh id each
time, so keys never share buckets, in one process or in the shared Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from imagegate.accounts.keys import ApiKey


def limited_key(
    rpm: int | None = None, ipm: int | None = None, concurrent: int | None = None
) -> ApiKey:
    return ApiKey(
        id=uuid.uuid4().hex[:12],
        name="t",
        is_admin=False,
        models=None,
        credits_micro=None,
        rpm=rpm,
        created_at=datetime.now(UTC),
        revoked_at=None,
        ipm=ipm,
        max_concurrent=concurrent,
    )
