"""Export and import of conversations, in the formats of `chatapp.chat.transfer_formats`.

Exports are written page by page as they are read, with the account export's pager and
chunking (`chatapp/export.py`), from one snapshot on PostgreSQL. An import is one
transaction: its conversations are new conversations of the importing user (new ids,
nothing overwritten), its messages written straight to SQL with consecutive sequence
numbers (no shard holds a conversation that did not exist), and nothing is stored when
any of it is refused. No usage is charged: no model ran.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.chat import repository
from chatapp.chat.schemas import ConversationPublic
from chatapp.chat.transfer_formats import (
    ConversationRecord,
    ExportFormat,
    MessageRecord,
    json_conversation_open,
    json_head,
    json_messages,
    markdown_conversation_open,
    markdown_message,
)
from chatapp.db.models import Conversation, Message
from chatapp.export import CHUNK_BYTES, PAGE_SIZE, Chunks, messages_after

MEDIA_TYPES: dict[ExportFormat, str] = {
    "json": "application/json",
    "markdown": "text/markdown; charset=utf-8",
}


def export_filename(fmt: ExportFormat, *, stem: str, now: datetime | None = None) -> str:
    day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    return f"{stem}-{day}.{'json' if fmt == 'json' else 'md'}"


async def _conversations(
    session: AsyncSession, user_id: uuid.UUID, page_size: int
) -> AsyncIterator[Conversation]:
    cursor: str | None = None
    while True:
        rows, cursor = await repository.list_conversations(
            session=session, user_id=user_id, limit=page_size, cursor=cursor
        )
        for row in rows:
            yield row
        if cursor is None:
            return


async def export_conversations(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    fmt: ExportFormat,
    conversation_id: uuid.UUID | None = None,
    page_size: int = PAGE_SIZE,
    chunk_bytes: int = CHUNK_BYTES,
    now: datetime | None = None,
) -> AsyncIterator[bytes]:
    """The user's conversation `conversation_id` (all of them, newest first, when None)
    as chunks of one document; `NotFound` before the first chunk when it is not theirs."""
    async with sessionmaker() as session:
        if session.get_bind().dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if conversation_id is not None:
            only = await repository.get_conversation(
                session=session, user_id=user_id, conversation_id=conversation_id
            )
        markdown = fmt == "markdown"
        yield b"" if markdown else json_head(now or datetime.now(UTC)).encode()

        async def chosen() -> AsyncIterator[Conversation]:
            if conversation_id is not None:
                yield only
            else:
                async for row in _conversations(session, user_id, page_size):
                    yield row

        out = Chunks(chunk_bytes)
        first = True
        async for conversation in chosen():
            record = ConversationRecord.model_validate(conversation)
            opening = (
                markdown_conversation_open(record)
                if markdown
                else ("" if first else ",") + json_conversation_open(record)
            )
            if chunk := out.add(opening):
                yield chunk
            first = False
            seq = -1
            while messages := await messages_after(session, conversation.id, seq, page_size):
                page = [MessageRecord.model_validate(m) for m in messages]
                if markdown:
                    text = "".join(markdown_message(m) for m in page)
                else:
                    text = ("" if seq < 0 else ",") + json_messages(page)
                if chunk := out.add(text):
                    yield chunk
                seq = messages[-1].seq
                if len(messages) < page_size:
                    break
            out.add("" if markdown else "]}")
        out.add("" if markdown else "]}")
        yield out.take()


class ImportedConversation(ConversationPublic):
    messages: int = Field(description="How many messages it holds.")


class ImportResult(BaseModel):
    """What an import stored: new conversations of the importing user."""

    conversations: list[ImportedConversation]
    messages: int = Field(description="Messages stored, all conversations together.")


def _message_row(conversation_id: uuid.UUID, seq: int, message: MessageRecord) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "conversation_id": conversation_id,
        "seq": seq,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "model": message.model,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "provider": message.provider,
        "cost_usd": message.cost_usd,
        "cached": message.cached,
        "fallback_from": message.fallback_from,
        "sources": [s.model_dump(mode="json") for s in message.sources] or None,
        "idempotency_key": None,
        "created_at": message.created_at,
    }


async def import_conversations(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    conversations: list[ConversationRecord],
    batch: int = 1000,
) -> ImportResult:
    """Store `conversations` as new conversations of the user, all or nothing."""
    stored: list[ImportedConversation] = []
    rows: list[dict[str, Any]] = []
    try:
        for record in conversations:
            conversation = Conversation(
                id=uuid.uuid4(),
                user_id=user_id,
                title=record.title.strip(),
                created_at=record.created_at,
                updated_at=record.updated_at,
            )
            session.add(conversation)
            rows.extend(
                _message_row(conversation.id, seq, m) for seq, m in enumerate(record.messages)
            )
            stored.append(
                ImportedConversation(
                    id=conversation.id,
                    title=conversation.title,
                    created_at=record.created_at,
                    updated_at=record.updated_at,
                    messages=len(record.messages),
                )
            )
        await session.flush()
        for start in range(0, len(rows), batch):
            await session.execute(insert(Message), rows[start : start + batch])
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return ImportResult(conversations=stored, messages=len(rows))
