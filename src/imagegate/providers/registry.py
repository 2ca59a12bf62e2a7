"""Adapter lookup by the config file's ``type``; the only place that names adapters."""

from __future__ import annotations

from imagegate.providers.base import Provider, ProviderConfig, ProviderContext
from imagegate.providers.openai_compatible import OpenAICompatibleProvider
from imagegate.providers.sandbox import SandboxProvider

ADAPTERS: dict[str, type[Provider]] = {
    "sandbox": SandboxProvider,
    "openai_compatible": OpenAICompatibleProvider,
    # OpenAI itself speaks the protocol the compatible adapter implements; a dedicated
    # adapter (streaming passthrough, token pricing) replaces this in the adapters issue.
    "openai": OpenAICompatibleProvider,
}


class UnknownAdapter(ValueError):
    pass


def build_providers(configs: list[ProviderConfig], context: ProviderContext) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for config in configs:
        adapter = ADAPTERS.get(config.type)
        if adapter is None:
            raise UnknownAdapter(
                f"provider '{config.id}': adapter type '{config.type}' is not available in this "
                f"build (available: {', '.join(sorted(ADAPTERS))})"
            )
        providers[config.id] = adapter(config, context)
    return providers
