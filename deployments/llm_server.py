"""SelfHostedLLM: the Serve deployment around one `ChatEngine` (llama.cpp, vLLM, simulated).

It fits the prompt to the model's window with the model's own tokenizer, streams the
engine's tokens and coalesces them before they cross the Ray boundary. The generation is
an `llm.engine` span, under Serve's span of this call (and so in the turn's trace).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from opentelemetry.trace import Span
from ray import serve

from chatapp.chat.context import fit_messages
from chatapp.config import LLMSettings, LogSettings, ServeSettings
from chatapp.errors import InvalidRequest
from chatapp.llm.base import ChatMessage, Chunk, Finish, SamplingParams
from chatapp.llm.coalesce import coalesce
from chatapp.llm.engines import build_chat_engine
from chatapp.logs import configure_logging
from chatapp.observability import tracing
from deployments.handles import StreamError, to_wire

logger = logging.getLogger(__name__)


@serve.deployment(name="SelfHostedLLM")
class SelfHostedLLM:
    async def __init__(
        self, llm: LLMSettings, serve_settings: ServeSettings, logs: LogSettings, environment: str
    ) -> None:
        # the engine's log lines (load, prompt fitting, failures) as the ingress writes them
        configure_logging(logs, environment=environment)
        self._engine = build_chat_engine(llm)
        self._engine_kind = llm.engine
        await self._engine.start()
        self._window_s = serve_settings.coalesce_window_ms / 1000
        self._max_chars = serve_settings.coalesce_max_chars

    async def stream(
        self, messages: list[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[Chunk | StreamError]:
        span = tracing.start_span(
            "llm.engine",
            {
                tracing.MODEL: self._engine.model_name,
                tracing.MAX_TOKENS: params.max_tokens,
                "chatapp.engine": self._engine_kind,
            },
        )
        async for chunk in to_wire(tracing.stepped(span, self._generate(span, messages, params))):
            yield chunk

    async def _generate(
        self, span: Span, messages: list[ChatMessage], params: SamplingParams
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
        span.set_attribute("chatapp.prompt_messages", len(prompt))
        async for chunk in coalesce(
            self._engine.stream(prompt, params), window_s=self._window_s, max_chars=self._max_chars
        ):
            if isinstance(chunk, Finish):
                tracing.finished(span, chunk)
            yield chunk

    async def __del__(self) -> None:
        await self._engine.close()
