"""SelfHostedLLM: the Serve deployment around one `ChatEngine` (llama.cpp, vLLM, simulated).

It fits the prompt to the model's window with the model's own tokenizer, streams the
engine's tokens and coalesces them before they cross the Ray boundary.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from ray import serve

from chatapp.chat.context import fit_messages
from chatapp.config import LLMSettings, ServeSettings
from chatapp.errors import InvalidRequest
from chatapp.llm.base import ChatMessage, Chunk, SamplingParams
from chatapp.llm.coalesce import coalesce
from chatapp.llm.engines import build_chat_engine
from deployments.handles import StreamError, to_wire

logger = logging.getLogger(__name__)


@serve.deployment(name="SelfHostedLLM")
class SelfHostedLLM:
    async def __init__(self, llm: LLMSettings, serve_settings: ServeSettings) -> None:
        self._engine = build_chat_engine(llm)
        await self._engine.start()
        self._window_s = serve_settings.coalesce_window_ms / 1000
        self._max_chars = serve_settings.coalesce_max_chars

    async def stream(
        self, messages: list[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[Chunk | StreamError]:
        async for chunk in to_wire(self._generate(messages, params)):
            yield chunk

    async def _generate(
        self, messages: list[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[Chunk]:
        if params.max_tokens >= self._engine.context_window:
            raise InvalidRequest(
                f"max_tokens must be below the model's context window "
                f"({self._engine.context_window} tokens)"
            )
        prompt = fit_messages(
            messages,
            count_tokens=self._engine.count_tokens,
            context_window=self._engine.context_window,
            reserve_tokens=params.max_tokens,
        )
        async for chunk in coalesce(
            self._engine.stream(prompt, params), window_s=self._window_s, max_chars=self._max_chars
        ):
            yield chunk

    async def __del__(self) -> None:
        await self._engine.close()
