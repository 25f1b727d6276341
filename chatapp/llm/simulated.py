"""A model of fixed speed and no compute, for load tests, benchmarks and fault drills."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from chatapp.errors import ProviderError
from chatapp.llm.base import ChatEngine, ChatMessage, Finish, SamplingParams, TextDelta


class SimulatedEngine(ChatEngine):
    """Streams `reply_tokens` words at `tokens_per_s`; counts a token per word."""

    def __init__(
        self,
        *,
        model_name: str,
        context_window: int,
        tokens_per_s: float,
        reply_tokens: int,
        fail_after_tokens: int | None = None,
    ) -> None:
        self.model_name = model_name
        self.context_window = context_window
        self._delay = 1.0 / tokens_per_s
        self._reply_tokens = reply_tokens
        self._fail_after = fail_after_tokens

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content.split()) + 4 for m in messages)

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[TextDelta | Finish]:
        n = min(self._reply_tokens, params.max_tokens)
        for i in range(n):
            if i == self._fail_after:
                raise ProviderError(f"simulated engine failure after {i} tokens")
            await asyncio.sleep(self._delay)
            yield TextDelta(f"w{i} ")
        yield Finish(
            finish_reason="length" if n < self._reply_tokens else "stop",
            prompt_tokens=self.count_tokens(messages),
            completion_tokens=n,
            model=self.model_name,
        )
