"""Account helpers for the attack tests: HTTP logins against the running app, the test
IdP's browser round trip, and direct database access as an ops command would have."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

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


def tokens_of(callback: httpx.Response) -> dict[str, str] | None:
    """The tokens a finished OIDC callback hands the page, or None if it refused."""
    if callback.status_code != 302:
        return None
    fragment = parse_qs(urlparse(callback.headers["location"]).fragment)
    return {k: v[0] for k, v in fragment.items()} if "access_token" in fragment else None


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
