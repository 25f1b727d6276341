"""The parts every answer is made of, on `/api` (`chatapp.chat.service`) and on `/v1`
(`chatapp.chat.completions`): the request's sampling parameters, grounding in a knowledge
base, the usage meter's hold and its settlement, the model router's traced stream, and the
metrics of an answer that ended. No Ray here: the ports of `chatapp.chat.ports`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from chatapp.cache.responses import CacheMode
from chatapp.chat.compaction import Compactor
from chatapp.chat.ports import (
    ConversationShards,
    KnowledgeAccess,
    ModelRouter,
    Retriever,
)
from chatapp.config import Settings
from chatapp.errors import ChatAppError, InvalidRequest, NotFound, RateLimited
from chatapp.llm.base import ChatMessage, Chunk, Finish, SamplingParams, ToolConfig
from chatapp.llm.catalog import AUTO
from chatapp.observability import tracing
from chatapp.observability.metrics import PrometheusInstruments, TurnMetrics
from chatapp.rag.prompt import select_sources
from chatapp.rag.schemas import RagMode, RetrievedChunk
from chatapp.usage.ledger import UsageRecord
from chatapp.usage.meter import Hold, UsageMeter

logger = logging.getLogger(__name__)


class TurnParts:
    """What `/api` turns and `/v1` completions share (see `ChatService`)."""

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
