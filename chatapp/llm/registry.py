"""Builds the configured providers: one client per provider, HTTP client injectable."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2  # the HTTP client the openai and anthropic SDKs are built on

from chatapp.config import ProviderEndpoint, ProvidersSettings
from chatapp.llm.anthropic import AnthropicProvider
from chatapp.llm.base import ChatProvider
from chatapp.llm.openai import OpenAIProvider

logger = logging.getLogger(__name__)

HttpClientFactory = Callable[[str], httpx2.AsyncClient | None]


def endpoints(settings: ProvidersSettings) -> dict[str, ProviderEndpoint]:
    """The named endpoints: 'openai' and 'anthropic' from their keys, plus `endpoints`."""
    found: dict[str, ProviderEndpoint] = {}
    if settings.openai_api_key is not None:
        found["openai"] = ProviderEndpoint(
            kind="openai", base_url=settings.openai_base_url, api_key=settings.openai_api_key
        )
    if settings.anthropic_api_key is not None:
        found["anthropic"] = ProviderEndpoint(
            kind="anthropic",
            base_url=settings.anthropic_base_url,
            api_key=settings.anthropic_api_key,
        )
    found.update(settings.endpoints)
    return found


def provider_timeout(settings: ProvidersSettings) -> httpx2.Timeout:
    """Connect as configured; reads wait at most the first-token time between bytes."""
    return httpx2.Timeout(
        settings.first_token_timeout_s,
        connect=settings.connect_timeout_s,
        pool=settings.connect_timeout_s,
    )


def build_providers(
    settings: ProvidersSettings, *, http_client: HttpClientFactory | None = None
) -> dict[str, ChatProvider]:
    """Providers by name. `http_client(name)` may return a client (tests swap transports)."""
    timeout = provider_timeout(settings)
    providers: dict[str, ChatProvider] = {}
    for name, endpoint in endpoints(settings).items():
        client = http_client(name) if http_client is not None else None
        factory = OpenAIProvider if endpoint.kind == "openai" else AnthropicProvider
        providers[name] = factory.create(
            name=name,
            api_key=endpoint.api_key.get_secret_value(),
            base_url=endpoint.base_url,
            timeout=timeout,
            http_client=client,
        )
    missing = {m.provider for m in settings.models} - set(providers) - {"self-hosted"}
    for name in sorted(missing):
        logger.warning(
            "models of provider %r are left out of the catalog: set its API key "
            "(PROVIDERS_%s_API_KEY) or add it to PROVIDERS_ENDPOINTS",
            name,
            name.upper(),
        )
    return providers
