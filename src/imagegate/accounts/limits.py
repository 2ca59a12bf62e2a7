"""Checks on operator-entered numbers and top-ups, shared by the admin API and the CLI.

Counts and micro-USD amounts are 64-bit database integers: a value (or a balance it
would make) past that range is refused naming the field instead of failing in the
database. A revoked key cannot be topped up: its credit could never be spent.
"""

from __future__ import annotations

from imagegate.accounts.keys import ApiKey, usd_to_micro
from imagegate.core.errors import Conflict, InvalidRequest, NotFound

INT64_MAX = 2**63 - 1


def micro_in_range(usd: float, name: str, add_to: int = 0) -> int:
    """USD as micro-USD; 400 naming ``name`` if it or ``add_to`` + it exceeds int64."""
    micro = usd_to_micro(usd) if usd < 1e300 else INT64_MAX + 1
    if micro > INT64_MAX or micro + add_to > INT64_MAX:
        most = max(0, INT64_MAX - add_to) / 1_000_000
        raise InvalidRequest(
            f"'{name}' is too large: at most {most:.6f} USD can be added to this key.",
            param=name,
            code="value_out_of_range",
        )
    return micro


def top_up_amount(key: ApiKey | None, key_id: str, usd: float) -> int:
    """The micro-USD to add to ``key``: 404 unknown, 409 revoked, 400 out of range."""
    if key is None:
        raise NotFound(f"No API key with id '{key_id}'.", param="key_id", code="key_not_found")
    if key.revoked:
        raise Conflict(
            f"API key '{key_id}' has been revoked; a revoked key cannot be topped up.",
            param="key_id",
            code="key_revoked",
        )
    return micro_in_range(usd, "amount", add_to=max(0, key.credits_micro or 0))
