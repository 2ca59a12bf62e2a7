"""``WIDTHxHEIGHT``, parsed in one place: the catalog's size rules, its price tables and the
responses all read sizes through :class:`Size`."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")


@dataclass(frozen=True, slots=True)
class Size:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Size | None:
        """The size ``text`` names, or None when it is not ``WxH`` with positive sides."""
        match = _PATTERN.match(text)
        if not match:
            return None
        width, height = int(match.group(1)), int(match.group(2))
        return cls(width, height) if width > 0 and height > 0 else None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"
