"""Stored responses: keyword-only functions over an AsyncSession (table `responses`,
migration 0009)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.db.models import Message, StoredResponse
from chatapp.errors import NotFound


@dataclass(frozen=True, slots=True)
class ResponseRow:
    """A stored response with its reply, and whether that reply is still the newest
    message of its conversation (only then can the conversation be continued from it)."""

    response: StoredResponse
    reply: Message
    latest: bool


async def add_response(
    *,
    session: AsyncSession,
    response_id: uuid.UUID,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    input_message_id: uuid.UUID,
    reply_message_id: uuid.UUID,
    previous_response_id: uuid.UUID | None,
    instructions: str | None,
    metadata: dict[str, str] | None,
    model: str | None,
    created_at: datetime,
) -> None:
    session.add(
        StoredResponse(
            id=response_id,
            user_id=user_id,
            conversation_id=conversation_id,
            input_message_id=input_message_id,
            reply_message_id=reply_message_id,
            previous_response_id=previous_response_id,
            instructions=instructions,
            request_metadata=metadata,
            model=model,
            created_at=created_at,
        )
    )
    await session.commit()


async def get_response(
    *, session: AsyncSession, user_id: uuid.UUID, response_id: uuid.UUID
) -> ResponseRow:
    """The user's response; someone else's is reported exactly like a missing one (as is
    one whose reply was removed by an edit, a regenerate or deleting the conversation)."""
    row = (
        await session.execute(
            select(StoredResponse, Message)
            .join(Message, Message.id == StoredResponse.reply_message_id)
            .where(StoredResponse.id == response_id, StoredResponse.user_id == user_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"response resp_{response_id.hex} not found")
    response, reply = row.tuple()
    newest = await session.scalar(
        select(func.max(Message.seq)).where(Message.conversation_id == reply.conversation_id)
    )
    return ResponseRow(response=response, reply=reply, latest=newest == reply.seq)


async def delete_response(
    *, session: AsyncSession, user_id: uuid.UUID, response_id: uuid.UUID
) -> None:
    """Forget the user's response (its turn stays in the conversation); `NotFound` for
    anyone else's."""
    result = await session.execute(
        delete(StoredResponse).where(
            StoredResponse.id == response_id, StoredResponse.user_id == user_id
        )
    )
    await session.commit()
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"response resp_{response_id.hex} not found")
