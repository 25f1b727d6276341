"""ChatService: what happens in one chat turn, for `/api` and every `/v1` endpoint.

No Ray here: conversations, models and knowledge bases are reached through the typed
ports of `chatapp.chat.ports` (Ray adapters in production, the core's own classes in
tests). A turn on `/api` (`post_message`, `regenerate`), top to bottom:

1. the message is checked, and the usage meter holds a reply slot and the reply's
   `max_tokens` against the monthly budget and the per-minute limit (429 when one is
   used up): nothing is stored yet;
2. the question may be grounded in a knowledge base (naming an unknown one is
   `NotFound`, and still nothing is stored);
3. the conversation's shard stores the question and returns the history (`begin_turn`);
4. the model router streams the answer: `TurnStarted`, then `TextDelta`s;
5. the reply is stored through the shard (`finish_turn`) before `TurnDone` is yielded,
   and the meter settles the holds with the tokens really used (a row in the ledger).

A failure before the first token undoes the turn (`abort_turn`): the error is raised and
what is stored does not change. After it, the partial reply is stored marked incomplete
and the turn ends with `TurnFailed`, the error keeping its class. A client that goes away
closes the turn: the partial reply is still stored and the generation stops.

A completion on `/v1` (`complete`, in `chatapp.chat.completions`) stores no
conversation; the parts both share are in `chatapp.chat.turn_parts`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from chatapp.cache.responses import CacheMode
from chatapp.chat.compaction import prompt_history
from chatapp.chat.completions import Completions
from chatapp.chat.ports import (
    ReplyRecord,
)
from chatapp.chat.schemas import MessageCreate, MessagePublic, TurnOptions
from chatapp.errors import ChatAppError, InvalidRequest
from chatapp.llm.base import ChatMessage, Finish, TextDelta, close_stream
from chatapp.llm.catalog import AUTO
from chatapp.observability import tracing
from chatapp.rag.prompt import grounded_messages, public_sources
from chatapp.rag.schemas import SourcePublic
from chatapp.usage.ledger import UsageRecord
from chatapp.usage.meter import Hold

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnStarted:
    user_message: MessagePublic
    replayed: bool = False  # an Idempotency-Key's turn again: its stored reply follows


@dataclass(frozen=True, slots=True)
class TurnDone:
    message: MessagePublic
    fallback_from: str | None = None  # the model that failed before this reply's model


@dataclass(frozen=True, slots=True)
class TurnFailed:
    error: ChatAppError
    message: MessagePublic | None  # the partial reply, stored incomplete


TurnEvent = TurnStarted | TextDelta | TurnDone | TurnFailed


class ChatService(Completions):
    """A chat turn in a stored conversation (`/api`), and a completion (`/v1`)."""

    # -- /api: turns in stored conversations -----------------------------------------

    async def post_message(
        self,
        *,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        body: MessageCreate,
        cache: CacheMode = "auto",
        idempotency_key: str | None = None,
        system_prompt: str | None = None,
        top_p: float | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """Answer a new message, or (with `replace_from_seq`) an edited one that replaces
        that message and everything after it: the turn's events, once the message passed
        its checks (an edit that cannot be made is raised here).

        `system_prompt` replaces CHAT_SYSTEM_PROMPT for this turn (a /v1/responses
        request's `instructions`), `top_p` the default nucleus sampling.

        A message posted again with the `idempotency_key` of an answered one gets that turn
        again (`TurnStarted.replayed`, the stored reply as one delta): no second turn, no
        model call, nothing metered."""
        limit = self._settings.chat.max_message_chars
        if len(body.content) > limit:
            raise InvalidRequest(f"content: the message is longer than {limit} characters")
        if body.replace_from_seq is not None:
            await self._shards.prepare_rewrite(
                conversation_id=conversation_id,
                user_id=user_id,
                from_seq=body.replace_from_seq,
                content=body.content,
            )
        return self._turn(
            user_id,
            conversation_id,
            body.content,
            body,
            cache,
            idempotency_key,
            system_prompt=system_prompt,
            top_p=top_p,
        )

    async def regenerate(
        self,
        *,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        options: TurnOptions,
        cache: CacheMode = "auto",
    ) -> AsyncGenerator[TurnEvent, None]:
        """Answer the last user message again, replacing its reply."""
        content = await self._shards.prepare_regenerate(
            conversation_id=conversation_id, user_id=user_id
        )
        return self._turn(user_id, conversation_id, content, options, cache)

    async def delete_conversation(self, *, user_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
        """Delete a conversation and its messages (through its shard, which drops its hot
        copy)."""
        await self._shards.delete(conversation_id=conversation_id, user_id=user_id)

    def _turn(
        self,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        content: str,
        options: TurnOptions,
        cache: CacheMode,
        idempotency_key: str | None = None,
        *,
        system_prompt: str | None = None,
        top_p: float | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        """The turn's events, traced as one `chat.turn` span whose children are its parts
        (`chatapp.observability.tracing` draws the tree)."""
        span = tracing.start_span(
            "chat.turn",
            {
                "chatapp.conversation_id": str(conversation_id),
                "user.id": str(user_id),
                tracing.MODEL: options.model or AUTO,
                "chatapp.stream": options.stream,
            },
        )
        events = self._turn_events(
            user_id, conversation_id, content, options, cache, idempotency_key, system_prompt, top_p
        )
        return tracing.stepped(span, events)

    async def _turn_events(
        self,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        content: str,
        options: TurnOptions,
        cache: CacheMode,
        idempotency_key: str | None,
        system_prompt: str | None = None,
        top_p: float | None = None,
    ) -> AsyncGenerator[TurnEvent, None]:
        began = time.perf_counter()
        params = self.sampling_params(
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=top_p,
            whole=not options.stream,
        )
        hold = await self._hold(user_id, params)  # before anything is stored
        try:
            # Before the question is stored: an unknown knowledge base changes nothing.
            grounding = await self.ground(
                content, knowledge_base=options.knowledge_base_id, rag=options.rag, user_id=user_id
            )
            with tracing.span("chat.begin_turn"):
                start = await self._shards.begin_turn(
                    conversation_id=conversation_id,
                    user_id=user_id,
                    content=content,
                    idempotency_key=idempotency_key,
                )
        except BaseException:
            await asyncio.shield(self._settle(hold, None))
            raise
        if start.replay is not None:
            tracing.current_span().set_attribute("chatapp.replayed", True)
            await asyncio.shield(self._settle(hold, None))
            yield TurnStarted(start.user_message, replayed=True)
            if start.replay.content:
                yield TextDelta(start.replay.content, start.replay.completion_tokens)
            yield TurnDone(start.replay)
            return
        sources = tuple(public_sources(grounding, snippet_chars=self._settings.rag.snippet_chars))
        # The sources go in an untrusted context block before the question, never into
        # the system prompt (chatapp.rag.prompt.grounded_messages).
        system = ChatMessage("system", system_prompt or self._settings.chat.system_prompt)
        # A long chat's older turns are there as its running summary (compaction.py).
        messages = grounded_messages([system, *prompt_history(start)], grounding)
        parts: list[TextDelta] = []
        finish: Finish | None = None
        failure: ChatAppError | None = None
        chunks = self._model_stream(messages, params, options.model, user_id, cache)
        renewing = asyncio.ensure_future(self._renew(conversation_id, user_id))
        try:
            yield TurnStarted(start.user_message)  # closed here: the turn is undone
            async for chunk in chunks:
                if isinstance(chunk, Finish):
                    finish = chunk
                elif isinstance(chunk, TextDelta):  # /api asks for no tools: text only
                    if not parts:
                        self._metrics.ttft.labels("chat").observe(time.perf_counter() - began)
                    parts.append(chunk)
                    yield chunk
        except ChatAppError as exc:
            failure = exc
        finally:
            # Runs on success, on failure and when the client goes away (cancellation or
            # the turn being closed): the store is its own task, kept referenced until
            # done and shielded, so it completes even then; then the model stream is
            # closed, which stops the generation.
            renewing.cancel()
            reply = _reply_record(parts, finish, failure, sources)
            used = UsageRecord.of_call(user_id, "chat", parts, finish, conversation_id)
            store = asyncio.ensure_future(
                self._store(user_id, conversation_id, start.user_message.seq, reply, hold, used)
            )
            self._storing.add(store)
            store.add_done_callback(self._storing.discard)
            self._observe("chat", began, used, failure, finish)
            await close_stream(chunks)
            stored = await asyncio.shield(store)
        if failure is not None:
            if not parts:
                raise failure  # the turn was undone: an ordinary HTTP error
            yield TurnFailed(failure, stored if isinstance(stored, MessagePublic) else None)
        elif isinstance(stored, TurnFailed):
            yield stored
        elif stored is not None:
            self.compaction.after_turn(
                user_id=user_id,
                conversation_id=conversation_id,
                system=system,
                start=start,
                reply=stored,
                model=options.model,
            )
            yield TurnDone(stored, finish.fallback_from if finish else None)

    async def _renew(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Renew the turn's lease on its conversation while it runs (every third of it),
        so the conversation stays this turn's, and is freed soon if this replica dies."""
        every = self._settings.shards.turn_lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self._shards.renew_turn(conversation_id=conversation_id, user_id=user_id)
            except ChatAppError as exc:
                logger.warning("turn of conversation %s not renewed: %s", conversation_id, exc)

    async def _store(
        self,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        user_seq: int,
        reply: ReplyRecord | None,
        hold: Hold | None,
        used: UsageRecord | None,
    ) -> MessagePublic | TurnFailed | None:
        await self._settle(hold, used)
        if reply is None:
            # Nothing was generated: undo the turn so a rejected request stores nothing.
            try:
                with tracing.span("chat.abort_turn"):
                    await self._shards.abort_turn(
                        conversation_id=conversation_id, user_id=user_id, user_seq=user_seq
                    )
            except ChatAppError as exc:
                logger.warning("turn of conversation %s not undone: %s", conversation_id, exc)
            return None
        try:
            with tracing.span("chat.finish_turn"):
                message = await self._shards.finish_turn(
                    conversation_id=conversation_id, user_id=user_id, reply=reply
                )
        except ChatAppError as exc:
            logger.warning("reply of conversation %s not stored: %s", conversation_id, exc)
            return TurnFailed(exc, None)
        return message


def _reply_record(
    parts: list[TextDelta],
    finish: Finish | None,
    failure: ChatAppError | None,
    sources: tuple[SourcePublic, ...],
) -> ReplyRecord | None:
    """The reply to store: whole, partial (marked incomplete), or none when nothing came."""
    if not parts and finish is None:
        return None
    content = "".join(p.text for p in parts)
    if finish is None:
        return ReplyRecord(
            content=content,
            status="incomplete",
            finish_reason="error" if failure else "cancelled",
            completion_tokens=sum(p.tokens for p in parts),
            sources=sources,
        )
    return ReplyRecord(
        content=content,
        status="complete" if failure is None else "incomplete",
        finish_reason=finish.finish_reason,
        model=finish.model or None,
        provider=finish.provider or None,
        prompt_tokens=finish.prompt_tokens,
        completion_tokens=finish.completion_tokens,
        cost_usd=finish.cost_usd,
        cached=finish.cached,
        sources=sources,
        fallback_from=finish.fallback_from,
    )
