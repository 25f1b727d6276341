"""Read-only share links: a snapshot of a conversation as it is when the link is made.

The link's token is random (`chs_` + 32 random bytes) and stored only as its SHA-256,
like API keys (`chatapp.auth.tokens`); the owner sees it once. Whoever holds it reads the
snapshot's title and messages (role, content, time, model, sources) and nothing else:
no ids of the owner, the conversation or its messages, no usage, no later messages.
Revoking deletes the snapshot, so the token is unknown at once; deleting the
conversation or the account deletes its snapshots with it (foreign keys).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.auth.tokens import hash_secret, new_secret
from chatapp.chat import repository
from chatapp.db.models import ConversationShare, utcnow
from chatapp.errors import NotFound
from chatapp.export import PAGE_SIZE, messages_after
from chatapp.llm.base import Role
from chatapp.rag.schemas import SourcePublic

SHARE_PREFIX = "chs_"


class SharePublic(BaseModel):
    """A share link as its owner lists it (the token itself is not kept)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    conversation_id: uuid.UUID
    prefix: str = Field(description="The token's first characters, to tell links apart.")
    title: str
    message_count: int = Field(description="Messages in the snapshot.")
    created_at: datetime


class ShareCreated(SharePublic):
    token: str = Field(description="The link's secret: shown in this answer only.")
    path: str = Field(description="Where the snapshot is read: GET this path, no login.")


class SharedMessage(BaseModel):
    role: Role
    content: str
    created_at: datetime
    model: str | None = None
    sources: list[SourcePublic] = Field(default_factory=list)


class SharedConversation(BaseModel):
    """What a share link shows: the snapshot, nothing else of its owner."""

    title: str
    shared_at: datetime
    messages: list[SharedMessage]


def _public(share: ConversationShare) -> SharePublic:
    return SharePublic(
        id=share.id,
        conversation_id=share.conversation_id,
        prefix=share.prefix,
        title=share.title,
        message_count=len(share.messages),
        created_at=share.created_at,
    )


async def create_share(
    *, session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> ShareCreated:
    """A new link to the user's conversation as it is now; `NotFound` for anyone else's."""
    conversation = await repository.get_conversation(
        session=session, user_id=user_id, conversation_id=conversation_id
    )
    snapshot: list[dict[str, Any]] = []
    seq = -1
    while rows := await messages_after(session, conversation_id, seq, PAGE_SIZE):
        snapshot.extend(
            SharedMessage(
                role=row.role,
                content=row.content,
                created_at=row.created_at,
                model=row.model,
                sources=[SourcePublic.model_validate(s) for s in row.sources or []],
            ).model_dump(mode="json")
            for row in rows
        )
        seq = rows[-1].seq
        if len(rows) < PAGE_SIZE:
            break
    token = new_secret(SHARE_PREFIX)
    share = ConversationShare(
        user_id=user_id,
        conversation_id=conversation_id,
        token_hash=hash_secret(token),
        prefix=token[:12],
        title=conversation.title,
        messages=snapshot,
        created_at=utcnow(),
    )
    session.add(share)
    await session.commit()
    return ShareCreated(**_public(share).model_dump(), token=token, path=f"/api/shares/{token}")


async def list_shares(
    *, session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[SharePublic]:
    """The links to the user's conversation, newest first."""
    await repository.get_conversation(
        session=session, user_id=user_id, conversation_id=conversation_id
    )
    rows = await session.scalars(
        select(ConversationShare)
        .where(ConversationShare.conversation_id == conversation_id)
        .order_by(ConversationShare.created_at.desc(), ConversationShare.id)
    )
    return [_public(row) for row in rows]


async def revoke_share(*, session: AsyncSession, user_id: uuid.UUID, share_id: uuid.UUID) -> None:
    """Delete the user's link: its token is unknown from now on."""
    share = await session.get(ConversationShare, share_id)
    if share is None or share.user_id != user_id:
        raise NotFound(f"share {share_id} not found")
    await session.delete(share)
    await session.commit()


async def shared_conversation(*, session: AsyncSession, token: str) -> SharedConversation:
    """The snapshot behind `token`; `NotFound` when there is none (never made, revoked,
    or its conversation deleted)."""
    share = await session.scalar(
        select(ConversationShare).where(ConversationShare.token_hash == hash_secret(token))
    )
    if share is None:
        raise NotFound("this share link does not exist or was revoked")
    return SharedConversation(
        title=share.title,
        shared_at=share.created_at,
        messages=[SharedMessage.model_validate(m) for m in share.messages],
    )
