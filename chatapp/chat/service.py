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

A completion on `/v1` (`complete`) stores no conversation: the same meter, optional
grounding and router stream, with its usage settled when the stream ends (a partial or
abandoned answer counts what was generated).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chatapp.cache.responses import CacheMode
from chatapp.chat.compaction import Compactor, prompt_history
from chatapp.chat.ports import (
    ConversationShards,
    KnowledgeAccess,
    ModelRouter,
    ReplyRecord,
    Retriever,
)
from chatapp.chat.schemas import MessageCreate, MessagePublic, TurnOptions
from chatapp.config import Settings
from chatapp.errors import ChatAppError, InvalidRequest, NotFound, ProviderError, RateLimited
from chatapp.llm.base import ChatMessage, Chunk, Finish, SamplingParams, TextDelta, ToolConfig
from chatapp.llm.catalog import AUTO
from chatapp.llm.content import check_images
from chatapp.observability import tracing
from chatapp.observability.metrics import PrometheusInstruments, TurnMetrics
from chatapp.rag.prompt import grounded_messages, public_sources, select_sources
from chatapp.rag.schemas import RagMode, RetrievedChunk, SourcePublic
from chatapp.usage.ledger import UsageRecord
from chatapp.usage.meter import Hold, UsageMeter

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


@dataclass(frozen=True, slots=True)
class CompletionStream:
    """An answer on its way: its sources, and its chunks from the first one on (the
    errors before that were raised by `ChatService.complete`)."""

    sources: list[SourcePublic]
    chunks: AsyncGenerator[Chunk, None]


class ChatService:
    def __init__(
        self,
        *,
        settings: Settings,
        shards: ConversationShards,
        router: ModelRouter,
        retriever: Retriever | None = None,
        knowledge: KnowledgeAccess | None = None,
        usage: UsageMeter | None = None,
        metrics: TurnMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._knowledge = knowledge  # None: every knowledge base is everyone's
        self._metrics = metrics or TurnMetrics(PrometheusInstruments())
        self._shards = shards
        self._router = router
        self._retriever = retriever  # None when RAG is disabled
        self.usage = usage  # None: nothing metered (core tests without limits)
        self._storing: set[asyncio.Future[Any]] = set()
        # Long chats: running summaries written in the background after a turn.
        self.compaction = Compactor(
            settings=settings, shards=shards, router=router, usage=usage, metrics=self._metrics
        )

    def sampling_params(
        self,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        whole: bool = False,
        tools: ToolConfig | None = None,
    ) -> SamplingParams:
        """A request's sampling parameters, the server's defaults where it is silent;
        `whole` for a request answered in one piece (not streamed); `tools` the model
        may call (/v1 only)."""
        return SamplingParams(
            max_tokens=max_tokens or self._settings.llm.default_max_tokens,
            temperature=0.7 if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            stop=tuple(stop),
            seed=seed,
            whole=whole,
            tools=tools,
        )

    # -- the parts of a turn ---------------------------------------------------------

    async def ground(
        self,
        query: str,
        *,
        knowledge_base: str | None,
        rag: RagMode | None,
        user_id: uuid.UUID,
        default_kb: bool = True,
    ) -> list[RetrievedChunk]:
        """The sources a turn is grounded in (maybe none). Naming an unknown knowledge base
        or one the user may not read is `NotFound`; without a name the default one is used
        when it exists (and `default_kb` allows). Retrieval failing otherwise only costs
        the grounding."""
        if knowledge_base is None and not default_kb:
            return []
        rag_settings = self._settings.rag
        kb = knowledge_base or rag_settings.default_kb
        mode = rag or rag_settings.mode_of(kb)
        if self._retriever is None:
            if knowledge_base is not None:
                raise NotFound(f"knowledge base {knowledge_base!r} not found (RAG is disabled)")
            return []
        if mode == "off" and knowledge_base is None:
            return []
        min_version = None
        if knowledge_base is not None and self._knowledge is not None:
            min_version = await self._knowledge.searchable(user_id, knowledge_base)
        query = query[-rag_settings.max_query_chars :]
        started = time.perf_counter()
        outcome = "error"
        try:
            with tracing.span("chat.retrieve", {"chatapp.knowledge_base": kb}) as span:
                hits = await self._retriever.search(
                    query, kb, missing_ok=knowledge_base is None, min_version=min_version
                )
                span.set_attribute("chatapp.retrieval.hits", len(hits))
            outcome = "ok"
        except (NotFound, InvalidRequest):
            outcome = "refused"
            raise
        except ChatAppError as exc:
            logger.warning("retrieval from %s failed, answering without it: %s", kb, exc)
            return []
        finally:
            self._metrics.retrieval.labels(outcome).observe(time.perf_counter() - started)
        sources = select_sources(hits, mode=mode, auto_threshold=rag_settings.auto_threshold)
        self._metrics.retrieval_hits.labels().inc(len(sources))
        return sources

    async def _hold(self, user_id: uuid.UUID, params: SamplingParams) -> Hold | None:
        """A reply slot and the reply's `max_tokens` held (429 when a limit is reached)."""
        if self.usage is None:
            return None
        try:
            return await self.usage.begin(user_id, max_tokens=params.max_tokens)
        except RateLimited as exc:
            self._metrics.refusals.labels(exc.limit).inc()
            raise

    def _settle(self, hold: Hold | None, used: UsageRecord | None) -> asyncio.Future[None]:
        """Settle `hold` in its own task, kept referenced until done: awaited shielded, it
        completes even when the turn is cancelled."""
        done: asyncio.Future[None]
        if hold is None or self.usage is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        done = asyncio.ensure_future(self.usage.settle(hold, used))
        self._storing.add(done)
        done.add_done_callback(self._storing.discard)
        return done

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
            await _close(chunks)
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

    def _observe(
        self,
        kind: str,
        began: float,
        used: UsageRecord | None,
        failure: ChatAppError | None,
        finish: Finish | None,
    ) -> None:
        """A turn or completion ended: its duration by outcome and its tokens."""
        outcome = "error" if failure else "complete" if finish else "cancelled"
        self._metrics.duration.labels(kind, outcome).observe(time.perf_counter() - began)
        if used is not None:
            self._metrics.tokens.labels(kind, "prompt").inc(used.prompt_tokens)
            self._metrics.tokens.labels(kind, "completion").inc(used.completion_tokens)
        span = tracing.current_span()  # the turn's or the completion's
        if span.is_recording():
            span.set_attribute(tracing.OUTCOME, outcome)
            if failure is not None:
                tracing.fail(span, failure)
            if finish is not None:
                tracing.finished(span, finish)
            elif used is not None:
                span.set_attribute(tracing.OUTPUT_TOKENS, used.completion_tokens)

    def _model_stream(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        model: str | None,
        user_id: uuid.UUID,
        cache: CacheMode,
    ) -> AsyncIterator[Chunk]:
        """The router's stream of the answer, traced as `chat.generate`."""
        span = tracing.start_span(
            "chat.generate", {tracing.MODEL: model or AUTO, tracing.MAX_TOKENS: params.max_tokens}
        )
        with tracing.current(span):  # the router's own spans, or its Ray call's, under it
            chunks = self._router.stream(
                messages, params, model=model, user=str(user_id), cache=cache
            )
        return tracing.stepped(span, chunks)

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

    # -- /v1: completions over the client's own messages ------------------------------

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
            await _close(rest)
            if settling is not None:
                await asyncio.shield(settling)


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


async def _close(chunks: AsyncIterator[Chunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
