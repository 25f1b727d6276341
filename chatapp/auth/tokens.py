"""JWT access tokens (PyJWT, HS256 pinned at decode) and opaque secrets (refresh tokens,
API keys) that are stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from chatapp.errors import Unauthenticated

ALGORITHM = "HS256"
API_KEY_PREFIX = "cak_"


class InvalidToken(Unauthenticated):
    """The credentials are missing, malformed, expired or revoked (401)."""

    code = "invalid_token"


class TokenExpired(InvalidToken):
    code = "token_expired"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    jti: str
    expires_at: datetime


def create_access_token(
    user_id: uuid.UUID,
    *,
    session_id: uuid.UUID,
    secret: str,
    ttl: timedelta,
    issuer: str,
    audience: str,
    now: datetime | None = None,
) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "iss": issuer,
        "aud": audience,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret: str, issuer: str, audience: str) -> AccessClaims:
    """Verify signature, algorithm, time claims, issuer and audience; `InvalidToken` if not."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            options={"require": ["sub", "sid", "exp", "iat", "nbf", "iss", "aud", "jti"]},
            leeway=5,
        )
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            session_id=uuid.UUID(claims["sid"]),
            jti=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired("the access token has expired; refresh it or log in again") from exc
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise InvalidToken("the access token is invalid") from exc


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(value: str) -> str:
    """SHA-256 of a high-entropy secret: enough for lookup, useless to a database thief."""
    return hashlib.sha256(value.encode()).hexdigest()
