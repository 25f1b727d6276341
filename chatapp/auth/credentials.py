"""Who a request's credential (access token or API key) belongs to, with a short per-replica
cache that revocations still reach at once.

Without the cache every authenticated request decoded its JWT and ran a user + session SQL
query (an API key: a lookup and a `last_used_at` write). With Redis configured, a replica
remembers for `AUTH_CACHE_TTL_S` who each credential it checked belongs to, and then pays
one Redis GET per request instead: the user's *revocation stamp*.

Every change that must take effect at once on every replica (logout, a reused refresh
token, password change, disabling, deleting, a role change, revoking an API key) writes a
new random stamp for the user after its commit (`Revocations.revoke`). A cached entry is
used only while the user's stamp equals the one read *before* the entry was loaded from
SQL, so a change that commits after that read makes the entry miss. Random stamps (not a
counter) make a stamp that expired and was written again differ from the one cached; a
stamp outlives every entry cached before it was written, then expires.

Without Redis (the embedded single-process defaults) nothing is cached: no process could
tell the others (or the `chatapp admin` command) what changed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.auth.tokens import InvalidToken, decode_access_token, hash_secret

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from chatapp.auth.service import TokenSigner
    from chatapp.config import AuthSettings, RedisSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user checked against the database (or a cache entry that no
    revocation has touched since)."""

    id: uuid.UUID
    email: str
    role: str
    session_id: uuid.UUID | None = None  # None when authenticated by API key


class Revocations:
    """Per-user revocation stamps in Redis; a no-op without Redis (then nothing caches)."""

    def __init__(self, redis: Redis | None, *, key_prefix: str = "", keep_s: float = 0) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}authv:"
        self._keep_s = max(60, int(2 * keep_s) + 1)  # outlives every entry cached before

    @classmethod
    def from_settings(cls, redis: RedisSettings, auth: AuthSettings) -> Revocations:
        if not redis.url:
            return cls(None)
        from redis.asyncio import Redis

        client = Redis.from_url(redis.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return cls(client, key_prefix=redis.key_prefix, keep_s=auth.cache_ttl_s)

    @property
    def shared(self) -> bool:
        """Whether stamps are shared (Redis), i.e. whether caching is safe at all."""
        return self._redis is not None

    async def stamp(self, user_id: uuid.UUID) -> bytes:
        """The user's current stamp (b"" if none); raises on Redis errors."""
        assert self._redis is not None
        value = await self._redis.get(self._prefix + str(user_id))
        if isinstance(value, str):
            return value.encode()
        return value or b""

    async def revoke(self, user_id: uuid.UUID) -> None:
        """Call after committing a change that must end cached credentials of `user_id`."""
        if self._redis is None:
            return
        try:
            await self._redis.set(self._prefix + str(user_id), uuid.uuid4().hex, ex=self._keep_s)
        except Exception:  # the change is committed; caches expire within AUTH_CACHE_TTL_S
            logger.exception("could not publish a revocation for user %s", user_id)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


@dataclass(frozen=True, slots=True)
class _Entry:
    user_id: uuid.UUID
    principal: Principal | None  # None: only the user is known (an API key's first lookup)
    stamp: bytes
    fresh_until: float  # monotonic
    not_after: float  # wall clock: the credential's own expiry


class CredentialCache:
    """Credentials this replica checked recently (LRU, `max_entries`, `ttl_s`)."""

    def __init__(self, revocations: Revocations, *, ttl_s: float, max_entries: int) -> None:
        self.revocations = revocations
        self.enabled = revocations.shared and ttl_s > 0
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @classmethod
    def from_settings(cls, redis: RedisSettings, auth: AuthSettings) -> CredentialCache:
        return cls(
            Revocations.from_settings(redis, auth),
            ttl_s=auth.cache_ttl_s,
            max_entries=auth.cache_max_entries,
        )

    def _get(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fresh_until < time.monotonic() or entry.not_after <= time.time():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def _put(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def current_stamp(self, user_id: uuid.UUID) -> bytes | None:
        try:
            return await self.revocations.stamp(user_id)
        except Exception as exc:  # Redis down: check SQL every time meanwhile
            logger.warning("auth cache bypassed, Redis failed: %r", exc)
            return None

    async def cached(self, key: str) -> tuple[Principal | None, uuid.UUID | None, bytes | None]:
        """(the principal if a valid entry is current, the user id if known, the user's
        stamp read now: what to store after a SQL lookup)."""
        if not self.enabled:
            return None, None, None
        entry = self._get(key)
        if entry is None:
            return None, None, None
        stamp = await self.current_stamp(entry.user_id)
        if stamp is not None and stamp == entry.stamp and entry.principal is not None:
            return entry.principal, entry.user_id, stamp
        return None, entry.user_id, stamp

    def remember(
        self,
        key: str,
        *,
        user_id: uuid.UUID,
        principal: Principal | None,
        stamp: bytes | None,
        not_after: float,
    ) -> None:
        """Store what SQL said, valid while the user's stamp stays `stamp` (read before the
        SQL lookup; None: it was not read, so only the user id is kept)."""
        if not self.enabled:
            return
        self._put(
            key,
            _Entry(
                user_id=user_id,
                principal=principal if stamp is not None else None,
                stamp=stamp or b"",
                fresh_until=time.monotonic() + self._ttl_s,
                not_after=not_after,
            ),
        )


async def principal_for_access_token(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    cache: CredentialCache,
    token: str,
) -> Principal:
    """The user behind a valid access token of a live session; `InvalidToken` if none."""
    from chatapp.auth import service

    principal, known_user, stamp = await cache.cached(token)
    if principal is not None:
        return principal
    claims = decode_access_token(
        token, secret=signer.secret, issuer=signer.issuer, audience=signer.audience
    )
    if known_user is None and cache.enabled:
        stamp = await cache.current_stamp(claims.user_id)
    async with sessionmaker() as session:
        user, session_id = await service.user_for_claims(session=session, claims=claims)
    principal = Principal(id=user.id, email=user.email, role=user.role, session_id=session_id)
    cache.remember(
        token,
        user_id=user.id,
        principal=principal,
        stamp=stamp,
        not_after=claims.expires_at.timestamp(),
    )
    return principal


async def principal_for_api_key(
    *, sessionmaker: async_sessionmaker[AsyncSession], cache: CredentialCache, key: str
) -> Principal:
    """The user behind a live API key; `InvalidToken` if none. The key's user is unknown
    before its first lookup, so a replica caches a key from its second use on (the stamp
    must be read before the SQL lookup)."""
    from chatapp.auth import service

    key_hash = hash_secret(key)
    principal, user_id, stamp = await cache.cached(key_hash)
    if principal is not None:
        return principal
    async with sessionmaker() as session:
        user, api_key = await service.user_for_api_key(session=session, key_hash=key_hash)
    if user_id is not None and user_id != user.id:  # cannot happen: a key has one owner
        raise InvalidToken("the API key is invalid")
    principal = Principal(id=user.id, email=user.email, role=user.role)
    expires = api_key.expires_at.timestamp() if api_key.expires_at else float("inf")
    cache.remember(key_hash, user_id=user.id, principal=principal, stamp=stamp, not_after=expires)
    return principal
