"""ChatRouter: the seam where provider choice, retries, breakers, fallback and the
response cache plug in. For now every request goes to the self-hosted model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from chatapp.llm.base import ChatMessage, Chunk, SamplingParams


@serve.deployment(name="ChatRouter")
class ChatRouter:
    def __init__(self, self_hosted: DeploymentHandle) -> None:
        self._self_hosted = self_hosted.options(stream=True)
        self._self_hosted_info = self_hosted

    async def models(self) -> list[dict[str, Any]]:
        """The models requests may name."""
        return [await self._self_hosted_info.info.remote()]

    async def stream(
        self, messages: list[ChatMessage], params: SamplingParams, model: str | None = None
    ) -> AsyncIterator[Chunk]:
        # Chunks arrive already coalesced; pass each batch through unchanged.
        async for chunk in self._self_hosted.stream.remote(messages, params):
            yield chunk
