"""Account operations: keyword-only functions over an AsyncSession and `AuthSettings`.

Sessions: a login creates an `AuthSession`; its access tokens carry the session id, its
refresh tokens rotate on every use. Presenting a refresh token that was already used
revokes the whole session (someone copied it), and so does logout.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.auth.credentials import Revocations
from chatapp.auth.passwords import (
    check_password_strength,
    hash_password_off_loop,
    verify_password_off_loop,
)
from chatapp.auth.schemas import TokenPair
from chatapp.auth.tokens import (
    API_KEY_PREFIX,
    AccessClaims,
    InvalidToken,
    create_access_token,
    decode_access_token,
    hash_secret,
    new_secret,
)
from chatapp.config import AuthSettings
from chatapp.db.models import ApiKey, AuthSession, RefreshToken, User, utcnow
from chatapp.errors import Conflict, InvalidRequest, NotFound, PermissionDenied

Role = Literal["user", "admin"]


@dataclass(frozen=True, slots=True)
class TokenSigner:
    """What signs and checks access tokens."""

    secret: str
    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: AuthSettings, *, secret: str) -> TokenSigner:
        return cls(
            secret=secret,
            issuer=settings.issuer,
            audience=settings.audience,
            access_ttl=timedelta(seconds=settings.access_token_ttl_s),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s),
        )


def normalize_email(email: str) -> str:
    """The one form an email is stored, looked up and compared in: Unicode NFKC (so
    fullwidth or other compatibility lookalikes are the address they look like, and a
    decomposed é is the composed one), lower case, no surrounding spaces."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).strip().lower())


def is_listed_admin(email: str, settings: AuthSettings) -> bool:
    """Whether `email` is in AUTH_ADMIN_EMAILS. Being listed makes an admin only once an
    OIDC provider has verified the address (`identities`); ops grant the role to
    anyone else with `set_role` (`chatapp admin grant`)."""
    return normalize_email(email) in {normalize_email(e) for e in settings.admin_emails}


