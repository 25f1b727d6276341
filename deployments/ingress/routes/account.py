"""/api/me, /api/keys and /api/admin: the account, its export, its API keys, and user
administration."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from chatapp.auth import service
from chatapp.auth.schemas import (
    AccountDelete,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    PasswordChange,
    UserPage,
    UserPublic,
)
from chatapp.db.models import User
from chatapp.errors import NotFound
from chatapp.export import EXPORT_LIMIT, export_filename, export_user
from deployments.ingress.deps import ClientIp, CurrentAdmin, CurrentUser, SessionDep, StateDep
from deployments.ingress.lockout import password_attempt

router = APIRouter(tags=["account"])


async def _user(session: SessionDep, principal_id: uuid.UUID) -> User:
    user = await session.get(User, principal_id)
    if user is None:
        raise NotFound("account not found")
    return user


@router.get("/api/me")
async def me(user: CurrentUser, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(await _user(session, user.id))


@router.get(
    "/api/me/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Everything stored about the account, as one JSON document "
            "(profile, API keys without their secrets, conversations with every message, "
            "usage events), streamed as it is read.",
            "content": {"application/json": {}},
        }
    },
)
async def export_account(user: CurrentUser, state: StateDep) -> StreamingResponse:
    """Download your data (rate-limited: each export reads the whole account)."""
    await state.limiter.hit(EXPORT_LIMIT, "export", str(user.id), what="exports")
    if state.chat.usage is not None:  # this replica's unwritten usage rows, as /api/usage
        await state.chat.usage.ledger.flush()
    chunks = export_user(sessionmaker=state.sessionmaker, user_id=user.id)
    first = await anext(chunks)  # errors before it are ordinary HTTP errors

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{export_filename()}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/api/me/password", status_code=204)
async def change_password(
    body: PasswordChange,
    user: CurrentUser,
    state: StateDep,
    session: SessionDep,
    client_address: ClientIp,
) -> Response:
    """Set a new password; every other session is logged out. Wrong current passwords
    count towards the account's lockout, like failed logins."""
    account = await _user(session, user.id)
    async with password_attempt(state, account.email, client_address):
        await service.change_password(
            session=session,
            settings=state.settings.auth,
            revocations=state.credentials.revocations,
            user=account,
            current=body.current_password,
            new=body.new_password,
            keep_session=user.session_id,
            revoke_api_keys=body.revoke_api_keys,
        )
    return Response(status_code=204)


@router.delete("/api/me", status_code=204)
async def delete_account(
    body: AccountDelete,
    user: CurrentUser,
    state: StateDep,
    session: SessionDep,
    client_address: ClientIp,
) -> Response:
    """Delete the account with all its conversations, keys and sessions. Wrong passwords
    count towards the account's lockout, like failed logins."""
    account = await _user(session, user.id)
    async with password_attempt(state, account.email, client_address):
        await service.delete_account(
            session=session,
            revocations=state.credentials.revocations,
            user=account,
            password=body.password,
        )
    return Response(status_code=204)


@router.post("/api/keys", status_code=201)
async def create_api_key(
    body: ApiKeyCreate, user: CurrentUser, session: SessionDep
) -> ApiKeyCreated:
    """A new API key for the /v1 API. The key is in this answer only."""
    row, key = await service.create_api_key(
        session=session,
        user=await _user(session, user.id),
        name=body.name,
        expires_in=timedelta(days=body.expires_in_days) if body.expires_in_days else None,
    )
    return ApiKeyCreated(**ApiKeyPublic.model_validate(row).model_dump(), key=key)


@router.get("/api/keys")
async def list_api_keys(user: CurrentUser, session: SessionDep) -> list[ApiKeyPublic]:
    rows = await service.list_api_keys(session=session, user=await _user(session, user.id))
    return [ApiKeyPublic.model_validate(r) for r in rows]


@router.delete("/api/keys/{key_id}", status_code=204)
async def revoke_api_key(
    key_id: uuid.UUID, user: CurrentUser, state: StateDep, session: SessionDep
) -> Response:
    await service.revoke_api_key(
        session=session,
        revocations=state.credentials.revocations,
        user=await _user(session, user.id),
        key_id=key_id,
    )
    return Response(status_code=204)


@router.get("/api/admin/users", tags=["admin"])
async def list_users(
    admin: CurrentAdmin,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> UserPage:
    rows, more = await service.list_users(session=session, limit=limit, offset=offset)
    return UserPage(
        items=[UserPublic.model_validate(r) for r in rows],
        next_offset=offset + limit if more else None,
    )


@router.post("/api/admin/users/{user_id}/disable", tags=["admin"])
async def disable_user(
    user_id: uuid.UUID, admin: CurrentAdmin, state: StateDep, session: SessionDep
) -> UserPublic:
    """Disable an account: its tokens and API keys stop working at once."""
    user = await service.set_user_active(
        session=session,
        revocations=state.credentials.revocations,
        actor=await _user(session, admin.id),
        user_id=user_id,
        active=False,
    )
    return UserPublic.model_validate(user)


@router.post("/api/admin/users/{user_id}/enable", tags=["admin"])
async def enable_user(
    user_id: uuid.UUID, admin: CurrentAdmin, state: StateDep, session: SessionDep
) -> UserPublic:
    user = await service.set_user_active(
        session=session,
        revocations=state.credentials.revocations,
        actor=await _user(session, admin.id),
        user_id=user_id,
        active=True,
    )
    return UserPublic.model_validate(user)
