"""The lockout every route that checks a password goes through (login, password change,
account deletion, linking a login provider).

Each check is counted *before* the password is verified, with one atomic increment (Redis
when configured), so parallel guesses cannot all pass a check-then-record; over a limit the
answer is 429 without verifying anything. Two counts, both cleared by a correct password:

- per account and client address (`AUTH_LOGIN_FAILURE_LIMIT`, 5 per 15 minutes): a client
  guessing someone's password locks out only itself, not the owner logging in elsewhere;
- per account from all clients (`AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT`, 50 per hour): the
  ceiling for guessing from many addresses.

The same counts for all these routes: a stolen access token buys no extra guesses through
/api/me. The client address comes from `client_ip` (X-Forwarded-For only behind
AUTH_TRUSTED_PROXIES).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chatapp.auth import service
from deployments.ingress.deps import IngressState

_CLIENT_KEY = "login-fail"
_ACCOUNT_KEY = "login-fail-account"


@asynccontextmanager
async def password_attempt(state: IngressState, email: str, client: str) -> AsyncIterator[None]:
    """Count one password check for `email`'s account from `client`; the counts are
    cleared only when the body finishes without raising (the password was right)."""
    auth, email = state.settings.auth, service.normalize_email(email)
    what = "failed password checks for this account"
    await state.limiter.hit(auth.login_failure_limit, _CLIENT_KEY, email, client, what=what)
    await state.limiter.hit(auth.login_account_failure_limit, _ACCOUNT_KEY, email, what=what)
    yield
    await state.limiter.reset(auth.login_failure_limit, _CLIENT_KEY, email, client)
    await state.limiter.reset(auth.login_account_failure_limit, _ACCOUNT_KEY, email)
