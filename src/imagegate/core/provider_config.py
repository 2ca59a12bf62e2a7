"""One configured upstream provider: read by config and the catalog, given to adapters."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ProviderConfig:
    """One entry of the config file's ``providers`` list (or a built-in one)."""

    id: str
    type: str
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    status: str = "stable"
    timeout_s: float = 120.0
    options: dict[str, Any] = field(default_factory=dict)

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None
