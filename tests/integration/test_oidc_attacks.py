"""Attacks through the OIDC login (issue 9), played against the running app with the
local test IdP: each failed before its fix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.db.models import OidcIdentity, User
from tests.integration.accounts import (
    PASSWORD,
    bearer,
    email,
    idp_login,
    in_db,
    login,
    register,
    tokens_of,
)

ATTACKER_PASSWORD = "the attacker's own passphrase"


@pytest.fixture
def http(chat_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_app, timeout=60) as client:
        yield client


def identities_of(pg_url: str, address: str) -> int:
    async def count(session: AsyncSession) -> int:
        query = select(func.count()).select_from(OidcIdentity).join(User)
        return int(await session.scalar(query.where(User.email == address)) or 0)

    return in_db(pg_url, count)


def test_idp_login_does_not_take_over_an_unverified_password_account(
    http: httpx.Client, oidc_issuer: Any, pg_url: str
) -> None:
    victim = email("corp.example")
    # the attacker registers the victim's address with his own password ...
    assert register(http, victim, ATTACKER_PASSWORD).status_code == 201
    attacker = login(http, victim, ATTACKER_PASSWORD)
    # ... and later the victim logs in with the company IdP, which vouches for the address
    oidc_issuer.reset()
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": victim, "email_verified": True}
    callback = idp_login(http)
    victim_tokens = tokens_of(callback)
    if victim_tokens is not None:  # the victim got in somewhere, and chats there
        http.post(
            "/api/conversations", json={"title": "victim's secret"}, headers=bearer(victim_tokens)
        )
    seen = http.get("/api/conversations", headers=bearer(attacker)).json()["items"]
    assert "victim's secret" not in [c["title"] for c in seen], "the attacker reads the victim"

    assert callback.status_code == 409, callback.text
    message = callback.json()["error"]["message"]
    assert "password" in message and "link" in message and "another email" in message
    assert victim_tokens is None
    assert identities_of(pg_url, victim) == 0  # nothing was linked ...
    assert idp_login(http).status_code == 409  # ... so the next try is refused as well


def test_idp_login_links_to_an_account_whose_email_the_idp_verified(
    http: httpx.Client, oidc_issuer: Any
) -> None:
    oidc_issuer.reset()
    address = email()
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": address, "email_verified": True}
    first = tokens_of(idp_login(http))
    assert first is not None
    me = http.get("/api/me", headers=bearer(first)).json()
    # another identity vouching for the same address finds the same, verified, account
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": address, "email_verified": True}
    second = tokens_of(idp_login(http))
    assert second is not None
    assert http.get("/api/me", headers=bearer(second)).json()["id"] == me["id"]


def link(http: httpx.Client, tokens: dict[str, Any], password: str | None) -> httpx.Response:
    """Start linking the test IdP to the logged-in account; the browser goes on from there."""
    return http.post(
        "/api/auth/oidc/testidp/link", json={"password": password}, headers=bearer(tokens)
    )


def test_the_owner_links_the_idp_after_logging_in_with_the_password(
    http: httpx.Client, oidc_issuer: Any, pg_url: str
) -> None:
    address = email()
    assert register(http, address).status_code == 201
    tokens = login(http, address)
    me = http.get("/api/me", headers=bearer(tokens)).json()
    oidc_issuer.reset()
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": address, "email_verified": True}
    assert idp_login(http).status_code == 409  # not linked by itself

    # linking needs the login and the password
    assert link(http, tokens, "not my password").status_code == 403
    anonymous = http.post("/api/auth/oidc/testidp/link", json={"password": PASSWORD})
    assert anonymous.status_code == 401
    start = link(http, tokens, PASSWORD)
    assert start.status_code == 200, start.text
    back = httpx.get(start.json()["authorization_url"])  # the IdP approves
    linked = tokens_of(http.get(back.headers["location"]))
    assert linked is not None
    assert http.get("/api/me", headers=bearer(linked)).json()["id"] == me["id"]
    assert identities_of(pg_url, address) == 1
    # from now on the IdP login finds the account, whose address the IdP has verified
    again = tokens_of(idp_login(http))
    assert again is not None
    assert http.get("/api/me", headers=bearer(again)).json()["id"] == me["id"]

    # an identity linked to one account cannot be linked to another
    other = email()
    assert register(http, other).status_code == 201
    start = link(http, login(http, other), PASSWORD)
    back = httpx.get(start.json()["authorization_url"])
    refused = http.get(back.headers["location"])
    assert refused.status_code == 409 and tokens_of(refused) is None
    assert identities_of(pg_url, other) == 0


def test_a_link_started_by_one_browser_cannot_be_finished_in_another(
    http: httpx.Client, oidc_issuer: Any, chat_app: str
) -> None:
    """The attacker starts a link to his account and lures the victim's browser through
    the IdP: without the attacker's login cookie the callback refuses."""
    oidc_issuer.reset()
    attacker = email()
    assert register(http, attacker).status_code == 201
    start = link(http, login(http, attacker), PASSWORD)
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": email(), "email_verified": True}
    back = httpx.get(start.json()["authorization_url"])  # the victim approves at the IdP
    with httpx.Client(base_url=chat_app) as victim_browser:
        refused = victim_browser.get(back.headers["location"])
    assert refused.status_code == 422 and tokens_of(refused) is None


@pytest.mark.parametrize("claim", ["false", "False", "0", "no", 1, None])
def test_email_verified_counts_only_when_it_is_true(
    http: httpx.Client, oidc_issuer: Any, claim: Any
) -> None:
    """`"email_verified": "false"` is a non-empty string: it used to count as verified."""
    oidc_issuer.reset()
    oidc_issuer.user = {"sub": f"sub-{email()}", "email": email(), "email_verified": claim}
    try:
        callback = idp_login(http)
        assert callback.status_code == 403, callback.text
        assert tokens_of(callback) is None
        assert "verified email" in callback.json()["error"]["message"]
    finally:
        oidc_issuer.reset()


def test_an_idp_login_hands_the_page_no_tokens_in_the_url(
    http: httpx.Client, oidc_issuer: Any, chat_app: str
) -> None:
    """Login CSRF (issue 9, item 6): tokens in the landing URL's fragment could be planted
    in a link by an attacker. The callback sets only the refresh cookie, which the page
    trades with a POST; a link cannot set it."""
    oidc_issuer.reset()
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": email(), "email_verified": True}
    callback = idp_login(http)
    assert callback.status_code == 302, callback.text
    assert callback.headers["location"] == f"{chat_app}/"
    (cookie,) = [c for c in callback.headers.get_list("set-cookie") if "chatapp_refresh=" in c]
    for attribute in ("httponly", "samesite=strict", "path=/api/auth/refresh"):
        assert attribute in cookie.lower(), cookie
    tokens = tokens_of(callback)
    assert tokens is not None and tokens["refresh_token"] is None
    assert http.get("/api/me", headers=bearer(tokens)).json()["email"] == oidc_issuer.user["email"]