async def register_user(
    *, session: AsyncSession, settings: AuthSettings, email: str, password: str, display_name: str
) -> User:
    if not settings.registration_open:
        raise PermissionDenied("registration is closed on this server; ask an admin")
    email = normalize_email(email)
    check_password_strength(password, email=email, min_length=settings.password_min_length)
    user = User(
        email=email,
        display_name=display_name.strip() or email.split("@", 1)[0],
        password_hash=await hash_password_off_loop(password),
        # Never admin, even with a listed email: nobody has proven they own the address.
        role="user",
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict("an account with this email already exists; log in instead") from exc
    return user


async def authenticate(*, session: AsyncSession, email: str, password: str) -> User | None:
    """The active user with this email and password, or None (in constant-ish time)."""
    user = await session.scalar(select(User).where(User.email == normalize_email(email)))
    ok = await verify_password_off_loop(password, user.password_hash if user else None)
    if user is None or not ok or not user.is_active:
        return None
    return user


async def _issue(
    *, session: AsyncSession, signer: TokenSigner, user_id: uuid.UUID, session_id: uuid.UUID
) -> TokenPair:
    refresh = new_secret()
    session.add(
        RefreshToken(
            session_id=session_id,
            token_hash=hash_secret(refresh),
            expires_at=utcnow() + signer.refresh_ttl,
        )
    )
    await session.commit()
    access = create_access_token(
        user_id,
        session_id=session_id,
        secret=signer.secret,
        ttl=signer.access_ttl,
        issuer=signer.issuer,
        audience=signer.audience,
    )
    return TokenPair(
        access_token=access,
        expires_in=int(signer.access_ttl.total_seconds()),
        refresh_token=refresh,
    )


async def start_session(*, session: AsyncSession, signer: TokenSigner, user: User) -> TokenPair:
    auth_session = AuthSession(user_id=user.id)
    session.add(auth_session)
    await session.flush()
    return await _issue(session=session, signer=signer, user_id=user.id, session_id=auth_session.id)


def _access_only(*, signer: TokenSigner, user_id: uuid.UUID, session_id: uuid.UUID) -> TokenPair:
    access = create_access_token(
        user_id,
        session_id=session_id,
        secret=signer.secret,
        ttl=signer.access_ttl,
        issuer=signer.issuer,
        audience=signer.audience,
    )
    return TokenPair(access_token=access, expires_in=int(signer.access_ttl.total_seconds()))


async def refresh_session(
    *,
    session: AsyncSession,
    signer: TokenSigner,
    revocations: Revocations,
    refresh_token: str,
    grace: timedelta = timedelta(0),
) -> TokenPair:
    """Rotate: the presented token is spent and a new pair issued. A token presented again
    within `grace` of its use (two browser tabs refreshing at once with one cookie) gets a
    new access token of the same session and no refresh token (`refresh_token` None): the
    refresh that spent it holds the rotated one. Later reuse revokes the session (someone
    copied the token)."""
    now = utcnow()
    row = await session.scalar(
        select(RefreshToken)
        .where(RefreshToken.token_hash == hash_secret(refresh_token))
        .with_for_update()
    )
    if row is None:
        raise InvalidToken("the refresh token is invalid; log in again")
    auth_session = await session.get(AuthSession, row.session_id)
    user = await session.get(User, auth_session.user_id) if auth_session else None
    if auth_session is None or user is None or auth_session.revoked_at is not None:
        raise InvalidToken("this session has ended; log in again")
    if row.used_at is not None:
        if now - row.used_at <= grace and row.expires_at > now and user.is_active:
            return _access_only(signer=signer, user_id=user.id, session_id=auth_session.id)
        auth_session.revoked_at = now
        await session.commit()
        await revocations.revoke(user.id)
        raise InvalidToken("this refresh token was already used; the session is revoked")
    if row.expires_at <= now:
        raise InvalidToken("the refresh token has expired; log in again")
    if not user.is_active:
        raise InvalidToken("this account is disabled")
    spent = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent refresh won
        if grace > timedelta(0):
            await session.rollback()
            return _access_only(signer=signer, user_id=user.id, session_id=auth_session.id)
        auth_session.revoked_at = now
        await session.commit()
        await revocations.revoke(user.id)
        raise InvalidToken("this refresh token was already used; the session is revoked")
    return await _issue(session=session, signer=signer, user_id=user.id, session_id=auth_session.id)


async def revoke_session_of(
    *, session: AsyncSession, revocations: Revocations, refresh_token: str
) -> None:
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == hash_secret(refresh_token))
    )
    if row is not None:
        await revoke_session(session=session, revocations=revocations, session_id=row.session_id)


async def revoke_session(
    *, session: AsyncSession, revocations: Revocations, session_id: uuid.UUID
) -> None:
    user_id = await session.scalar(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(AuthSession.user_id)
    )
    await session.commit()
    if user_id is not None:
        await revocations.revoke(user_id)


async def user_for_claims(*, session: AsyncSession, claims: AccessClaims) -> tuple[User, uuid.UUID]:
    """The user behind verified access-token claims, if their session is live."""
    row = (
        await session.execute(
            select(User, AuthSession.revoked_at)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(User.id == claims.user_id, AuthSession.id == claims.session_id)
        )
    ).first()
    if row is None:
        raise InvalidToken("this account or session no longer exists; log in again")
    user, revoked_at = row
    if revoked_at is not None:
        raise InvalidToken("this session has ended; log in again")
    if not user.is_active:
        raise InvalidToken("this account is disabled")
    return user, claims.session_id


async def user_for_access_token(
    *, session: AsyncSession, signer: TokenSigner, token: str
) -> tuple[User, uuid.UUID]:
    """The user behind a valid access token of a live session, and the session id."""
    claims = decode_access_token(
        token, secret=signer.secret, issuer=signer.issuer, audience=signer.audience
    )
    return await user_for_claims(session=session, claims=claims)


# `last_used_at` of an API key is written at most this often (not on every request).
LAST_USED_PRECISION = timedelta(minutes=1)


async def user_for_api_key(*, session: AsyncSession, key_hash: str) -> tuple[User, ApiKey]:
    """The owner of the live API key with this hash (`hash_secret(key)`)."""
    row = (
        await session.execute(
            select(User, ApiKey)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == key_hash)
        )
    ).first()
    if row is None:
        raise InvalidToken("the API key is invalid")
    user, api_key = row
    if api_key.revoked_at is not None:
        raise InvalidToken("the API key was revoked")
    now = utcnow()
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise InvalidToken("the API key expired; create a new one")
    if not user.is_active:
        raise InvalidToken("this account is disabled")
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_PRECISION:
        api_key.last_used_at = now
        await session.commit()
    return user, api_key


