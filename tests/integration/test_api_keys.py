"""API keys (issue 9, item 8) on the real databases: an optional expiry, the last use
listed, revoked with a password change unless the user keeps them, and a disabled account
whose old sessions stay ended when it is enabled again."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from chatapp.auth import service
from chatapp.auth.credentials import CredentialCache, Revocations, principal_for_api_key
from chatapp.auth.tokens import InvalidToken
from chatapp.config import AuthSettings
from chatapp.db.models import ApiKey, User, utcnow
from tests.integration.test_auth_cache import PASSWORD, SIGNER, account, who

NO_CACHE = CredentialCache(Revocations(None), ttl_s=0, max_entries=1)


async def use(sessionmaker: Any, key: str) -> uuid.UUID:
    principal = await principal_for_api_key(sessionmaker=sessionmaker, cache=NO_CACHE, key=key)
    return principal.id


async def test_a_key_with_an_expiry_stops_working_then(sessionmaker: Any) -> None:
    user, _ = await account(sessionmaker)
    async with sessionmaker() as session:
        row, key = await service.create_api_key(
            session=session, user=user, name="ci", expires_in=timedelta(days=30)
        )
        forever, forever_key = await service.create_api_key(session=session, user=user, name="x")
    assert row.expires_at is not None and forever.expires_at is None
    assert row.expires_at - utcnow() > timedelta(days=29)
    assert await use(sessionmaker, key) == user.id
    async with sessionmaker() as session:  # a month later
        await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(expires_at=utcnow()))
        await session.commit()
    with pytest.raises(InvalidToken, match="expired"):
        await use(sessionmaker, key)
    assert await use(sessionmaker, forever_key) == user.id
    async with sessionmaker() as session:
        listed = {k.name: k for k in await service.list_api_keys(session=session, user=user)}
    assert listed["x"].last_used_at is not None and listed["ci"].expires_at is not None


async def test_a_password_change_revokes_the_keys_unless_the_user_keeps_them(
    sessionmaker: Any,
) -> None:
    user, _ = await account(sessionmaker)
    async with sessionmaker() as session:
        _, key = await service.create_api_key(session=session, user=user, name="k")
    for keep, new in ((True, "another long passphrase"), (False, "a third long passphrase")):
        async with sessionmaker() as session:
            await service.change_password(
                session=session,
                settings=AuthSettings(),
                revocations=Revocations(None),
                user=await session.get(User, user.id),
                current=PASSWORD if keep else "another long passphrase",
                new=new,
                keep_session=None,
                revoke_api_keys=not keep,
            )
        if keep:
            assert await use(sessionmaker, key) == user.id
    with pytest.raises(InvalidToken, match="revoked"):
        await use(sessionmaker, key)


async def test_enabling_a_disabled_account_does_not_revive_its_sessions(sessionmaker: Any) -> None:
    user, token = await account(sessionmaker)
    admin, _ = await account(sessionmaker)
    admin.role = "admin"
    for active in (False, True):
        async with sessionmaker() as session:
            await service.set_user_active(
                session=session,
                revocations=Revocations(None),
                actor=admin,
                user_id=user.id,
                active=active,
            )
    with pytest.raises(InvalidToken, match="ended"):
        await who(sessionmaker, NO_CACHE, token)
    async with sessionmaker() as session:  # a new login works again
        fresh = await service.start_session(
            session=session, signer=SIGNER, user=await session.get(User, user.id)
        )
    assert (await who(sessionmaker, NO_CACHE, fresh.access_token)).id == user.id
