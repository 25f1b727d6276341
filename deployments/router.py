"""ChatRouter: a thin Serve shim over `chatapp.llm.router.ProviderRouter` (cache, provider
choice, retries, breakers, fallback), plus the self-hosted provider: the adapter that
calls the SelfHostedLLM deployment (it lives here because it uses Ray)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from chatapp.cache.responses import CacheMode, build_response_cache
from chatapp.config import Settings
from chatapp.llm.base import ChatMessage, ChatProvider, Chunk, SamplingParams
from chatapp.llm.catalog import SELF_HOSTED
from chatapp.llm.registry import build_providers
from chatapp.llm.router import build_router
from chatapp.logs import configure_logging
from chatapp.observability.metrics import ProviderMetrics
from deployments.handles import StreamError, from_wire, pickled, to_wire
from deployments.observe import RayInstruments

logger = logging.getLogger(__name__)


class SelfHostedProvider(ChatProvider):
    """The SelfHostedLLM deployment as a provider; its chunks arrive coalesced."""

    name = SELF_HOSTED

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = pickled(handle).options(stream=True)

    def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, model: str
    ) -> AsyncIterator[Chunk]:
        return from_wire(
            self._handle.stream.remote(list(messages), params),
            unavailable="the self-hosted model is unavailable",
            retry_after=2,
        )


@serve.deployment(name="ChatRouter")
class ChatRouter:
    def __init__(self, self_hosted: DeploymentHandle, settings: Settings) -> None:
        # ChatApp's log lines (provider failures, fallbacks) as the ingress writes them
        configure_logging(settings.logs, environment=settings.environment)
        providers = build_providers(settings.providers)
        providers[SELF_HOSTED] = SelfHostedProvider(self_hosted)
        # Streams leave this replica through Ray: external providers' token-by-token
        # streams and cache replays are coalesced here; the self-hosted model's deployment
        # coalesces its own, which passes through unchanged.
        self._router = build_router(
            settings,
            providers,
            metrics=ProviderMetrics(RayInstruments()),
            cache=build_response_cache(settings.cache, settings.redis),
            coalesce=True,
        )

    async def models(self) -> list[dict[str, Any]]:
        """The catalog: the models requests may name."""
        return self._router.models()

    async def stream(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        model: str | None = None,
        *,
        user: str | None = None,
        cache: CacheMode = "auto",
    ) -> AsyncIterator[Chunk | StreamError]:
        chunks = self._router.stream(messages, params, model=model, user=user, cache=cache)
        async for chunk in to_wire(chunks):
            yield chunk

    async def __del__(self) -> None:
        await self._router.aclose()
