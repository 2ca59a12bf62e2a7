"""Requests built by hand, complete as ``catalog.rules.resolve_request`` makes them.

The gateway always resolves a request's output size and response format from the caller's
fields and the model; a test that builds an ``ImageRequest`` directly gets the values a
plain request resolves to on most models (1024x1024, base64) unless it names others.
"""

from __future__ import annotations

from typing import Any

from imagegate.core.types import ImageRequest


def image_request(**fields: Any) -> ImageRequest:
    """An ``ImageRequest`` of ``fields`` (``operation`` and ``model`` at least)."""
    resolved: dict[str, Any] = {"width": 1024, "height": 1024, "response_format": "b64_json"}
    return ImageRequest(**{**resolved, **fields})
