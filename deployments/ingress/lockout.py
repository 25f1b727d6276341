"""The lockout every route that checks a password goes through (login, password change,
account deletion, linking a login provider).

Each check is counted against the account's `AUTH_LOGIN_FAILURE_LIMIT` *before* the password
is verified, with one atomic increment (Redis when configured), so parallel guesses cannot
all pass a check-then-record; over the limit the answer is 429 without verifying anything.
A correct password clears the count. One counter per account for all these routes: a stolen
access token does not buy extra guesses through /api/me.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from deployments.ingress.deps import IngressState

_KEY = "login-fail"


@asynccontextmanager
async def password_attempt(state: IngressState, email: str) -> AsyncIterator[None]:
    """Count one password check for `email`'s account; the count is cleared only when the
    body finishes without raising (the password was right)."""
    limit, email = state.settings.auth.login_failure_limit, email.strip().lower()
    await state.limiter.hit(limit, _KEY, email, what="failed password checks for this account")
    yield
    await state.limiter.reset(limit, _KEY, email)
