"""Conversation storage: keyword-only functions over an AsyncSession.

Reads page by keyset (never load a whole conversation); writes rely on the unique
(conversation_id, seq) constraint so a stale writer gets `Conflict`, never overwrites.
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from chatapp.chat.ports import ReplyRecord
from chatapp.chat.schemas import MessagePublic
from chatapp.db.models import Conversation, Message, utcnow
from chatapp.errors import InvalidRequest, NotFound, WriteConflict


async def create_conversation(
    *, session: AsyncSession, user_id: uuid.UUID, title: str = ""
) -> Conversation:
    now = utcnow()
    conversation = Conversation(
        user_id=user_id, title=title.strip(), created_at=now, updated_at=now
    )
    session.add(conversation)
    await session.commit()
    return conversation


async def get_conversation(
    *, session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> Conversation:
    """The user's conversation; someone else's is reported exactly like a missing one."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise NotFound(f"conversation {conversation_id} not found")
    return conversation


def _encode_cursor(updated_at: datetime, conversation_id: uuid.UUID) -> str:
    raw = f"{updated_at.isoformat()}|{conversation_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ident = raw.split("|", 1)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise ValueError("naive cursor time")
        return when, uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("invalid cursor: pass the next_cursor of a previous page") from exc


def _contains(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_text(q: str | None, *, max_chars: int) -> str | None:
    """The text a conversation search looks for (None: no search); `InvalidRequest` when
    it is longer than `max_chars`, so one request cannot make the match arbitrarily
    costly."""
    text = (q or "").strip()
    if "\x00" in text:
        raise InvalidRequest("q: the search text must not contain NUL characters (U+0000)")
    if len(text) > max_chars:
        raise InvalidRequest(
            f"q: the search text is {len(text)} characters long; at most {max_chars} are allowed"
        )
    return text or None


def _words_query(text: str) -> str | None:
    """A PostgreSQL tsquery finding every word of `text` (words of 3+ letters also as the
    start of a longer word: "quok" finds "quokka"); None when `text` has no words."""
    words = re.findall(r"[^\W_]+", text.lower())
    terms = [f"'{w}':*" if len(w) >= 3 else f"'{w}'" for w in words]
    return " & ".join(terms) or None


def conversations_query(
    *, user_id: uuid.UUID, dialect: str, cursor: str | None = None, q: str | None = None
) -> Select[Conversation]:
    """The user's conversations, newest first, after `cursor`, matching `q` if given.

    `q` keeps the conversations whose title contains it (ignoring case) or that have a
    message containing it: on PostgreSQL every word of `q` (full-text search over the
    GIN index of migration 0006, so a query costs its matches, never a scan of long
    messages), on SQLite the text itself (LIKE). The messages searched are joined to the
    user's conversations, so PostgreSQL picks per query between the index (rare words)
    and reading this user's messages (common ones).
    """
    query = select(Conversation).where(Conversation.user_id == user_id)
    if q:
        pattern = _contains(q)
        matches: ColumnElement[bool] = Conversation.title.ilike(pattern, escape="\\")
        found: ColumnElement[bool] | None = None
        if dialect != "postgresql":
            found = Message.content.ilike(pattern, escape="\\")
        elif (words := _words_query(q)) is not None:
            # The expression of the index: to_tsvector('simple', content).
            vector = func.to_tsvector(literal_column("'simple'"), Message.content)
            found = vector.op("@@")(func.to_tsquery(literal_column("'simple'"), words))
        if found is not None:
            mine = aliased(Conversation)
            in_messages = (
                select(Message.conversation_id)
                .join(mine, mine.id == Message.conversation_id)
                .where(mine.user_id == user_id, found)
            )
            matches = matches | Conversation.id.in_(in_messages)
        query = query.where(matches)
    if cursor:
        stamp, ident = _decode_cursor(cursor)
        query = query.where(
            (Conversation.updated_at < stamp)
            | ((Conversation.updated_at == stamp) & (Conversation.id < ident))
        )
    return query.order_by(Conversation.updated_at.desc(), Conversation.id.desc())


async def list_conversations(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    limit: int,
    cursor: str | None = None,
    q: str | None = None,
) -> tuple[list[Conversation], str | None]:
    """A page of `conversations_query` and the cursor of the next one."""
    dialect = session.get_bind().dialect.name
    query = conversations_query(user_id=user_id, dialect=dialect, cursor=cursor, q=q)
    rows = list((await session.scalars(query.limit(limit + 1))).all())
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, _encode_cursor(rows[-1].updated_at, rows[-1].id)
    return rows, None


async def rename_conversation(
    *, session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID, title: str
) -> Conversation:
    conversation = await get_conversation(
        session=session, user_id=user_id, conversation_id=conversation_id
    )
    conversation.title = title.strip()
    await session.commit()
    return conversation


async def delete_conversation(
    *, session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> None:
    await get_conversation(session=session, user_id=user_id, conversation_id=conversation_id)
    await session.execute(delete(Message).where(Message.conversation_id == conversation_id))
    await session.execute(delete(Conversation).where(Conversation.id == conversation_id))
    await session.commit()


async def list_messages(
    *,
    session: AsyncSession,
    conversation_id: uuid.UUID,
    limit: int,
    before: int | None = None,
) -> tuple[list[Message], bool]:
    """The `limit` messages before sequence `before` (newest if unset), oldest first."""
    query = select(Message).where(Message.conversation_id == conversation_id)
    if before is not None:
        query = query.where(Message.seq < before)
    query = query.order_by(Message.seq.desc()).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    has_more = len(rows) > limit
    return list(reversed(rows[:limit])), has_more


def _columns(message: str | ReplyRecord) -> dict[str, Any]:
    if isinstance(message, str):
        return {
            "role": "user",
            "content": message,
            "status": "complete",
            "finish_reason": None,
            "model": None,
            "provider": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "cached": False,
            "fallback_from": None,
            "sources": None,
        }
    return {
        "role": "assistant",
        "content": message.content,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "model": message.model,
        "provider": message.provider,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "cost_usd": message.cost_usd,
        "cached": message.cached,
        "fallback_from": message.fallback_from,
        "sources": [s.model_dump(mode="json") for s in message.sources] or None,
    }


_MESSAGES = cast(Table, Message.__table__)
_CONVERSATIONS = cast(Table, Conversation.__table__)


async def append_message(
    *,
    session: AsyncSession,
    conversation_id: uuid.UUID,
    seq: int,
    message: str | ReplyRecord,
    title: str | None = None,
    idempotency_key: str | None = None,
) -> MessagePublic:
    """Insert message `seq` (the user's text, with the client's `idempotency_key` if it
    sent one, or an assistant reply) and touch the conversation, in one transaction.

    `Conflict` when `seq` is taken (a stale writer) or the conversation is gone. Core
    statements, not the ORM's unit of work: this runs twice per chat turn, and the ORM's
    flush was most of a shard's CPU.
    """
    now = utcnow()
    row = {
        "id": uuid.uuid4(),
        "conversation_id": conversation_id,
        "seq": seq,
        "created_at": now,
        "idempotency_key": idempotency_key,
        **_columns(message),
    }
    # updated_at is always the time of the newest message (or of creation).
    values: dict[str, object] = {"updated_at": now}
    if title is not None:
        values["title"] = title
    try:
        await session.execute(insert(_MESSAGES).values(row))
        touched = await session.execute(
            update(_CONVERSATIONS).where(_CONVERSATIONS.c.id == conversation_id).values(values)
        )
        if touched.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"conversation {conversation_id} not found")
        await session.commit()
    except IntegrityError as exc:
        # `seq` taken by another writer, or (rarer) the idempotency key by a concurrent
        # turn on a stale copy: either way the writer re-reads the conversation from SQL.
        await session.rollback()
        raise WriteConflict(
            f"message {seq} of conversation {conversation_id} was already written by another "
            "writer; reload the conversation and retry"
        ) from exc
    except NotFound:
        await session.rollback()
        raise
    return MessagePublic.model_validate(row)


async def delete_last_message(
    *, session: AsyncSession, conversation_id: uuid.UUID, seq: int, reset_title: bool
) -> bool:
    """Undo message `seq` if it is still the conversation's last; True when it was."""
    newer = await session.scalar(
        select(Message.id).where(Message.conversation_id == conversation_id, Message.seq > seq)
    )
    if newer is not None:
        return False
    result = await session.execute(
        delete(Message).where(Message.conversation_id == conversation_id, Message.seq == seq)
    )
    previous = await session.scalar(
        select(Message.created_at)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.seq.desc())
        .limit(1)
    )
    if previous is None:
        previous = await session.scalar(
            select(Conversation.created_at).where(Conversation.id == conversation_id)
        )
    values: dict[str, object] = {"updated_at": previous}
    if reset_title:
        values["title"] = ""
    await session.execute(
        update(Conversation).where(Conversation.id == conversation_id).values(**values)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def get_message(
    *, session: AsyncSession, conversation_id: uuid.UUID, seq: int
) -> Message | None:
    return await session.scalar(
        select(Message).where(Message.conversation_id == conversation_id, Message.seq == seq)
    )


async def keyed_turn(
    *, session: AsyncSession, conversation_id: uuid.UUID, idempotency_key: str
) -> tuple[MessagePublic, MessagePublic | None] | None:
    """The user message posted with `idempotency_key` and its reply (None while there is
    none), or None when no message carries that key."""
    rows = (
        await session.scalars(
            select(Message)
            .where(
                Message.conversation_id == conversation_id,
                Message.seq
                >= select(Message.seq)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.idempotency_key == idempotency_key,
                )
                .scalar_subquery(),
            )
            .order_by(Message.seq)
            .limit(2)
        )
    ).all()
    if not rows:
        return None
    asked = MessagePublic.model_validate(rows[0])
    reply = rows[1] if len(rows) > 1 and rows[1].role == "assistant" else None
    return asked, None if reply is None else MessagePublic.model_validate(reply)


