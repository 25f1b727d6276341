"""What the chat service needs from the outside, as typed ports, and the value objects
that cross them.

`ChatService` (service.py) runs a turn against three ports. In production each is a Ray
adapter (`actors/client.py` for the shards, `deployments/handles.py` for the router and
the retrieval deployment); in tests and on one process the core's own classes implement
them directly (`ConversationStore`, `ProviderRouter`).

    ConversationShards   hot conversations, written through to SQL
    ModelRouter          cache -> provider choice -> retries/breaker -> fallback
    Retriever            embed a query and search a knowledge base

Every port raises `chatapp.errors.ChatAppError` subclasses, never transport errors: the
adapters translate those at their boundary.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from chatapp.cache.responses import CacheMode
from chatapp.chat.schemas import MessagePublic
from chatapp.chat.summaries import SummaryPublic
from chatapp.llm.base import ChatMessage, Chunk, SamplingParams
from chatapp.rag.schemas import KnowledgeBasePublic, RetrievedChunk, SourcePublic

ReplyStatus = Literal["complete", "incomplete"]


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """An assistant reply as it is stored: built once by the service, it travels
    unchanged through the shard and the conversation store to the repository."""

    content: str
    status: ReplyStatus
    finish_reason: str  # "stop" | "length" | "cancelled" | "error"
    model: str | None = None
    provider: str | None = None  # who answered: "openai", "anthropic", "self-hosted", ...
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    sources: tuple[SourcePublic, ...] = ()
    # Last, so a shard still running the previous code unpickles a record of this one (a
    # slots dataclass restores the fields it knows, in order).
    fallback_from: str | None = None  # the model that failed before `model` answered


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What a turn starts from: the stored user message and the history for the prompt.

    `replay` is the stored reply when the message was posted before with the same
    Idempotency-Key and answered: nothing was stored and no model is to be called."""

    user_message: MessagePublic
    history: list[ChatMessage]
    reply_seq: int
    replay: MessagePublic | None = None
    # The newest running summary: the prompt holds it instead of the messages it covers
    # (`chatapp.chat.compaction`). `history` still starts where the hot pool starts.
    summary: SummaryPublic | None = None


class ConversationShards(Protocol):
    """Conversations by id: one turn at a time each, every write through to SQL."""

    async def begin_turn(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        content: str,
        idempotency_key: str | None = None,
    ) -> TurnStart:
        """Store the user's message; `Conflict` while another turn runs (its lease lasts
        `SHARDS_TURN_LEASE_S` unless renewed). With an `idempotency_key` already used in
        the conversation: its turn again (see `ConversationStore.begin_turn`)."""
        ...

    async def renew_turn(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """The running turn is alive: extend its hold on the conversation."""
        ...

    async def finish_turn(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, reply: ReplyRecord
    ) -> MessagePublic:
        """Store the reply and end the turn."""
        ...

    async def abort_turn(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, user_seq: int
    ) -> None:
        """Undo a turn that produced nothing."""
        ...

    async def prepare_rewrite(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, from_seq: int, content: str
    ) -> None:
        """Mark user message `from_seq` to be replaced by `content` by the next turn."""
        ...

    async def prepare_regenerate(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> str:
        """Mark the last user message for a re-run; returns its content."""
        ...

    async def delete(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Delete the conversation and its messages."""
        ...

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
        """Store a new running-summary version for the next turns' prompts, written from
        the history as of the reply `written_after`; None when it is stale: the newest
        one covers as much, or that reply is gone (an edit or regenerate came first)."""
        ...


class ModelRouter(Protocol):
    """Answers from the model chain. A failure before the first chunk is raised when the
    stream is first read; after it, from the stream where it happened."""

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        model: str | None = None,
        user: str | None = None,
        cache: CacheMode = "auto",
    ) -> AsyncIterator[Chunk]: ...


class Retriever(Protocol):
    """Search over the served knowledge bases."""

    async def search(
        self,
        query: str,
        knowledge_base: str,
        *,
        top_k: int | None = None,
        score_threshold: float | None = None,
        missing_ok: bool = False,
        min_version: int | None = None,
    ) -> list[RetrievedChunk]:
        """Best chunks first; `NotFound` for an unknown knowledge base (unless
        `missing_ok`: then none), `InvalidRequest` for a query it cannot take. With
        `min_version`, from that index version or a newer one."""
        ...

    async def knowledge_bases(self) -> list[KnowledgeBasePublic]:
        """The served knowledge bases with their newest version."""
        ...


class KnowledgeAccess(Protocol):
    """Who may search which knowledge base (users' own ones are private)."""

    async def searchable(self, user_id: uuid.UUID, knowledge_base: str) -> int | None:
        """The least index version the user must be answered from (None: any);
        `NotFound` when they may not read it, `Conflict` when it has no index yet."""
        ...