async def change_password(
    *,
    session: AsyncSession,
    settings: AuthSettings,
    revocations: Revocations,
    user: User,
    current: str,
    new: str,
    keep_session: uuid.UUID | None,
    revoke_api_keys: bool = True,
) -> None:
    """Set a new password and end every other session (and, unless told not to, revoke
    every API key)."""
    # Rules first: a weak new password costs no password check (and no lockout count).
    check_password_strength(new, email=user.email, min_length=settings.password_min_length)
    if not await verify_password_off_loop(current, user.password_hash):
        raise PermissionDenied("the current password is wrong")
    user.password_hash = await hash_password_off_loop(new)
    await session.execute(
        update(AuthSession)
        .where(
            AuthSession.user_id == user.id,
            AuthSession.revoked_at.is_(None),
            AuthSession.id != (keep_session or uuid.UUID(int=0)),
        )
        .values(revoked_at=utcnow())
    )
    if revoke_api_keys:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    await session.commit()
    await revocations.revoke(user.id)


async def check_password(*, user: User, password: str | None, what: str) -> None:
    """`PermissionDenied` unless `password` is the account's (`what`: what was refused)."""
    if not await verify_password_off_loop(password or "", user.password_hash):
        raise PermissionDenied(f"the password is wrong; {what}")


async def delete_account(
    *, session: AsyncSession, revocations: Revocations, user: User, password: str | None
) -> None:
    """Delete the user and, by cascade, their conversations, keys and sessions."""
    if user.password_hash is not None:
        await check_password(user=user, password=password, what="the account was not deleted")
    user_id = user.id
    await session.delete(user)
    await session.commit()
    await revocations.revoke(user_id)


async def create_api_key(
    *, session: AsyncSession, user: User, name: str, expires_in: timedelta | None = None
) -> tuple[ApiKey, str]:
    """A new API key (shown once; only its hash is stored), expiring after `expires_in`."""
    key = new_secret(API_KEY_PREFIX)
    row = ApiKey(
        user_id=user.id,
        name=name.strip(),
        prefix=key[:12],
        key_hash=hash_secret(key),
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )
    session.add(row)
    await session.commit()
    return row, key


async def list_api_keys(*, session: AsyncSession, user: User) -> list[ApiKey]:
    rows = await session.scalars(
        select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc())
    )
    return list(rows)


async def revoke_api_key(
    *, session: AsyncSession, revocations: Revocations, user: User, key_id: uuid.UUID
) -> None:
    row = await session.get(ApiKey, key_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"API key {key_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await session.commit()
        await revocations.revoke(user.id)


async def list_users(*, session: AsyncSession, limit: int, offset: int) -> tuple[list[User], bool]:
    rows = list(
        await session.scalars(
            select(User).order_by(User.created_at, User.id).limit(limit + 1).offset(offset)
        )
    )
    return rows[:limit], len(rows) > limit


async def set_role(
    *, session: AsyncSession, revocations: Revocations, email: str, role: Role
) -> User:
    """Make the account with `email` an admin or a plain user (the ops command)."""
    email = normalize_email(email)
    user = await session.scalar(select(User).where(User.email == email))
    if user is None:
        raise NotFound(
            f"no account with the email {email}: they must register or log in first, "
            "then run this again"
        )
    user.role = role
    await session.commit()
    await revocations.revoke(user.id)
    return user


async def list_admins(*, session: AsyncSession) -> list[User]:
    return list(
        await session.scalars(select(User).where(User.role == "admin").order_by(User.email))
    )


async def set_user_active(
    *,
    session: AsyncSession,
    revocations: Revocations,
    actor: User,
    user_id: uuid.UUID,
    active: bool,
) -> User:
    if actor.role != "admin":
        raise PermissionDenied("only admins can do this")
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    if user.id == actor.id and not active:
        raise InvalidRequest("admins cannot disable their own account")
    user.is_active = active
    if not active:  # enabling it again later must not revive these sessions
        await session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    await session.commit()
    await revocations.revoke(user.id)
    return user
