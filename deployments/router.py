"""ChatRouter: a thin Serve shim over `chatapp.llm.router.ProviderRouter` (cache, provider
choice, retries, breakers, fallback), plus the self-hosted provider: the adapter that
calls the SelfHostedLLM deployment (it lives here because it uses Ray)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from chatapp.cache.responses import build_response_cache
from chatapp.config import Settings
from chatapp.errors import ChatAppError, ProviderError, ServiceUnavailable
from chatapp.llm.base import (
    ChatMessage,
    ChatProvider,
    Chunk,
    Finish,
    SamplingParams,
    StreamError,
    TextDelta,
)
from chatapp.llm.catalog import SELF_HOSTED
from chatapp.llm.coalesce import coalesce
from chatapp.llm.registry import build_providers
from chatapp.llm.router import CacheMode, build_router
from chatapp.metrics import ProviderMetrics
from deployments.ingress.errors import unwrap

logger = logging.getLogger(__name__)


class SelfHostedProvider(ChatProvider):
    """The SelfHostedLLM deployment as a provider; its chunks arrive coalesced."""

    name = SELF_HOSTED

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle.options(stream=True)

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, model: str
    ) -> AsyncIterator[TextDelta | Finish]:
        gen = self._handle.stream.remote(list(messages), params)
        try:
            async for chunk in gen:
                if isinstance(chunk, StreamError):
                    raise ProviderError(chunk.message)
                yield chunk
        except ChatAppError:
            raise
        except Exception as exc:
            cause = unwrap(exc)
            if isinstance(cause, ChatAppError):
                raise cause from None
            raise ServiceUnavailable(
                f"the self-hosted model is unavailable: {type(cause).__name__}", retry_after=2
            ) from exc
        finally:
            gen.cancel()


@serve.deployment(name="ChatRouter")
class ChatRouter:
    def __init__(self, self_hosted: DeploymentHandle, settings: Settings) -> None:
        providers = build_providers(settings.providers)
        providers[SELF_HOSTED] = SelfHostedProvider(self_hosted)
        self._metrics = ProviderMetrics()
        self._router = build_router(
            settings,
            providers,
            metrics=self._metrics,
            cache=build_response_cache(settings.cache, settings.redis),
        )
        self._window_s = settings.serve.coalesce_window_ms / 1000
        self._max_chars = settings.serve.coalesce_max_chars

    async def models(self) -> list[dict[str, Any]]:
        """The catalog: the models requests may name."""
        return self._router.models()

    async def metrics(self) -> bytes:
        """This replica's provider metrics in the Prometheus text format."""
        return self._metrics.text()

    async def stream(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        model: str | None = None,
        *,
        user: str | None = None,
        cache: CacheMode = "auto",
    ) -> AsyncIterator[Chunk]:
        # External providers stream token by token: batch them before the Ray boundary.
        chunks = self._router.stream(messages, params, model=model, user=user, cache=cache)
        async for chunk in coalesce(chunks, window_s=self._window_s, max_chars=self._max_chars):
            yield chunk

    async def __del__(self) -> None:
        await self._router.aclose()
