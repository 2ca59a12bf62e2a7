"""How a configured model entry combines with a built-in entry of the same id.

The configured entry is merged into the built-in one: keys it sets replace the built-in
values (``aliases``, ``sizes``, ``operations``...), keys it leaves out are kept. Its
``endpoints`` are matched by ``provider``: a listed provider's fields are laid over the
built-in endpoint of that provider (so ``{provider: openai, pricing: {...}}`` re-prices
just that endpoint and keeps its ``upstream_model``), a new provider is added, and the
listed endpoints come first, in the order given, before the built-in ones not listed.
``replace: true`` on the entry takes it as a whole new definition instead.
"""

from __future__ import annotations

from typing import Any

REPLACE_KEY = "replace"


def merge_model(builtin: dict[str, Any] | None, configured: dict[str, Any]) -> dict[str, Any]:
    """The entry to parse for ``configured`` given the built-in one with its id (if any)."""
    entry = {k: v for k, v in configured.items() if k != REPLACE_KEY}
    if builtin is None or configured.get(REPLACE_KEY) is True:
        return entry
    merged = {**builtin, **entry}
    if "endpoints" in entry and isinstance(entry["endpoints"], list):
        merged["endpoints"] = _merge_endpoints(builtin.get("endpoints") or [], entry["endpoints"])
    return merged


def _merge_endpoints(builtin: list[Any], configured: list[Any]) -> list[Any]:
    by_provider = {e.get("provider"): e for e in builtin if isinstance(e, dict)}
    listed: set[Any] = set()
    out: list[Any] = []
    for endpoint in configured:
        if not isinstance(endpoint, dict):
            out.append(endpoint)  # parse_model reports it
            continue
        provider = endpoint.get("provider")
        listed.add(provider)
        out.append({**by_provider.get(provider, {}), **endpoint})
    out += [e for e in builtin if not (isinstance(e, dict) and e.get("provider") in listed)]
    return out
