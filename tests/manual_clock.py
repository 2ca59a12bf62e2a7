"""A clock the test moves by hand (``clock.now += 30``), given to code that reads the time,
so breaker and bucket transitions are tested without sleeping."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
