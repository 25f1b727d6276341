"""Hot conversation state: the logic of a conversation shard, without Ray.

Many conversations live in one store (virtual actors). A conversation is activated
from SQL on first use, holds its recent messages and next sequence number, and is
passivated when idle or when the store is over capacity. Every append is written
through to SQL before it is acknowledged; SQL stays the source of truth. One turn at a
time per conversation: a second concurrent turn gets `Conflict`.

Edit-and-resend and regenerate rewrite history in two steps on the same conversation:
`prepare_rewrite` (or `prepare_regenerate`) validates the sequence number and marks the
conversation; the turn's own `begin_turn`, given the same content, then deletes messages
from that seq on and stores the new user message in one transaction. If the turn then
produces nothing, `abort_turn` puts the removed messages back.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.chat import repository, summaries
from chatapp.chat.ports import ReplyRecord, TurnStart
from chatapp.chat.schemas import MessagePublic
from chatapp.chat.summaries import SummaryPublic
from chatapp.errors import Conflict, InvalidRequest, WriteConflict
from chatapp.llm.base import ChatMessage
from chatapp.observability.metrics import PrometheusInstruments, ShardMetrics

_TITLE_CHARS = 60
_REWRITE_TTL_S = 60.0  # a prepared rewrite not followed by its turn this long is dropped
# Memory estimates: a conversation's own state, and a message beyond its text.
_CONVERSATION_BYTES = 1200
_MESSAGE_BYTES = 120


def _message_bytes(message: ChatMessage) -> int:
    return _MESSAGE_BYTES + sys.getsizeof(message.content)


@dataclass(frozen=True, slots=True)
class PendingRewrite:
    """History from `from_seq` on is to be replaced by a user message with `content`."""

    from_seq: int
    content: str
    at: float


@dataclass(slots=True)
class HotConversation:
    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    next_seq: int
    recent: deque[ChatMessage]
    last_used: float
    turn_renewed: float | None = None  # a turn is running: when it began or was renewed
    turn_set_title: bool = False
    rewrite: PendingRewrite | None = None
    undo: list[MessagePublic] | None = None  # what this turn's rewrite removed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    size: int = 0  # estimated bytes: see `ConversationStore._resize`
    summary: SummaryPublic | None = None  # the newest running summary, for the prompt

    def busy(self) -> bool:
        return self.turn_renewed is not None or self.rewrite is not None

    def measure(self) -> int:
        return _CONVERSATION_BYTES + sum(map(_message_bytes, self.recent))


class ConversationStore:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        hot_turns: int,
        max_hot: int,
        idle_timeout_s: float,
        max_hot_bytes: int = 128 * 1024 * 1024,
        turn_lease_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: ShardMetrics | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._metrics = metrics or ShardMetrics(PrometheusInstruments())
        # A turn holds its conversation for this long after it began or was last renewed:
        # its owner renews it while the answer streams, so when the owner dies (its ingress
        # replica was killed) the conversation is free again within this time.
        self._turn_lease_s = turn_lease_s
        self._hot_turns = hot_turns
        self._max_hot = max_hot
        self._max_hot_bytes = max_hot_bytes
        self._idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._hot: OrderedDict[uuid.UUID, HotConversation] = OrderedDict()
        self._hot_bytes = 0  # the sum of the hot conversations' sizes
        self._activating: dict[uuid.UUID, asyncio.Lock] = {}

    # -- lifecycle -------------------------------------------------------------------

    def hot_ids(self) -> list[uuid.UUID]:
        return list(self._hot)

    def hot_bytes(self) -> int:
        """Estimated memory of the hot conversations."""
        return self._hot_bytes

    def _resize(self, hot: HotConversation) -> None:
        """Re-measure `hot` after its recent messages changed (if it is still hot)."""
        if self._hot.get(hot.id) is hot:
            size = hot.measure()
            self._hot_bytes += size - hot.size
            hot.size = size
            self._metrics.hot_bytes.labels().set(self._hot_bytes)

    def _count_hot(self) -> None:
        self._metrics.hot.labels().set(len(self._hot))
        self._metrics.hot_bytes.labels().set(self._hot_bytes)

    async def _activate(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> HotConversation:
        hot = self._hot.get(conversation_id)
        if hot is None:
            lock = self._activating.setdefault(conversation_id, asyncio.Lock())
            try:
                async with lock:
                    hot = self._hot.get(conversation_id)
                    if hot is None:
                        hot = await self._load(conversation_id, user_id)
                        self._hot[conversation_id] = hot
                        self._metrics.activations.labels().inc()
                        self._resize(hot)
                        self._evict_over_capacity()
                        self._count_hot()
            finally:  # also when the load failed: unknown ids must not pile up locks
                self._activating.pop(conversation_id, None)
        elif hot.user_id != user_id:
            # Same answer as for a missing conversation: never confirm someone else's id.
            async with self._sessionmaker() as session:
                await repository.get_conversation(
                    session=session, user_id=user_id, conversation_id=conversation_id
                )
        self._hot.move_to_end(conversation_id)
        hot.last_used = self._clock()
        return hot

    async def _load(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> HotConversation:
        async with self._sessionmaker() as session:
            conversation = await repository.get_conversation(
                session=session, user_id=user_id, conversation_id=conversation_id
            )
            rows, _ = await repository.list_messages(
                session=session, conversation_id=conversation_id, limit=self._hot_turns
            )
            summary = await summaries.newest_summary(
                session=session, conversation_id=conversation_id
            )
        return HotConversation(
            id=conversation_id,
            user_id=user_id,
            title=conversation.title,
            next_seq=rows[-1].seq + 1 if rows else 0,
            recent=deque(
                (ChatMessage(r.role, r.content) for r in rows),  # type: ignore[arg-type]
                maxlen=self._hot_turns,
            ),
            last_used=self._clock(),
            summary=summary,
        )

    def _over_capacity(self) -> bool:
        return len(self._hot) > self._max_hot or self._hot_bytes > self._max_hot_bytes

    def _evict_over_capacity(self) -> None:
        """Passivate the least recently used idle conversations while over either bound."""
        if not self._over_capacity():
            return
        for conversation_id in list(self._hot):
            if not self._over_capacity():
                return
            if not self._hot[conversation_id].busy():
                self.forget(conversation_id, reason="capacity")

    def passivate_idle(self) -> int:
        """Drop conversations idle longer than the timeout; returns how many."""
        cutoff = self._clock() - self._idle_timeout_s
        idle = [cid for cid, hot in self._hot.items() if hot.last_used < cutoff and not hot.busy()]
        for cid in idle:
            self.forget(cid, reason="idle")
        return len(idle)

    def forget(self, conversation_id: uuid.UUID, *, reason: str = "reload") -> None:
        """Drop a hot conversation (`reason`: idle, capacity, deleted, or reload: its next
        use re-reads it from SQL)."""
        hot = self._hot.pop(conversation_id, None)
        if hot is not None:
            self._hot_bytes -= hot.size
            self._metrics.passivations.labels(reason).inc()
            self._count_hot()

    async def delete(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """Delete the conversation and its messages (the owner's only)."""
        async with self._sessionmaker() as session:
            await repository.delete_conversation(
                session=session, user_id=user_id, conversation_id=conversation_id
            )
        self.forget(conversation_id, reason="deleted")

    # -- turns -----------------------------------------------------------------------

    async def begin_turn(
        self,
        *,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        content: str,
        idempotency_key: str | None = None,
    ) -> TurnStart:
        """Store the user's message and return the history the prompt is built from.

        With an `idempotency_key` the conversation already holds (the client retries a
        post whose response it lost), nothing new is stored: the turn's stored reply comes
        back as `replay`; a turn whose owner died before replying is answered now; a turn
        still running is `Conflict`; the key with a different message is `InvalidRequest`.

        A stale hot copy (the conversation was written elsewhere meanwhile: it moved to
        another shard and back when the shard count changed) fails its write and is
        dropped; the turn then starts again once from SQL, so the move costs no error."""
        try:
            return await self._begin_turn(conversation_id, user_id, content, idempotency_key)
        except WriteConflict:
            self._metrics.conflicts.labels("stale").inc()
            return await self._begin_turn(conversation_id, user_id, content, idempotency_key)
        except Conflict:
            self._metrics.conflicts.labels("busy").inc()
            raise

    async def _begin_turn(
        self,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        content: str,
        idempotency_key: str | None,
    ) -> TurnStart:
        hot = await self._activate(conversation_id, user_id)
        async with hot.lock:
            now = self._clock()
            if idempotency_key is not None:
                async with self._sessionmaker() as session:
                    keyed = await repository.keyed_turn(
                        session=session,
                        conversation_id=conversation_id,
                        idempotency_key=idempotency_key,
                    )
                if keyed is not None:
                    return self._again(hot, content, *keyed, now=now)
            if hot.turn_renewed is not None and now - hot.turn_renewed < self._turn_lease_s:
                raise Conflict(
                    "a reply is still being generated in this conversation; wait for it or "
                    "stop it before sending another message",
                    retry_after=self._lease_left(hot, now),
                )
            rewrite, hot.rewrite = hot.rewrite, None
            if rewrite is not None and now - rewrite.at < _REWRITE_TTL_S:
                if rewrite.content != content:
                    raise Conflict("this conversation is being edited; reload it and send again")
                return await self._begin_rewritten(hot, rewrite, now, idempotency_key)
            title = content.strip().splitlines()[0][:_TITLE_CHARS] if not hot.title else None
            message = await self._write(hot, content, title=title, idempotency_key=idempotency_key)
            if title is not None:
                hot.title = title
            hot.turn_renewed = now
            hot.turn_set_title = title is not None
            return TurnStart(
                user_message=message,
                history=list(hot.recent),
                reply_seq=hot.next_seq,
                summary=hot.summary,
            )

    def _again(
        self,
        hot: HotConversation,
        content: str,
        asked: MessagePublic,
        reply: MessagePublic | None,
        *,
        now: float,
    ) -> TurnStart:
        """The turn of a message posted again with its Idempotency-Key."""
        if asked.content != content:
            raise InvalidRequest(
                "Idempotency-Key: this key was already used for a different message in this "
                "conversation; send a new message with a new key"
            )
        hot.rewrite = None  # a retried edit was prepared again: it was made the first time
        if reply is not None:
            return TurnStart(user_message=asked, history=[], reply_seq=reply.seq, replay=reply)
        if hot.turn_renewed is not None and now - hot.turn_renewed < self._turn_lease_s:
            raise Conflict(
                "the message sent with this Idempotency-Key is still being answered; retry "
                "once its reply is done",
                retry_after=self._lease_left(hot, now),
            )
        if asked.seq != hot.next_seq - 1:
            raise Conflict(
                "the message sent with this Idempotency-Key was never answered and newer "
                "messages follow it; send it again with a new key"
            )
        # Its turn died unanswered (its ingress replica was killed): answer it now.
        hot.turn_renewed = now
        hot.turn_set_title = False
        return TurnStart(
            user_message=asked,
            history=list(hot.recent),
            reply_seq=hot.next_seq,
            summary=hot.summary,
        )

    async def finish_turn(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, reply: ReplyRecord
    ) -> MessagePublic:
        """Store the reply (whole, or partial and marked incomplete) and end the turn."""
        hot = await self._activate(conversation_id, user_id)
        async with hot.lock:
            try:
                return await self._write(hot, reply)
            finally:
                hot.turn_renewed = None
                hot.undo = None

    async def renew_turn(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        """The turn running in this conversation is still alive: extend its lease."""
        hot = self._hot.get(conversation_id)
        if hot is not None and hot.user_id == user_id and hot.turn_renewed is not None:
            hot.turn_renewed = self._clock()

    async def abort_turn(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, user_seq: int
    ) -> None:
        """Undo a turn that produced nothing: its user message goes, as if never sent."""
        hot = await self._activate(conversation_id, user_id)
        async with hot.lock:
            if hot.undo is not None:
                await self._undo_rewrite(hot, user_seq)
                return
            try:
                async with self._sessionmaker() as session:
                    undone = await repository.delete_last_message(
                        session=session,
                        conversation_id=conversation_id,
                        seq=user_seq,
                        reset_title=hot.turn_set_title,
                    )
            finally:
                hot.turn_renewed = None
            if undone and hot.next_seq == user_seq + 1:
                hot.next_seq = user_seq
                hot.recent.pop()
                self._resize(hot)
                if hot.turn_set_title:
                    hot.title = ""
            elif undone:
                self.forget(conversation_id)

    # -- rewriting history (edit and resend, regenerate) -----------------------------

    async def prepare_rewrite(
        self, *, conversation_id: uuid.UUID, user_id: uuid.UUID, from_seq: int, content: str
    ) -> None:
        """Check that user message `from_seq` can be replaced by `content`; the next
        `begin_turn` with that content replaces it and drops everything after it."""
        hot = await self._activate(conversation_id, user_id)
        async with hot.lock:
            self._check_idle(hot)
            if not 0 <= from_seq < hot.next_seq:
                raise InvalidRequest(
                    f"replace_from_seq: no message {from_seq} in this conversation "
                    f"(its messages are 0 to {hot.next_seq - 1})"
                )
            async with self._sessionmaker() as session:
                message = await repository.get_message(
                    session=session, conversation_id=conversation_id, seq=from_seq
                )
            if message is None or message.role != "user":
                raise InvalidRequest(
                    f"replace_from_seq: message {from_seq} is not a user message; "
                    "edit from one of your own messages"
                )
            hot.rewrite = PendingRewrite(from_seq, content, self._clock())

    async def prepare_regenerate(self, *, conversation_id: uuid.UUID, user_id: uuid.UUID) -> str:
        """Mark the last user message for a re-run; returns its content for the turn."""
        hot = await self._activate(conversation_id, user_id)
        async with hot.lock:
            self._check_idle(hot)
            async with self._sessionmaker() as session:
                message = await repository.last_user_message(
                    session=session, conversation_id=conversation_id
                )
            if message is None:
                raise InvalidRequest("there is no message to answer again in this conversation")
            hot.rewrite = PendingRewrite(message.seq, message.content, self._clock())
            return message.content

    def _lease_left(self, hot: HotConversation, now: float) -> float:
        """Seconds until the running turn's lease runs out unless renewed (a client's
        Retry-After: a live turn renews it, a dead one's conversation is free then)."""
        return max(1.0, (hot.turn_renewed or now) + self._turn_lease_s - now)

    def _check_idle(self, hot: HotConversation) -> None:
        started, now = hot.turn_renewed, self._clock()
        if started is not None and now - started < self._turn_lease_s:
            raise Conflict(
                "a reply is still being generated in this conversation; wait for it or "
                "stop it before changing the history",
                retry_after=self._lease_left(hot, now),
            )

    async def _begin_rewritten(
        self,
        hot: HotConversation,
        rewrite: PendingRewrite,
        now: float,
        idempotency_key: str | None,
    ) -> TurnStart:
        try:
            async with self._sessionmaker() as session:
                # Summaries of the messages being replaced go in the same transaction.
                summary = await summaries.invalidate_from(
                    session=session, conversation_id=hot.id, seq=rewrite.from_seq
                )
                row, removed = await repository.replace_messages(
                    session=session,
                    conversation_id=hot.id,
                    from_seq=rewrite.from_seq,
                    content=rewrite.content,
                    idempotency_key=idempotency_key,
                )
                rows, _ = await repository.list_messages(
                    session=session, conversation_id=hot.id, limit=self._hot_turns
                )
        except Exception:
            self.forget(hot.id)
            raise
        hot.next_seq = rewrite.from_seq + 1
        hot.recent.clear()
        hot.recent.extend(ChatMessage(r.role, r.content) for r in rows)  # type: ignore[arg-type]
        self._resize(hot)
        hot.turn_renewed = now
        hot.turn_set_title = False
        hot.undo = removed
        hot.summary = summary
        return TurnStart(
            user_message=row,
            history=list(hot.recent),
            reply_seq=hot.next_seq,
            summary=summary,
        )

    async def _undo_rewrite(self, hot: HotConversation, user_seq: int) -> None:
        removed, hot.undo = hot.undo or [], None
        try:
            async with self._sessionmaker() as session:
                await repository.restore_messages(
                    session=session, conversation_id=hot.id, from_seq=user_seq, messages=removed
                )
        finally:
            hot.turn_renewed = None
            self.forget(hot.id)  # re-activated from SQL on next use

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
        """Store a running summary written after a turn (see `chatapp.chat.compaction`);
        None when it is stale: the newest covers as much, or the history it was written
        from was rewritten meanwhile (its turn's reply is no longer there)."""
        hot = await self._activate(conversation_id, user_id)
        async with hot.lock:
            if covers_seq >= written_after.seq or hot.rewrite is not None or hot.undo:
                return None  # a summary leaves the last turn; an edit is under way
            async with self._sessionmaker() as session:
                reply = await repository.get_message(
                    session=session, conversation_id=conversation_id, seq=written_after.seq
                )
                if reply is None or reply.id != written_after.id:
                    return None
                stored = await summaries.add_summary(
                    session=session,
                    conversation_id=conversation_id,
                    content=content,
                    covers_seq=covers_seq,
                    model=model,
                )
            if stored is not None:
                hot.summary = stored
            return stored

    async def _write(
        self,
        hot: HotConversation,
        message: str | ReplyRecord,
        *,
        title: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessagePublic:
        """Append the user's text or a reply, through to SQL, then to the hot history."""
        started = time.perf_counter()
        try:
            async with self._sessionmaker() as session:
                stored = await repository.append_message(
                    session=session,
                    conversation_id=hot.id,
                    seq=hot.next_seq,
                    message=message,
                    title=title,
                    idempotency_key=idempotency_key,
                )
        except Exception:
            # Whatever happened (a stale copy, a deleted conversation), SQL is the truth:
            # the next use re-activates from it.
            self.forget(hot.id)
            raise
        self._metrics.write.labels(stored.role).observe(time.perf_counter() - started)
        hot.next_seq += 1
        if isinstance(message, str):
            hot.recent.append(ChatMessage("user", message))
        else:
            hot.recent.append(ChatMessage("assistant", message.content))
        self._resize(hot)
        self._evict_over_capacity()
        return stored
