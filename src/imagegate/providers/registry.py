"""Adapter lookup by the config file's ``type``; the only place that names adapters."""

from __future__ import annotations

from imagegate.core.provider_config import ProviderConfig
from imagegate.providers.base import Provider, ProviderContext
from imagegate.providers.bfl import BFLProvider
from imagegate.providers.fal import FalProvider
from imagegate.providers.google import GoogleProvider
from imagegate.providers.local import LocalProvider
from imagegate.providers.openai.azure import AzureOpenAIProvider
from imagegate.providers.openai.compatible import OpenAICompatibleProvider
from imagegate.providers.openai.provider import OpenAIProvider
from imagegate.providers.replicate import ReplicateProvider
from imagegate.providers.sandbox import SandboxProvider
from imagegate.providers.stability import StabilityProvider
from imagegate.providers.together import TogetherProvider
from imagegate.providers.xai import XAIProvider

# The one list of adapters; a config's ``type`` is an adapter's ``type_name``.
ADAPTERS: dict[str, type[Provider]] = {
    cls.type_name: cls
    for cls in (
        SandboxProvider,
        OpenAICompatibleProvider,
        OpenAIProvider,
        AzureOpenAIProvider,
        GoogleProvider,
        BFLProvider,
        StabilityProvider,
        ReplicateProvider,
        FalProvider,
        TogetherProvider,
        XAIProvider,
        LocalProvider,
    )
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
