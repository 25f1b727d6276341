"""ChatRouter: the seam where provider choice, retries, breakers, fallback and the
response cache plug in. For now every request goes to the self-hosted model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from chatapp.errors import NotFound
from chatapp.llm.base import ChatMessage, Chunk, SamplingParams


@serve.deployment(name="ChatRouter")
class ChatRouter:
    def __init__(self, self_hosted: DeploymentHandle) -> None:
        self._self_hosted = self_hosted.options(stream=True)
        self._self_hosted_info = self_hosted
        self._models: list[dict[str, Any]] | None = None

    async def models(self) -> list[dict[str, Any]]:
        """The models requests may name."""
        if self._models is None:
            self._models = [await self._self_hosted_info.info.remote()]
        return self._models

    async def _check_model(self, model: str | None) -> None:
        if model in (None, "auto"):
            return
        names = [m["model"] for m in await self.models()]
        if model not in names:
            raise NotFound(
                f"model {model!r} not found; available: {', '.join(['auto', *names])} "
                "(GET /v1/models lists them)"
            )

    async def stream(
        self, messages: list[ChatMessage], params: SamplingParams, model: str | None = None
    ) -> AsyncIterator[Chunk]:
        await self._check_model(model)
        # Chunks arrive already coalesced; pass each batch through unchanged.
        async for chunk in self._self_hosted.stream.remote(messages, params):
            yield chunk
