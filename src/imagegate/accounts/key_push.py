"""Key changes pushed between processes through Redis pub/sub.

The gateway that revokes a key (or tops it up) publishes on ``KEYS_CHANNEL``; every
process follows the channel and drops its key cache on each message, so the change
usually takes effect everywhere at once. The key change counter (accounts/key_epoch.py)
still bounds it at ``REVOCATION_BOUND_S`` when a message is lost, Redis is down, or the
change came from the CLI, which does not publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from imagegate.accounts.key_epoch import KEYS_CHANNEL, REVOCATION_BOUND_S
from imagegate.accounts.keys import KeyStore

log = logging.getLogger("imagegate.keys")
_POLL_S = 1.0  # how long one read waits for a message (the client's socket timeout is shorter)


async def push_key_change(redis: Any, key_id: str) -> None:
    """Tell the other processes; best effort (the counter bounds the delay anyway)."""
    if redis is None:
        return
    try:
        await redis.publish(KEYS_CHANNEL, key_id)
    except Exception as exc:  # Redis down: other processes see it within the bound
        log.warning(
            "key change not pushed through Redis (%s); other workers see it within %.0f s",
            type(exc).__name__,
            REVOCATION_BOUND_S,
        )


async def follow_key_changes(redis: Any, keys: KeyStore) -> None:
    """Drop ``keys``' cache on every pushed change, until cancelled; resubscribes after a
    Redis failure (dropping the cache then too: messages may have been missed)."""
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(KEYS_CHANNEL)
            keys.invalidate()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_S)
                if message is not None:
                    keys.invalidate()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("key change channel lost (%s); resubscribing", type(exc).__name__)
            await asyncio.sleep(_POLL_S)
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                await pubsub.aclose()
