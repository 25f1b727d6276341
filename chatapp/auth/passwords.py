"""Password hashing (argon2 through pwdlib) and the rules a new password must meet.

One argon2 hash or verification costs ~100-200 ms of CPU. Servers use the `_off_loop`
variants: they run in a small thread pool (argon2's C code releases the GIL), so password
checks cannot stall the event loop and every stream it serves; the pool's size bounds the
CPU and memory (64 MiB each) they take at once, and callers rate-limit them.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
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


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    # Half the cores at most: the other half keeps serving the event loop meanwhile.
    threads = max(1, min(4, (os.cpu_count() or 1) // 2))
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")


async def hash_password_off_loop(password: str) -> str:
    """`hash_password` in the bounded password thread pool."""
    return await asyncio.get_running_loop().run_in_executor(_pool(), hash_password, password)


async def verify_password_off_loop(password: str, password_hash: str | None) -> bool:
    """`verify_password` in the bounded password thread pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), verify_password, password, password_hash)


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
