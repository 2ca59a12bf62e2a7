"""``WIDTHxHEIGHT`` is read one way everywhere (core.size.Size)."""

from __future__ import annotations

import pytest

from imagegate.catalog.rules import parse_size
from imagegate.core.size import Size


def test_a_size_parses_and_prints_back() -> None:
    size = Size.parse("1536x1024")
    assert size == Size(1536, 1024)
    assert str(size) == "1536x1024" and size is not None and size.pixels == 1536 * 1024


@pytest.mark.parametrize("text", ["auto", "0x512", "512x0", "123456x1", "512X512", " 512x512"])
def test_what_is_not_a_size(text: str) -> None:
    assert Size.parse(text) is None
    assert parse_size(text) is None
