"""The `ConversationShards` port over Ray: finds the shard of a conversation by consistent
hashing over named shard actors and calls it with typed methods."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import ray
from uhashring import HashRing

from actors.shard import ConversationShard
from chatapp.chat.ports import ReplyRecord, TurnStart
from chatapp.chat.schemas import MessagePublic
from chatapp.chat.summaries import SummaryPublic
from chatapp.config import Settings
from chatapp.observability.tracing import carrier
from deployments.handles import call

T = TypeVar("T")


def _traced() -> dict[str, Any]:
    """The caller's trace context for the shard, when there is one to carry (none when
    tracing is off: the call is then exactly what shards without tracing take)."""
    headers = carrier()
    return {} if headers is None else {"trace_context": headers}


def shard_names(settings: Settings) -> list[str]:
    return [f"{settings.shards.name_prefix}-{i}" for i in range(settings.shards.count)]


class ShardClient:
    """Gets or creates the named shards (detached: they outlive any one ingress replica).
    A shard that is restarting is `ServiceUnavailable` (503, retry in a second); errors the
    shard raises (`Conflict`, `NotFound`, ...) come back as themselves. Each call carries
    the caller's trace context (`trace_context`, when tracing is on), so the shard's span
    joins the turn's trace."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._names = shard_names(settings)
        self._ring = HashRing(nodes=self._names)
        self._handles: dict[str, Any] = {}

    def _handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = ConversationShard.options(  # type: ignore[attr-defined]
                name=name,
                namespace=self._settings.shards.namespace,
                lifetime="detached",
                get_if_exists=True,
                # One per node where possible: a lost node takes few conversations' hot
                # copies with it, and Ray restarts a lost shard on a live node. SPREAD
                # ignores actors that ask for no CPU (all landed on one node of three),
                # hence a token share of one.
                scheduling_strategy="SPREAD",
                num_cpus=0.01,
            ).remote(self._settings, self._names.index(name))
            self._handles[name] = handle
        return handle

    def shard_for(self, conversation_id: uuid.UUID) -> Any:
        return self._handle(self._ring.get_node(str(conversation_id)))

    def all_shards(self) -> list[Any]:
        return [self._handle(name) for name in self._names]

    @staticmethod
    async def _call(ref: Awaitable[T]) -> T:
        return await call(ref, unavailable="the conversation service is restarting")

    async def begin_turn(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        content: str,
        idempotency_key: str | None = None,
    ) -> TurnStart:
        shard = self.shard_for(conversation_id)
        return await self._call(
            shard.begin_turn.remote(
                **_traced(),
                conversation_id=conversation_id,
                user_id=user_id,
                content=content,
                idempotency_key=idempotency_key,
            )
        )

    async def finish_turn(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, reply: ReplyRecord
    ) -> MessagePublic:
        shard = self.shard_for(conversation_id)
        return await self._call(
            shard.finish_turn.remote(
                **_traced(),
                conversation_id=conversation_id,
                user_id=user_id,
                reply=reply,
            )
        )

    async def renew_turn(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        shard = self.shard_for(conversation_id)
        await self._call(
            shard.renew_turn.remote(**_traced(), conversation_id=conversation_id, user_id=user_id)
        )

    async def abort_turn(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, user_seq: int
    ) -> None:
        shard = self.shard_for(conversation_id)
        await self._call(
            shard.abort_turn.remote(
                **_traced(),
                conversation_id=conversation_id,
                user_id=user_id,
                user_seq=user_seq,
            )
        )

    async def prepare_rewrite(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, from_seq: int, content: str
    ) -> None:
        shard = self.shard_for(conversation_id)
        await self._call(
            shard.prepare_rewrite.remote(
                **_traced(),
                conversation_id=conversation_id,
                user_id=user_id,
                from_seq=from_seq,
                content=content,
            )
        )

    async def prepare_regenerate(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> str:
        shard = self.shard_for(conversation_id)
        return await self._call(
            shard.prepare_regenerate.remote(
                **_traced(), conversation_id=conversation_id, user_id=user_id
            )
        )

    async def delete(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        shard = self.shard_for(conversation_id)
        await self._call(
            shard.delete.remote(**_traced(), conversation_id=conversation_id, user_id=user_id)
        )

    async def store_summary(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        content: str,
        covers_seq: int,
        model: str | None,
        written_after: MessagePublic,
    ) -> SummaryPublic | None:
        shard = self.shard_for(conversation_id)
        return await self._call(
            shard.store_summary.remote(
                **_traced(),
                conversation_id=conversation_id,
                user_id=user_id,
                content=content,
                covers_seq=covers_seq,
                model=model,
                written_after=written_after,
            )
        )


def kill_shards(settings: Settings) -> None:
    """Stop the detached shards of `settings` (tests; ops remove them with `ray stop`)."""
    for name in shard_names(settings):
        try:
            ray.kill(ray.get_actor(name, namespace=settings.shards.namespace), no_restart=True)
        except ValueError:
            pass
