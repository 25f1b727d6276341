"""Accounts behind external (OIDC) identities, and the rules for linking them.

An identity (provider, subject) belongs to one account. The first login with an identity
links it by email only to an account whose email is verified, or creates the account:
an account made with a password has an address nobody proved, and linking it would hand
the provider's user an account someone else may hold the password of (or the reverse:
whoever registered the address first would read the real owner's chats). Such an
account links an identity only when its owner asks, logged in and with the password
(`link_identity`).

Every login through a provider that verified the account's own address marks the address
verified; a verified address listed in AUTH_ADMIN_EMAILS makes the account an admin.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.auth.service import is_listed_admin, normalize_email
from chatapp.config import AuthSettings
from chatapp.db.models import AuthSession, OidcIdentity, User, utcnow
from chatapp.errors import Conflict, PermissionDenied

# How recent a password-less account's login must be to link another identity to it.
FRESH_LOGIN = timedelta(minutes=10)


def _verified_email(email: str | None, email_verified: bool) -> str | None:
    return normalize_email(email) if email and email_verified else None


def _note_verified_email(user: User, verified: str | None, settings: AuthSettings) -> None:
    if verified is not None and verified == user.email:
        user.email_verified = True
    if user.email_verified and is_listed_admin(user.email, settings):
        user.role = "admin"


async def _commit(session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError as exc:  # the same identity or email, created concurrently
        await session.rollback()
        raise Conflict("another login for this account was finishing; try again") from exc


async def user_for_oidc_login(
    *,
    session: AsyncSession,
    settings: AuthSettings,
    provider: str,
    subject: str,
    email: str | None,
    email_verified: bool,
    display_name: str,
) -> User:
    """The account linked to this provider identity. A first login links to the account
    with the same email if that account's email is verified, creates one if there is
    none, and refuses (`Conflict`) if there is one whose email nobody verified."""
    verified = _verified_email(email, email_verified)
    user = await session.scalar(
        select(User)
        .join(OidcIdentity, OidcIdentity.user_id == User.id)
        .where(OidcIdentity.provider == provider, OidcIdentity.subject == subject)
    )
    if user is None:
        if verified is None:
            raise PermissionDenied(
                f"{provider} did not confirm a verified email address, so the login cannot be "
                "linked to an account"
            )
        user = await session.scalar(select(User).where(User.email == verified))
        if user is None:
            user = User(
                email=verified,
                display_name=display_name or verified.split("@", 1)[0],
                email_verified=True,
            )
            session.add(user)
            await session.flush()
        elif not user.email_verified:
            raise Conflict(
                f"an account with the email {verified} already exists, but its address was "
                f"never verified, so this {provider} login is not linked to it. If it is your "
                f"account, log in with its password and link {provider} from your account "
                f"(POST /api/auth/oidc/{provider}/link); otherwise sign in to {provider} with "
                "another email address."
            )
        session.add(OidcIdentity(user_id=user.id, provider=provider, subject=subject))
    if not user.is_active:
        await session.rollback()
        raise PermissionDenied("this account is disabled")
    _note_verified_email(user, verified, settings)
    await _commit(session)
    return user


async def check_fresh_login(*, session: AsyncSession, session_id: uuid.UUID | None) -> None:
    """`PermissionDenied` unless the login `session_id` started less than FRESH_LOGIN ago
    (what an account without a password shows instead of its password)."""
    auth_session = await session.get(AuthSession, session_id) if session_id else None
    if auth_session is None or utcnow() - auth_session.created_at > FRESH_LOGIN:
        minutes = int(FRESH_LOGIN.total_seconds() // 60)
        raise PermissionDenied(f"log in again, then link within {minutes} minutes")


async def link_identity(
    *,
    session: AsyncSession,
    settings: AuthSettings,
    user_id: uuid.UUID,
    provider: str,
    subject: str,
    email: str | None,
    email_verified: bool,
) -> User:
    """Link a provider identity to the account that asked for it (logged in, password
    checked when the link started). The provider's email need not be the account's."""
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise PermissionDenied("this account no longer exists or is disabled")
    owner = await session.scalar(
        select(OidcIdentity.user_id).where(
            OidcIdentity.provider == provider, OidcIdentity.subject == subject
        )
    )
    if owner is not None and owner != user.id:
        raise Conflict(
            f"this {provider} identity is already linked to another account; log in with "
            f"{provider} to use that account, or link another {provider} identity"
        )
    if owner is None:
        session.add(OidcIdentity(user_id=user.id, provider=provider, subject=subject))
    _note_verified_email(user, _verified_email(email, email_verified), settings)
    await _commit(session)
    return user
