"""Stored running summaries of long conversations: the value that crosses the ports and
the API (`SummaryPublic`), and keyword-only functions over an AsyncSession.

Versions are kept; the newest is the one used. A new version is accepted only when it
covers more than the newest one (two writers racing, or one that started before an edit,
cannot replace a newer summary with an older one). An edit or regenerate at or before a
summary's `covers_seq` deletes that version: it describes messages that are gone.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.db.models import ConversationSummary, utcnow


class SummaryPublic(BaseModel):
    """The running summary standing in for a conversation's older messages."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    content: str = Field(description="The summary, as the model wrote it.")
    version: int = Field(description="1 for the first summary, +1 each time it is rewritten.")
    covers_seq: int = Field(
        description="Messages with seq up to this one are summarised: the prompt holds the "
        "summary instead of them."
    )
    model: str | None = Field(None, description="The model that wrote it.")
    created_at: datetime


async def newest_summary(
    *, session: AsyncSession, conversation_id: uuid.UUID
) -> SummaryPublic | None:
    row = await session.scalar(
        select(ConversationSummary)
        .where(ConversationSummary.conversation_id == conversation_id)
        .order_by(ConversationSummary.version.desc())
        .limit(1)
    )
    return None if row is None else SummaryPublic.model_validate(row)


async def add_summary(
    *,
    session: AsyncSession,
    conversation_id: uuid.UUID,
    content: str,
    covers_seq: int,
    model: str | None,
) -> SummaryPublic | None:
    """Store a new version; None when the newest already covers as much (it stays)."""
    newest = await newest_summary(session=session, conversation_id=conversation_id)
    if newest is not None and newest.covers_seq >= covers_seq:
        return None
    version = (
        await session.scalar(
            select(func.max(ConversationSummary.version)).where(
                ConversationSummary.conversation_id == conversation_id
            )
        )
        or 0
    ) + 1
    row = ConversationSummary(
        conversation_id=conversation_id,
        version=version,
        content=content,
        covers_seq=covers_seq,
        model=model,
        created_at=utcnow(),
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:  # another writer took this version (or the conversation went)
        await session.rollback()
        return None
    return SummaryPublic.model_validate(row)


async def invalidate_from(
    *, session: AsyncSession, conversation_id: uuid.UUID, seq: int
) -> SummaryPublic | None:
    """Delete the versions covering message `seq` or later (not committed: part of the
    caller's rewrite); returns the newest version left."""
    await session.execute(
        delete(ConversationSummary).where(
            ConversationSummary.conversation_id == conversation_id,
            ConversationSummary.covers_seq >= seq,
        )
    )
    return await newest_summary(session=session, conversation_id=conversation_id)
