"""ConversationShard: a Ray actor hosting many conversations (virtual actors).

A thin shim over `chatapp.chat.hot.ConversationStore`: it owns a database engine and
passivates idle conversations in the background. Ray restarts a dead shard
(`max_restarts=-1`); it comes back empty and re-activates conversations from SQL.

Each port method takes the caller's trace context (`trace_context`, from
`chatapp.observability.tracing.carrier`) and, when there is one, records its work as a
`shard.<method>` span in the caller's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from contextlib import AbstractContextManager

import ray
from opentelemetry.trace import Span

from chatapp.chat.hot import ConversationStore
from chatapp.chat.ports import ReplyRecord, TurnStart
from chatapp.chat.schemas import MessagePublic
from chatapp.chat.summaries import SummaryPublic
from chatapp.config import Settings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.logs import configure_logging
from chatapp.observability.metrics import ShardMetrics
from chatapp.observability.tracing import continued
from deployments.observe import RayInstruments
from deployments.tracing import setup_actor_tracing

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=1000)
class ConversationShard:
    def __init__(self, settings: Settings, index: int) -> None:
        self._index = index
        configure_logging(settings.logs, environment=settings.environment)
        setup_actor_tracing(settings.tracing)
        self._engine = make_engine(settings.database)
        self._store = ConversationStore(
            sessionmaker=make_sessionmaker(self._engine),
            hot_turns=settings.shards.hot_turns,
            max_hot=settings.shards.max_hot,
            max_hot_bytes=settings.shards.max_hot_bytes,
            idle_timeout_s=settings.shards.idle_timeout_s,
            turn_lease_s=settings.shards.turn_lease_s,
            metrics=ShardMetrics(RayInstruments()),
        )
        self._sweep_every = min(60.0, settings.shards.idle_timeout_s / 2)
        self._sweeper: asyncio.Task[None] | None = None

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            with contextlib.suppress(Exception):
                if n := self._store.passivate_idle():
                    logger.info("shard %d passivated %d idle conversations", self._index, n)

    async def ping(self) -> int:
        self._ensure_sweeper()
        return self._index

    async def hot_ids(self) -> list[uuid.UUID]:
        return self._store.hot_ids()

    async def hot_bytes(self) -> int:
        """Estimated memory of this shard's hot conversations (benchmarks, ops)."""
        return self._store.hot_bytes()

    # The ConversationShards port, each method the store's own (see chatapp/chat/ports.py),
    # plus the caller's trace context.

    def _span(
        self, method: str, trace_context: dict[str, str] | None
    ) -> AbstractContextManager[Span]:
        return continued(f"shard.{method}", trace_context, {"chatapp.shard": self._index})

    async def begin_turn(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        content: str,
        idempotency_key: str | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> TurnStart:
        self._ensure_sweeper()
        with self._span("begin_turn", trace_context):
            return await self._store.begin_turn(
                conversation_id=conversation_id,
                user_id=user_id,
                content=content,
                idempotency_key=idempotency_key,
            )

    async def finish_turn(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        reply: ReplyRecord,
        trace_context: dict[str, str] | None = None,
    ) -> MessagePublic:
        with self._span("finish_turn", trace_context):
            return await self._store.finish_turn(
                conversation_id=conversation_id, user_id=user_id, reply=reply
            )

    async def renew_turn(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        with self._span("renew_turn", trace_context):
            await self._store.renew_turn(conversation_id=conversation_id, user_id=user_id)

    async def abort_turn(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        user_seq: int,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        with self._span("abort_turn", trace_context):
            await self._store.abort_turn(
                conversation_id=conversation_id, user_id=user_id, user_seq=user_seq
            )

    async def prepare_rewrite(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        from_seq: int,
        content: str,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        with self._span("prepare_rewrite", trace_context):
            await self._store.prepare_rewrite(
                conversation_id=conversation_id,
                user_id=user_id,
                from_seq=from_seq,
                content=content,
            )

    async def prepare_regenerate(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        trace_context: dict[str, str] | None = None,
    ) -> str:
        with self._span("prepare_regenerate", trace_context):
            return await self._store.prepare_regenerate(
                conversation_id=conversation_id, user_id=user_id
            )

    async def delete(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        with self._span("delete", trace_context):
            await self._store.delete(conversation_id=conversation_id, user_id=user_id)

    async def store_summary(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        content: str,
        covers_seq: int,
        model: str | None,
        written_after: MessagePublic,
        trace_context: dict[str, str] | None = None,
    ) -> SummaryPublic | None:
        with self._span("store_summary", trace_context):
            return await self._store.store_summary(
                conversation_id=conversation_id,
                user_id=user_id,
                content=content,
                covers_seq=covers_seq,
                model=model,
                written_after=written_after,
            )

    async def passivate_idle(self) -> int:
        return self._store.passivate_idle()
