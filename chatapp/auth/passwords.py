"""Password hashing (argon2 through pwdlib) and the rules a new password must meet."""

from __future__ import annotations

from functools import lru_cache

from pwdlib import PasswordHash

from chatapp.errors import InvalidRequest

_COMMON = {
    "password", "password1", "password123", "123456789", "1234567890", "qwertyuiop",
    "iloveyou", "letmein123", "welcome123", "changeme", "administrator", "passw0rd",
}  # fmt: skip


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash("dummy password for constant-time misses")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check `password`; with no hash (unknown user, OIDC-only account) a dummy hash is
    verified anyway, so a miss takes as long as a wrong password."""
    if password_hash is None:
        _hasher().verify(password, _dummy_hash())
        return False
    return _hasher().verify(password, password_hash)


def check_password_strength(password: str, *, email: str, min_length: int) -> None:
    """Raise `InvalidRequest` saying what to change when `password` is too weak."""
    if len(password) < min_length:
        raise InvalidRequest(f"password: use at least {min_length} characters")
    if len(password) > 1024:
        raise InvalidRequest("password: use at most 1024 characters")
    lowered = password.lower()
    if lowered in _COMMON or len(set(password)) < 4:
        raise InvalidRequest("password: this password is too easy to guess; choose another")
    if email and lowered == email.lower():
        raise InvalidRequest("password: must not be your email address")
