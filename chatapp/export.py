"""Everything ChatApp holds about one user, as one JSON document (`GET /api/me/export`):

    {"format": "chatapp-export", "version": 1, "exported_at": ...,
     "user": {profile, no password hash}, "api_keys": [metadata, no key hashes],
     "conversations": [{id, title, created_at, updated_at, "messages": [...]}, ...],
     "usage_events": [{created_at, kind, model, tokens, cost, ...}, ...]}

Written page by page as it is read, so a large account costs a page of memory, not the
whole account; on PostgreSQL all pages come from one snapshot (REPEATABLE READ), so a
turn finishing during the export is either wholly in it or not at all. Conversations
are listed by the conversation repository's own pager, newest first; messages oldest
first within each conversation.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.auth import service as accounts
from chatapp.auth.schemas import ApiKeyPublic, UserPublic
from chatapp.chat import repository
from chatapp.chat.schemas import ConversationPublic, MessagePublic
from chatapp.db.models import Message, OidcIdentity, UsageEvent, User
from chatapp.errors import NotFound

FORMAT = "chatapp-export"
VERSION = 1
# Exports per user: each reads the whole account, so a loop of them would load the
# database; a failed download can still be retried a few times.
EXPORT_LIMIT = "10/hour"
PAGE_SIZE = 200  # rows read per query
CHUNK_BYTES = 64 * 1024  # what is sent at a time


class LinkedLogin(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    provider: str
    subject: str
    created_at: datetime


class ProfileExport(UserPublic):
    email_verified: bool
    has_password: bool
    linked_logins: list[LinkedLogin]


class UsageEventExport(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    created_at: datetime
    kind: str
    conversation_id: uuid.UUID | None
    model: str | None
    provider: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    complete: bool


def export_filename(now: datetime | None = None) -> str:
    return f"chatapp-export-{(now or datetime.now(UTC)).strftime('%Y-%m-%d')}.json"


class Chunks:
    """Text gathered into chunks of about `size` bytes."""

    def __init__(self, size: int) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._limit = size

    def add(self, text: str) -> bytes | None:
        """Add `text`; a chunk to send when enough has gathered."""
        data = text.encode()
        self._parts.append(data)
        self._size += len(data)
        return self.take() if self._size >= self._limit else None

    def take(self) -> bytes:
        chunk = b"".join(self._parts)
        self._parts, self._size = [], 0
        return chunk


def _joined(items: Iterable[BaseModel], *, first: bool) -> str:
    text = ",".join(item.model_dump_json() for item in items)
    return text if first or not text else "," + text


async def _profile(session: AsyncSession, user: User) -> ProfileExport:
    logins = await session.scalars(
        select(OidcIdentity)
        .where(OidcIdentity.user_id == user.id)
        .order_by(OidcIdentity.created_at, OidcIdentity.id)
    )
    return ProfileExport(
        **UserPublic.model_validate(user).model_dump(),
        email_verified=user.email_verified,
        has_password=user.password_hash is not None,
        linked_logins=[LinkedLogin.model_validate(row) for row in logins],
    )


async def messages_after(
    session: AsyncSession, conversation_id: uuid.UUID, seq: int, limit: int
) -> list[Message]:
    """The next `limit` messages after sequence `seq`, oldest first (the repository's
    pager goes the other way: newest pages first, for the chat page)."""
    rows = await session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.seq > seq)
        .order_by(Message.seq)
        .limit(limit)
    )
    return list(rows)


async def _usage_after(
    session: AsyncSession, user_id: uuid.UUID, event_id: int, limit: int
) -> list[UsageEvent]:
    rows = await session.scalars(
        select(UsageEvent)
        .where(UsageEvent.user_id == user_id, UsageEvent.id > event_id)
        .order_by(UsageEvent.id)
        .limit(limit)
    )
    return list(rows)


async def export_user(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    page_size: int = PAGE_SIZE,
    chunk_bytes: int = CHUNK_BYTES,
    now: datetime | None = None,
) -> AsyncIterator[bytes]:
    """The user's export, as chunks of one JSON document (`page_size` rows read at a time,
    sent `chunk_bytes` or so at a time); `NotFound` before the first chunk when the
    account is gone."""
    async with sessionmaker() as session:
        if session.get_bind().dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound("account not found")
        keys = await accounts.list_api_keys(session=session, user=user)
        head = {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": (now or datetime.now(UTC)).isoformat(),
            "user": (await _profile(session, user)).model_dump(mode="json"),
            "api_keys": [ApiKeyPublic.model_validate(k).model_dump(mode="json") for k in keys],
        }
        out = Chunks(chunk_bytes)
        yield json.dumps(head)[:-1].encode() + b',"conversations":['

        cursor: str | None = None
        first = True
        while True:
            conversations, cursor = await repository.list_conversations(
                session=session, user_id=user_id, limit=page_size, cursor=cursor
            )
            for conversation in conversations:
                opening = ConversationPublic.model_validate(conversation).model_dump_json()
                if chunk := out.add(("" if first else ",") + opening[:-1] + ',"messages":['):
                    yield chunk
                first = False
                seq = -1
                while messages := await messages_after(session, conversation.id, seq, page_size):
                    page = (MessagePublic.model_validate(m) for m in messages)
                    if chunk := out.add(_joined(page, first=seq < 0)):
                        yield chunk
                    seq = messages[-1].seq
                    if len(messages) < page_size:
                        break
                out.add("]}")
            if cursor is None:
                break

        out.add('],"usage_events":[')
        event_id = 0
        while events := await _usage_after(session, user_id, event_id, page_size):
            page_of_events = (UsageEventExport.model_validate(e) for e in events)
            if chunk := out.add(_joined(page_of_events, first=event_id == 0)):
                yield chunk
            event_id = events[-1].id
            if len(events) < page_size:
                break
        out.add("]}")
        yield out.take()
