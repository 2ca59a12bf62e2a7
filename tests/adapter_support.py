"""Test images as an adapter receives them (``InputImage``), shared by the adapter tests in
``tests/providers/`` (their fixtures are in ``tests/providers/conftest.py``)."""

from __future__ import annotations

import io

from PIL import Image

from imagegate.core.types import InputImage, OutputFormat


def png(
    width: int,
    height: int,
    *,
    mode: str = "RGB",
    colour: tuple[int, ...] = (200, 30, 30, 255),
    hole: tuple[int, int, int, int] | None = None,
    fmt: OutputFormat = "png",
) -> InputImage:
    """A solid image (``colour`` cut to the mode's bands); ``hole`` is a box made fully
    transparent, the edit area of an OpenAI-style mask (mode ``RGBA``)."""
    img = Image.new(mode, (width, height), colour[: len(mode)])
    if hole is not None:
        img.paste((0, 0, 0, 0), hole)
    buffer = io.BytesIO()
    img.save(buffer, fmt.upper())
    return InputImage(data=buffer.getvalue(), format=fmt, width=width, height=height)


def openai_mask(width: int, height: int) -> InputImage:
    """OpenAI's convention: opaque everywhere except a transparent right half (= edit)."""
    right_half = (width // 2, 0, width, height)
    return png(width, height, mode="RGBA", colour=(0, 0, 0, 255), hole=right_half)
