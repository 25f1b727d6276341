"""llama.cpp engine (llama-cpp-python): CPU inference with the GGUF's own chat template.

llama.cpp decodes one sequence at a time, so generation runs in a worker thread behind
a lock and tokens cross back to the event loop through a queue; the loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from chatapp.errors import ServiceUnavailable
from chatapp.llm.base import ChatEngine, ChatMessage, Finish, SamplingParams, TextDelta
from chatapp.llm.template import render_segments

logger = logging.getLogger(__name__)
_END = object()


class LlamaCppEngine(ChatEngine):
    def __init__(
        self,
        *,
        gguf_path: Path,
        model_name: str,
        context_window: int,
        n_threads: int | None = None,
    ) -> None:
        self.model_name = model_name
        self.context_window = context_window
        self._gguf_path = gguf_path
        self._n_threads = n_threads
        self._llm: Any = None
        self._formatter: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ServiceUnavailable(
                "llama-cpp-python is not installed: run `make install` (it builds it)"
            ) from exc
        self._llm = await asyncio.to_thread(
            Llama,
            model_path=str(self._gguf_path),
            n_ctx=self.context_window,
            n_threads=self._n_threads,
            verbose=False,
        )
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ServiceUnavailable(f"{self._gguf_path} carries no chat template")
        vocab = self._llm._model  # token texts for the template's special tokens
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(self._llm.token_eos()),
            bos_token=vocab.token_get_text(self._llm.token_bos()),
            stop_token_ids=[self._llm.token_eos()],
        )
        logger.info("llama.cpp loaded %s (n_ctx=%d)", self._gguf_path.name, self.context_window)

    def _prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt's tokens: the template's control tokens parsed as such, the
        messages' text never (a user's `<|im_start|>` stays plain text)."""

        def render(dicts: list[dict[str, str]]) -> str:
            prompt: str = self._formatter(messages=dicts).prompt
            return prompt

        tokens: list[int] = []
        for segment in render_segments(render, messages):
            tokens += self._llm.tokenize(
                segment.text.encode("utf-8"), add_bos=False, special=segment.control
            )
        return tokens

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        if self._llm is None:
            raise ServiceUnavailable("the model is still loading")
        return len(self._prompt_tokens(messages))

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[TextDelta | Finish]:
        if self._llm is None:
            raise ServiceUnavailable("the model is still loading")
        prompt = self._prompt_tokens(messages)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                stream = self._llm.create_completion(
                    prompt,
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    stop=list(params.stop) or None,
                    seed=params.seed,
                    stream=True,
                )
                for chunk in stream:
                    if cancelled.is_set():
                        stream.close()
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk["choices"][0])
            except BaseException as exc:  # delivered to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        async with self._lock:
            worker = asyncio.ensure_future(asyncio.to_thread(produce))
            parts: list[str] = []
            finish_reason = "cancelled"
            try:
                while True:
                    item = await queue.get()
                    if item is _END:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    choice: dict[str, Any] = item  # type: ignore[assignment]
                    if text := choice.get("text") or "":
                        parts.append(text)
                        yield TextDelta(text)
                    finish_reason = choice.get("finish_reason") or finish_reason
                # Streaming reports no usage: count the reply with the model's tokenizer.
                completion_tokens = (
                    params.max_tokens
                    if finish_reason == "length"
                    else len(self._llm.tokenize("".join(parts).encode(), add_bos=False))
                    + (finish_reason == "stop")  # the end-of-turn token
                )
                yield Finish(
                    finish_reason=finish_reason,
                    prompt_tokens=len(prompt),
                    completion_tokens=completion_tokens,
                    model=self.model_name,
                )
            finally:
                cancelled.set()
                with contextlib.suppress(Exception):
                    await asyncio.shield(worker)
