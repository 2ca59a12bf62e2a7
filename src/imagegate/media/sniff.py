"""Identify an image's type from its magic bytes.

The gateway trusts neither file names nor declared content types: what the bytes start
with decides, and only the three formats every layer can handle are recognised.
"""

from __future__ import annotations

from imagegate.core.types import OutputFormat

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def sniff_format(data: bytes) -> OutputFormat | None:
    """Return "png", "jpeg" or "webp" for data of that type, else None."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
