"""Share links: read-only snapshots of a conversation, readable without logging in."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from chatapp.chat.sharing import (
    ShareCreated,
    SharedConversation,
    SharePublic,
    create_share,
    list_shares,
    revoke_share,
    shared_conversation,
)
from deployments.ingress.deps import ClientIp, CurrentUser, SessionDep, StateDep

router = APIRouter(tags=["shares"])


@router.post("/api/conversations/{conversation_id}/shares", status_code=201)
async def share_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> ShareCreated:
    """A read-only link to the conversation as it is now (later messages are not in it).
    The token is in this answer only."""
    return await create_share(session=session, user_id=user.id, conversation_id=conversation_id)


@router.get("/api/conversations/{conversation_id}/shares")
async def conversation_shares(
    conversation_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> list[SharePublic]:
    return await list_shares(session=session, user_id=user.id, conversation_id=conversation_id)


@router.delete("/api/shares/{share_id}", status_code=204)
async def delete_share(share_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Revoke a link: its token answers 404 from now on."""
    await revoke_share(session=session, user_id=user.id, share_id=share_id)
    return Response(status_code=204)


@router.get("/api/shares/{token}")
async def read_share(
    token: str, response: Response, state: StateDep, session: SessionDep, client: ClientIp
) -> SharedConversation:
    """A shared conversation's snapshot (no login; rate-limited per client address by
    CHAT_SHARE_VIEW_LIMIT)."""
    await state.limiter.hit(
        state.settings.chat.share_view_limit, "share-views", client, what="share views"
    )
    shared = await shared_conversation(session=session, token=token)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response.headers["X-Robots-Tag"] = "noindex"
    return shared
