"""A chat turn across the shard and the router, in three Ray calls whatever its length:
`begin_turn` (store the question, get the history), one streamed router call (tokens
arrive coalesced), `finish_turn` (store the reply before the turn is acknowledged);
a fourth, to the retrieval deployment, when the turn may be grounded in a knowledge base.

A failure before the first token undoes the turn (nothing stored changes); after it,
the partial reply is stored marked incomplete and the stream ends with an error event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from actors.client import ShardClient
from chatapp.chat.schemas import MessagePublic
from chatapp.config import Settings
from chatapp.errors import ChatAppError, InvalidRequest, NotFound, ProviderError
from chatapp.llm.base import ChatMessage, Finish, SamplingParams, StreamError, TextDelta
from chatapp.llm.router import CacheMode
from chatapp.rag.prompt import grounded_system_prompt, public_sources, select_sources
from chatapp.rag.schemas import RagMode, RetrievedChunk
from chatapp.ratelimit import RateLimiter
from chatapp.usage.budget import TokenBudget
from deployments.ingress.errors import unwrap

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TurnStarted:
    user_message: MessagePublic


@dataclass(frozen=True, slots=True)
class TurnDone:
    message: MessagePublic
    fallback_from: str | None = None  # the model that failed before this reply's model


@dataclass(frozen=True, slots=True)
class TurnFailed:
    error: ChatAppError
    message: MessagePublic | None  # the partial reply, stored incomplete


TurnEvent = TurnStarted | TextDelta | TurnDone | TurnFailed


def sampling_params(
    settings: Settings,
    *,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    seed: int | None = None,
) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens or settings.llm.default_max_tokens,
        temperature=0.7 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        stop=tuple(stop or ()),
        seed=seed,
    )


def cache_mode(header: str | None) -> CacheMode:
    """The `X-ChatApp-Cache` request header: `no` opts out, `yes` opts in (any temperature);
    absent: cached only at temperature 0."""
    value = (header or "").strip().lower()
    if value in ("no", "off", "false", "0", "no-store", "bypass"):
        return "off"
    if value in ("yes", "on", "true", "1"):
        return "on"
    return "auto"


def build_budget(settings: Settings) -> TokenBudget | None:
    """The monthly token budget, when one is configured (its own small SQL pool)."""
    if settings.usage.monthly_token_budget is None:
        return None
    from chatapp.db.engine import make_engine, make_sessionmaker

    db = settings.database.model_copy(update={"pool_size": 2})
    return TokenBudget(
        monthly_tokens=settings.usage.monthly_token_budget,
        sessionmaker=make_sessionmaker(make_engine(db)),
        refresh_s=settings.usage.budget_refresh_s,
    )


async def stream_model(
    router: Any,
    messages: list[ChatMessage],
    params: SamplingParams,
    model: str | None,
    *,
    user_id: uuid.UUID | None = None,
    cache: CacheMode = "auto",
) -> AsyncIterator[TextDelta | Finish | StreamError]:
    """The router's stream with Ray's task errors unwrapped to ChatApp errors."""
    gen = router.options(stream=True).stream.remote(
        messages, params, model, user=str(user_id) if user_id else None, cache=cache
    )
    try:
        async for chunk in gen:
            yield chunk
    except Exception as exc:
        cause = unwrap(exc)
        if isinstance(cause, ChatAppError):
            raise cause from None
        raise
    finally:
        gen.cancel()


class ChatTurns:
    def __init__(
        self,
        *,
        settings: Settings,
        shards: ShardClient,
        router: Any,
        budget: TokenBudget | None = None,
        limiter: RateLimiter | None = None,
        retrieval: Any = None,
    ) -> None:
        self._settings = settings
        self._shards = shards
        self._router = router
        self.budget = budget if budget is not None else build_budget(settings)
        self._limiter = limiter
        self._storing: set[asyncio.Future[Any]] = set()
        self.retrieval = retrieval  # the Retrieval deployment; None when RAG is disabled

    async def retrieve(
        self,
        query: str,
        *,
        knowledge_base: str | None,
        rag: RagMode | None,
        default_kb: bool = True,
    ) -> list[RetrievedChunk]:
        """The sources a turn is grounded in (maybe none). Naming an unknown knowledge base
        is `NotFound`; without a name the default one is used when it exists (and
        `default_kb` allows). Retrieval failing otherwise only costs the grounding."""
        if knowledge_base is None and not default_kb:
            return []
        rag_settings = self._settings.rag
        kb = knowledge_base or rag_settings.default_kb
        mode = rag or rag_settings.mode_of(kb)
        if self.retrieval is None:
            if knowledge_base is not None:
                raise NotFound(f"knowledge base {knowledge_base!r} not found (RAG is disabled)")
            return []
        if mode == "off" and knowledge_base is None:
            return []
        query = query[-rag_settings.max_query_chars :]
        try:
            hits: list[RetrievedChunk] = await self.retrieval.search.remote(
                query, kb, missing_ok=knowledge_base is None
            )
        except Exception as exc:
            cause = unwrap(exc)
            if isinstance(cause, NotFound | InvalidRequest):
                raise cause from None
            logger.warning("retrieval from %s failed, answering without it: %s", kb, cause)
            return []
        return select_sources(hits, mode=mode, auto_threshold=rag_settings.auto_threshold)

    async def check_budget(self, user_id: uuid.UUID) -> None:
        """429 once the user's monthly token budget is spent (no-op without a budget)."""
        if self.budget is not None:
            await self.budget.check(user_id)

    async def record_usage(self, user_id: uuid.UUID, finish: Finish | None) -> None:
        """Count a reply's tokens against the monthly budget and the per-minute limit."""
        if finish is None or finish.cached:
            return
        tokens = finish.prompt_tokens + finish.completion_tokens
        if self.budget is not None:
            self.budget.record(user_id, tokens)
        if self._limiter is not None:
            await self._limiter.record(
                self._settings.auth.chat_token_limit, "chat-tokens", str(user_id), cost=tokens
            )

    async def run(
        self,
        *,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        content: str,
        params: SamplingParams,
        model: str | None = None,
        cache: CacheMode = "auto",
        knowledge_base: str | None = None,
        rag: RagMode | None = None,
    ) -> AsyncIterator[TurnEvent]:
        await self.check_budget(user_id)  # before anything is stored
        # Before the question is stored: an unknown knowledge base changes nothing.
        grounding = await self.retrieve(content, knowledge_base=knowledge_base, rag=rag)
        sources = [
            s.model_dump(mode="json")
            for s in public_sources(grounding, snippet_chars=self._settings.rag.snippet_chars)
        ]
        start = await self._shards.call(conversation_id, "begin_turn", user_id, content)
        yield TurnStarted(start.user_message)
        system = grounded_system_prompt(self._settings.chat.system_prompt, grounding)
        messages = [ChatMessage("system", system), *start.history]
        parts: list[str] = []
        finish: Finish | None = None
        failure: ChatAppError | None = None
        try:
            chunks = stream_model(
                self._router, messages, params, model, user_id=user_id, cache=cache
            )
            async for chunk in chunks:
                if isinstance(chunk, TextDelta):
                    parts.append(chunk.text)
                    yield chunk
                elif isinstance(chunk, Finish):
                    finish = chunk
                else:
                    failure = ProviderError(chunk.message)
        except ChatAppError as exc:
            failure = exc
        finally:
            # Runs on success, on failure and when the client goes away (cancellation or
            # the turn being closed): the store is its own task, kept referenced until
            # done and shielded, so it completes even then; then the model stream is
            # closed, which stops the generation.
            store = asyncio.ensure_future(
                self._finish(
                    user_id,
                    conversation_id,
                    start.user_message.seq,
                    parts,
                    finish,
                    failure,
                    sources,
                )
            )
            self._storing.add(store)
            store.add_done_callback(self._storing.discard)
            await chunks.aclose()
            stored = await asyncio.shield(store)
        if failure is not None:
            if not parts:
                raise failure  # the turn was undone: an ordinary HTTP error
            yield TurnFailed(failure, stored if isinstance(stored, MessagePublic) else None)
        elif isinstance(stored, TurnFailed):
            yield stored
        elif stored is not None:
            yield TurnDone(stored, finish.fallback_from if finish else None)

    async def _finish(
        self,
        user_id: uuid.UUID,
        conversation_id: uuid.UUID,
        user_seq: int,
        parts: list[str],
        finish: Finish | None,
        failure: ChatAppError | None,
        sources: list[dict[str, Any]] | None = None,
    ) -> MessagePublic | TurnFailed | None:
        if not parts and finish is None:
            # Nothing was generated: undo the turn so a rejected request stores nothing.
            try:
                await self._shards.call(conversation_id, "abort_turn", user_id, user_seq)
            except ChatAppError as exc:
                logger.warning("turn of conversation %s not undone: %s", conversation_id, exc)
            return None
        complete = finish is not None and failure is None
        try:
            message: MessagePublic = await self._shards.call(
                conversation_id,
                "finish_turn",
                user_id,
                content="".join(parts),
                status="complete" if complete else "incomplete",
                finish_reason=finish.finish_reason
                if finish
                else ("error" if failure else "cancelled"),
                model=finish.model if finish else None,
                prompt_tokens=finish.prompt_tokens if finish else 0,
                completion_tokens=finish.completion_tokens if finish else len(parts),
                provider=finish.provider or None if finish else None,
                cost_usd=finish.cost_usd if finish else 0.0,
                cached=finish.cached if finish else False,
                sources=sources or None,
            )
        except ChatAppError as exc:
            logger.warning("reply of conversation %s not stored: %s", conversation_id, exc)
            return TurnFailed(exc, None)
        await self.record_usage(user_id, finish)
        return message
