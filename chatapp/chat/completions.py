"""A completion on `/v1` (`Completions.complete`): the client's own messages answered,
no conversation stored. The same meter, optional grounding and router stream as a turn on
`/api` (`chatapp.chat.turn_parts`), its usage settled when the stream ends (a partial or
abandoned answer counts what was generated). Used by /v1/chat/completions, /v1/messages
and /v1/responses.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import cast

from chatapp.cache.responses import CacheMode
from chatapp.chat.turn_parts import TurnParts
from chatapp.errors import ChatAppError, InvalidRequest, ProviderError
from chatapp.llm.base import ChatMessage, Chunk, Finish, SamplingParams, TextDelta, close_stream
from chatapp.llm.catalog import AUTO
from chatapp.llm.content import check_images
from chatapp.observability import tracing
from chatapp.rag.prompt import grounded_messages, public_sources
from chatapp.rag.schemas import RagMode, SourcePublic
from chatapp.usage.ledger import UsageRecord
from chatapp.usage.meter import Hold


@dataclass(frozen=True, slots=True)
class CompletionStream:
    """An answer on its way: its sources, and its chunks from the first one on (the
    errors before that were raised by `ChatService.complete`)."""

    sources: list[SourcePublic]
    chunks: AsyncGenerator[Chunk, None]


class Completions(TurnParts):
    async def complete(
        self,
        *,
        user_id: uuid.UUID,
        messages: list[ChatMessage],
        params: SamplingParams,
        model: str | None = None,
        cache: CacheMode = "auto",
        knowledge_base: str | None = None,
        rag: RagMode | None = None,
    ) -> CompletionStream:
        """Start answering `messages`; errors before the first chunk are raised here.

        RAG is opt-in: only with `knowledge_base` or `rag` is the last user message
        grounded, its sources added to the system message. Images are checked against
        the limits (`CHAT_MAX_IMAGES`, `CHAT_MAX_IMAGE_BYTES`); tools and images go only
        to models that take them (the router's chain)."""
        questions = [m for m in messages if m.role == "user" and (m.content.strip() or m.parts)]
        if not questions:
            raise InvalidRequest("messages: at least one non-empty user message is required")
        chat = self._settings.chat
        check_images(messages, max_images=chat.max_images, max_bytes=chat.max_image_bytes)
        began = time.perf_counter()
        span = tracing.start_span(
            "chat.completion",
            {
                "user.id": str(user_id),
                tracing.MODEL: model or AUTO,
                "chatapp.stream": not params.whole,
            },
        )
        with tracing.opening(span):  # its parts under it; an error here ends it
            hold = await self._hold(user_id, params)
            try:
                last_question = next(m.content for m in reversed(messages) if m.role == "user")
                grounding = await self.ground(
                    last_question,
                    knowledge_base=knowledge_base,
                    rag=rag,
                    user_id=user_id,
                    default_kb=rag is not None,
                )
                if grounding:
                    messages = grounded_messages(messages, grounding)
                sources = public_sources(grounding, snippet_chars=self._settings.rag.snippet_chars)
                chunks = self._model_stream(messages, params, model, user_id, cache)
                first = await anext(chunks)
            except BaseException:
                await asyncio.shield(self._settle(hold, None))
                raise
        self._metrics.ttft.labels("completion").observe(time.perf_counter() - began)
        counted = tracing.stepped(span, self._counted(user_id, hold, first, chunks, began))
        # Run it to its first `yield`, inside its `try`: from now on closing it, even
        # before reading a chunk, settles the hold (an unstarted generator's close runs
        # nothing, and the reader may never start).
        await anext(counted)
        return CompletionStream(sources, cast(AsyncGenerator[Chunk, None], counted))

    async def _counted(
        self,
        user_id: uuid.UUID,
        hold: Hold | None,
        first: Chunk,
        rest: AsyncIterator[Chunk],
        began: float,
    ) -> AsyncGenerator[Chunk | None, None]:
        """None (when `complete` starts it), then the stream, its usage settled when it
        ends, however it ends; closing it stops the model."""
        chunk = first
        parts: list[TextDelta] = []
        settled = False
        try:
            yield None
            while True:
                if isinstance(chunk, Finish):
                    # Settled before the last chunk is handed over: a reader may stop there.
                    used = UsageRecord.of_call(user_id, "completion", parts, chunk)
                    self._observe("completion", began, used, None, chunk)
                    await asyncio.shield(self._settle(hold, used))
                    settled = True
                    yield chunk
                    return
                if isinstance(chunk, TextDelta):
                    parts.append(chunk)
                yield chunk
                try:
                    chunk = await anext(rest)
                except StopAsyncIteration:
                    raise ProviderError("the model stream ended without a finish event") from None
        finally:
            settling = None
            if not settled:
                used = UsageRecord.of_call(user_id, "completion", parts, None)
                failed = sys.exc_info()[1]
                self._observe(
                    "completion",
                    began,
                    used,
                    failed if isinstance(failed, ChatAppError) else None,
                    None,
                )
                settling = self._settle(hold, used)
            await close_stream(rest)
            if settling is not None:
                await asyncio.shield(settling)