async def last_user_message(*, session: AsyncSession, conversation_id: uuid.UUID) -> Message | None:
    return await session.scalar(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.role == "user")
        .order_by(Message.seq.desc())
        .limit(1)
    )


async def replace_messages(
    *,
    session: AsyncSession,
    conversation_id: uuid.UUID,
    from_seq: int,
    content: str,
    idempotency_key: str | None = None,
) -> tuple[MessagePublic, list[MessagePublic]]:
    """Delete messages `from_seq` and later and store `content` as user message `from_seq`,
    in one transaction. Returns the new message and what was removed (for an undo)."""
    removed = [
        MessagePublic.model_validate(m)
        for m in await session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.seq >= from_seq)
            .order_by(Message.seq)
        )
    ]
    await session.execute(
        delete(Message).where(Message.conversation_id == conversation_id, Message.seq >= from_seq)
    )
    # append_message writes and commits in the same transaction: both or neither.
    message = await append_message(
        session=session,
        conversation_id=conversation_id,
        seq=from_seq,
        message=content,
        idempotency_key=idempotency_key,
    )
    return message, removed


async def restore_messages(
    *,
    session: AsyncSession,
    conversation_id: uuid.UUID,
    from_seq: int,
    messages: list[MessagePublic],
) -> None:
    """Undo `replace_messages`: messages `from_seq` and later become `messages` again."""
    await session.execute(
        delete(Message).where(Message.conversation_id == conversation_id, Message.seq >= from_seq)
    )
    if messages:
        await session.execute(
            insert(Message),
            [
                {
                    **m.model_dump(),
                    "idempotency_key": m.idempotency_key,
                    "conversation_id": conversation_id,
                }
                for m in messages
            ],
        )
    newest = await session.scalar(
        select(Message.created_at)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.seq.desc())
        .limit(1)
    )
    if newest is not None:
        await session.execute(
            update(Conversation).where(Conversation.id == conversation_id).values(updated_at=newest)
        )
    await session.commit()
