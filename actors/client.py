"""Finds the shard of a conversation: consistent hashing over named shard actors."""

from __future__ import annotations

import uuid
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError
from uhashring import HashRing

from actors.shard import ConversationShard
from chatapp.config import Settings
from chatapp.errors import ServiceUnavailable


def shard_names(settings: Settings) -> list[str]:
    return [f"{settings.shards.name_prefix}-{i}" for i in range(settings.shards.count)]


class ShardClient:
    """Gets or creates the named shards (detached: they outlive any one ingress replica)."""

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
            ).remote(self._settings, self._names.index(name))
            self._handles[name] = handle
        return handle

    def shard_for(self, conversation_id: uuid.UUID) -> Any:
        return self._handle(self._ring.get_node(str(conversation_id)))

    def all_shards(self) -> list[Any]:
        return [self._handle(name) for name in self._names]

    async def call(self, conversation_id: uuid.UUID, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` on the conversation's shard; a restarting shard is a 503."""
        shard = self.shard_for(conversation_id)
        try:
            return await getattr(shard, method).remote(conversation_id, *args, **kwargs)
        except (ActorDiedError, ActorUnavailableError) as exc:
            raise ServiceUnavailable(
                "the conversation service is restarting; retry in a moment", retry_after=1
            ) from exc


def kill_shards(settings: Settings) -> None:
    """Stop the detached shards of `settings` (tests, `chatapp stop`)."""
    for name in shard_names(settings):
        try:
            ray.kill(ray.get_actor(name, namespace=settings.shards.namespace), no_restart=True)
        except ValueError:
            pass
