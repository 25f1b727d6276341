"""A scripted in-process provider: `enqueue()` what each call does, read `history`."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from chatapp.llm.base import ChatMessage, ChatProvider, Finish, SamplingParams, TextDelta


@dataclass(frozen=True)
class Answer:
    text: str = "scripted answer"
    fail_after: int | None = None  # raise `error` after this many words
    error: Exception | None = None
    delay_s: float = 0.0  # before the first word
    gate: asyncio.Event | None = None  # wait for it before the first word
    called: asyncio.Event | None = None  # set when the call starts


class ScriptedProvider(ChatProvider):
    def __init__(self, name: str, default: Answer | Exception = Answer()) -> None:
        self.name = name
        self.default = default
        self._script: deque[Answer | Exception] = deque()
        self.history: list[tuple[str, list[ChatMessage]]] = []

    def enqueue(self, *steps: Answer | Exception) -> ScriptedProvider:
        self._script.extend(steps)
        return self

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, model: str
    ) -> AsyncIterator[TextDelta | Finish]:
        self.history.append((model, list(messages)))
        step = self._script.popleft() if self._script else self.default
        if isinstance(step, Exception):
            raise step
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if step.called is not None:
            step.called.set()
        if step.gate is not None:
            await step.gate.wait()
        words = step.text.split(" ")
        for i, word in enumerate(words):
            if step.fail_after is not None and i >= step.fail_after:
                raise step.error or RuntimeError("scripted failure")
            yield TextDelta(word + (" " if i < len(words) - 1 else ""))
        yield Finish("stop", prompt_tokens=10, completion_tokens=len(words), model=model)
