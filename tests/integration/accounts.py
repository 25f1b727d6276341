"""Account helpers for the attack tests: HTTP logins against the running app, the test
IdP's browser round trip, and direct database access as an ops command would have."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.config import DatabaseSettings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.db.models import User

PASSWORD = "correct horse battery staple"
T = TypeVar("T")


def email(domain: str = "example.com") -> str:
    return f"u-{uuid.uuid4().hex[:10]}@{domain}"


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def register(http: httpx.Client, address: str, password: str = PASSWORD) -> httpx.Response:
    return http.post("/api/auth/register", json={"email": address, "password": password})


def login(http: httpx.Client, address: str, password: str = PASSWORD) -> dict[str, Any]:
    response = http.post("/api/auth/token", data={"username": address, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def idp_login(http: httpx.Client) -> httpx.Response:
    """A browser login through the test IdP: ChatApp's answer to the IdP's redirect."""
    start = http.get("/api/auth/oidc/testidp/login")
    assert start.status_code == 302, start.text
    back = httpx.get(start.headers["location"])  # the IdP approves its scripted user
    assert back.status_code == 302, back.text
    return http.get(back.headers["location"])


REFRESH_COOKIE = "chatapp_refresh"
COOKIE_MODE = {"X-ChatApp-Refresh": "cookie"}


def tokens_of(callback: httpx.Response) -> dict[str, Any] | None:
    """The access token the page gets after a finished OIDC callback, or None if it
    refused. The callback hands over nothing in the URL, only the new session's HttpOnly
    refresh cookie, which the page trades with a POST (issue 9, item 6)."""
    if callback.status_code != 302:
        return None
    landing = urlparse(callback.headers["location"])
    assert not landing.fragment and "token" not in landing.query, landing
    refresh = callback.cookies.get(REFRESH_COOKIE)
    if refresh is None:
        return None
    url = callback.request.url
    with httpx.Client(base_url=f"{url.scheme}://{url.netloc.decode()}", timeout=60) as page:
        page.cookies.set(REFRESH_COOKIE, refresh)
        traded = page.post("/api/auth/refresh", headers=COOKIE_MODE)
    assert traded.status_code == 200, traded.text
    return traded.json()  # type: ignore[no-any-return]


def in_db(pg_url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in a session on the app's database."""

    async def go() -> T:
        engine = make_engine(DatabaseSettings(url=pg_url))
        try:
            async with make_sessionmaker(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def forget_account(pg_url: str, address: str) -> None:
    """Delete the account with `address`, as on a server where it was never created."""

    async def forget(session: AsyncSession) -> None:
        await session.execute(delete(User).where(User.email == address))
        await session.commit()

    in_db(pg_url, forget)
