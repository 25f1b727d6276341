"""The per-replica credential cache (issue 11) on the real databases and Redis: a cached
access token or API key costs no SQL, and every revocation made on another replica (logout,
disabling, password change, key revocation, a reused refresh token) ends it at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event

from chatapp.auth import service
from chatapp.auth.credentials import (
    CredentialCache,
    Principal,
    Revocations,
    principal_for_access_token,
    principal_for_api_key,
)
from chatapp.auth.service import TokenSigner
from chatapp.auth.tokens import InvalidToken
from chatapp.config import AuthSettings
from tests.conftest import REDIS_URL

PASSWORD = "correct horse battery staple"
SIGNER = TokenSigner(
    secret="test-secret-" + "x" * 32,
    issuer="chatapp",
    audience="chatapp-api",
    access_ttl=timedelta(minutes=15),
    refresh_ttl=timedelta(days=1),
)


@pytest.fixture
async def replicas() -> AsyncIterator[Callable[[], CredentialCache]]:
    """Makes the credential caches of ingress replicas sharing one Redis."""
    prefix = f"authcache-test-{uuid.uuid4().hex[:8]}:"
    made: list[CredentialCache] = []

    def replica() -> CredentialCache:
        revocations = Revocations(Redis.from_url(REDIS_URL), key_prefix=prefix, keep_s=60)
        made.append(CredentialCache(revocations, ttl_s=60, max_entries=1000))
        return made[-1]

    yield replica
    for cache in made:
        await cache.revocations.aclose()


class Queries:
    """SQL statements run on an engine, counted by SQLAlchemy's cursor event."""

    def __init__(self, sessionmaker: Any) -> None:
        self.statements: list[str] = []
        engine = sessionmaker.kw["bind"].sync_engine
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)

    def count(self) -> int:
        n = len(self.statements)
        self.statements.clear()
        return n


async def account(sessionmaker: Any) -> tuple[Any, str]:
    """A new user and a fresh access token of theirs."""
    async with sessionmaker() as session:
        user = await service.register_user(
            session=session,
            settings=AuthSettings(),
            email=f"c-{uuid.uuid4().hex[:10]}@example.com",
            password=PASSWORD,
            display_name="",
        )
        tokens = await service.start_session(session=session, signer=SIGNER, user=user)
    return user, tokens.access_token


async def who(sessionmaker: Any, cache: CredentialCache, token: str) -> Principal:
    return await principal_for_access_token(
        sessionmaker=sessionmaker, signer=SIGNER, cache=cache, token=token
    )


async def test_a_cached_access_token_or_api_key_costs_no_sql(
    sessionmaker: Any, replicas: Callable[[], CredentialCache]
) -> None:
    cache = replicas()
    user, token = await account(sessionmaker)
    queries = Queries(sessionmaker)
    assert (await who(sessionmaker, cache, token)).id == user.id
    assert queries.count() >= 1  # the user + session lookup
    for _ in range(3):
        assert (await who(sessionmaker, cache, token)).id == user.id
    assert queries.count() == 0

    async with sessionmaker() as session:
        _, key = await service.create_api_key(session=session, user=user, name="k")
    queries.count()
    for _ in range(2):  # the first use learns the owner, the second reads the stamp first
        assert (await principal_for_api_key(sessionmaker=sessionmaker, cache=cache, key=key)).id
    assert queries.count() >= 2
    assert (await principal_for_api_key(sessionmaker=sessionmaker, cache=cache, key=key)).id
    assert queries.count() == 0


async def test_without_redis_nothing_is_cached(sessionmaker: Any) -> None:
    cache = CredentialCache(Revocations(None), ttl_s=60, max_entries=1000)
    _, token = await account(sessionmaker)
    queries = Queries(sessionmaker)
    for _ in range(2):
        await who(sessionmaker, cache, token)
        assert queries.count() >= 1


async def test_api_key_last_use_is_written_at_most_once_a_minute(sessionmaker: Any) -> None:
    cache = CredentialCache(Revocations(None), ttl_s=0, max_entries=1000)  # SQL every time
    user, _ = await account(sessionmaker)
    async with sessionmaker() as session:
        _, key = await service.create_api_key(session=session, user=user, name="k")
    queries = Queries(sessionmaker)
    for _ in range(3):
        await principal_for_api_key(sessionmaker=sessionmaker, cache=cache, key=key)
    updates = [s for s in queries.statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1, updates
    async with sessionmaker() as session:
        (listed,) = await service.list_api_keys(session=session, user=user)
        assert listed.last_used_at is not None


async def test_logout_on_another_replica_ends_a_cached_token_at_once(
    sessionmaker: Any, replicas: Callable[[], CredentialCache]
) -> None:
    here, there = replicas(), replicas()
    _, token = await account(sessionmaker)
    await who(sessionmaker, here, token)
    await who(sessionmaker, here, token)  # cached now
    async with sessionmaker() as session:
        _, session_id = await service.user_for_access_token(
            session=session, signer=SIGNER, token=token
        )
        await service.revoke_session(
            session=session, revocations=there.revocations, session_id=session_id
        )
    with pytest.raises(InvalidToken):
        await who(sessionmaker, here, token)


async def test_disabling_a_user_elsewhere_refuses_their_cached_token_and_key(
    sessionmaker: Any, replicas: Callable[[], CredentialCache]
) -> None:
    here, there = replicas(), replicas()
    user, token = await account(sessionmaker)
    admin, _ = await account(sessionmaker)
    admin.role = "admin"
    async with sessionmaker() as session:
        _, key = await service.create_api_key(session=session, user=user, name="k")
    for _ in range(3):
        await who(sessionmaker, here, token)
        await principal_for_api_key(sessionmaker=sessionmaker, cache=here, key=key)
    async with sessionmaker() as session:
        await service.set_user_active(
            session=session,
            revocations=there.revocations,
            actor=admin,
            user_id=user.id,
            active=False,
        )
    with pytest.raises(InvalidToken):
        await who(sessionmaker, here, token)
    with pytest.raises(InvalidToken):
        await principal_for_api_key(sessionmaker=sessionmaker, cache=here, key=key)


async def test_a_key_revoked_elsewhere_is_refused_at_once(
    sessionmaker: Any, replicas: Callable[[], CredentialCache]
) -> None:
    here, there = replicas(), replicas()
    user, _ = await account(sessionmaker)
    async with sessionmaker() as session:
        row, key = await service.create_api_key(session=session, user=user, name="k")
    for _ in range(3):
        await principal_for_api_key(sessionmaker=sessionmaker, cache=here, key=key)
    async with sessionmaker() as session:
        await service.revoke_api_key(
            session=session, revocations=there.revocations, user=user, key_id=row.id
        )
    with pytest.raises(InvalidToken):
        await principal_for_api_key(sessionmaker=sessionmaker, cache=here, key=key)


async def test_a_password_change_elsewhere_ends_other_cached_sessions(
    sessionmaker: Any, replicas: Callable[[], CredentialCache]
) -> None:
    here, there = replicas(), replicas()
    user, token = await account(sessionmaker)
    for _ in range(2):
        await who(sessionmaker, here, token)
    async with sessionmaker() as session:
        await service.change_password(
            session=session,
            settings=AuthSettings(),
            revocations=there.revocations,
            user=await session.get(type(user), user.id),
            current=PASSWORD,
            new="another long passphrase",
            keep_session=None,
        )
    with pytest.raises(InvalidToken):
        await who(sessionmaker, here, token)
