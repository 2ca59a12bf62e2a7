"""Resetting a fake between tests: one loopback server serves a whole test module, and each
test starts from a well-behaved upstream with no history."""

from __future__ import annotations

from typing import Any


def reset_fake(fake: Any, *keep: str) -> None:
    """Make the dataclass ``fake`` equal to a fresh one of its class, keeping the fields
    named in ``keep`` (its server's ``url``, a key it was started with)."""
    fresh = type(fake)(**{name: getattr(fake, name) for name in keep})
    fake.__dict__.update(fresh.__dict__)
