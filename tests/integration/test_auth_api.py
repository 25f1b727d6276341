"""Accounts and authentication through the running app, on the real PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import openai
import pytest
import ray
from ray import serve
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from actors.client import kill_shards
from chatapp.auth.credentials import Revocations
from chatapp.auth.service import set_role
from chatapp.auth.tokens import hash_secret
from chatapp.config import Settings
from chatapp.db.models import RefreshToken, utcnow
from deployments.app import build_app
from tests.conftest import ADMIN_EMAIL, register_and_login, run_app
from tests.integration.accounts import COOKIE_MODE, REFRESH_COOKIE, in_db, tokens_of

PASSWORD = "correct horse battery staple"


def email() -> str:
    return f"u-{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def http(chat_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_app, timeout=60) as client:
        yield client


def login(http: httpx.Client, address: str, password: str = PASSWORD) -> dict[str, Any]:
    response = http.post("/api/auth/token", data={"username": address, "password": password})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def new_account(http: httpx.Client) -> tuple[str, dict[str, Any]]:
    address = email()
    assert (
        http.post("/api/auth/register", json={"email": address, "password": PASSWORD}).status_code
        == 201
    )
    return address, login(http, address)


def test_register_login_me_and_password_rules(http: httpx.Client) -> None:
    address = email()
    created = http.post(
        "/api/auth/register",
        json={"email": address.upper(), "password": PASSWORD, "display_name": "Ann"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (
        body["email"] == address and body["role"] == "user" and "password" not in json.dumps(body)
    )

    again = http.post("/api/auth/register", json={"email": address, "password": PASSWORD})
    assert again.status_code == 409
    weak = http.post("/api/auth/register", json={"email": email(), "password": "short"})
    assert weak.status_code == 422 and "password" in weak.json()["error"]["message"]
    bad_email = http.post(
        "/api/auth/register", json={"email": "not-an-email", "password": PASSWORD}
    )
    assert bad_email.status_code == 422

    tokens = login(http, address)
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0
    me = http.get("/api/me", headers=bearer(tokens))
    assert me.status_code == 200 and me.json()["display_name"] == "Ann"

    wrong = http.post("/api/auth/token", data={"username": address, "password": "nope nope nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert http.get("/api/me").status_code == 401


def test_login_refuses_an_overlong_username_before_any_check(http: httpx.Client) -> None:
    """Issue 9, item 18: the username had no length limit (5,000 characters were looked up,
    normalized and used as a limiter key)."""
    huge = http.post(
        "/api/auth/token", data={"username": "a" * 5000 + "@example.com", "password": "x"}
    )
    assert huge.status_code == 422, huge.text
    assert "username" in huge.json()["error"]["message"]
    long_password = http.post("/api/auth/token", data={"username": email(), "password": "p" * 5000})
    assert long_password.status_code == 422


def test_refresh_rotates_and_reuse_revokes_the_family(http: httpx.Client, pg_url: str) -> None:
    _, first = new_account(http)
    second = http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second_tokens = second.json()
    assert second_tokens["refresh_token"] != first["refresh_token"]
    assert http.get("/api/me", headers=bearer(second_tokens)).status_code == 200

    # a minute later (past AUTH_REFRESH_REUSE_GRACE_S) the first refresh token is presented
    # again: someone copied it
    spent_a_minute_ago(pg_url, first["refresh_token"])
    reuse = http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    # ... so the whole session is revoked, including the newest tokens
    assert (
        http.post(
            "/api/auth/refresh", json={"refresh_token": second_tokens["refresh_token"]}
        ).status_code
        == 401
    )
    assert http.get("/api/me", headers=bearer(second_tokens)).status_code == 401


def spent_a_minute_ago(pg_url: str, refresh_token: str) -> None:
    """As if `refresh_token` had been used a minute ago (no sleeping in tests)."""

    async def backdate(session: AsyncSession) -> None:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == hash_secret(refresh_token))
            .values(used_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()

    in_db(pg_url, backdate)


@contextmanager
def cookie_login(base_url: str, address: str) -> Iterator[httpx.Client]:
    """A browser's login: the refresh token only in the HttpOnly cookie."""
    with httpx.Client(base_url=base_url, timeout=60) as browser:
        response = browser.post(
            "/api/auth/token",
            data={"username": address, "password": PASSWORD},
            headers=COOKIE_MODE,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["refresh_token"] is None and body["access_token"]
        set_cookie = response.headers["set-cookie"]
        assert f"{REFRESH_COOKIE}=" in set_cookie
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/api/auth/refresh"):
            assert attribute.lower() in set_cookie.lower(), set_cookie
        yield browser


def test_a_browser_login_keeps_the_refresh_token_in_an_httponly_cookie(
    http: httpx.Client, chat_app: str
) -> None:
    address, _ = new_account(http)
    with cookie_login(chat_app, address) as browser:
        old = browser.cookies[REFRESH_COOKIE]
        # another site's form cannot send the header: no refresh without it
        assert browser.post("/api/auth/refresh").status_code == 401
        traded = browser.post("/api/auth/refresh", headers=COOKIE_MODE)
        assert traded.status_code == 200 and traded.json()["refresh_token"] is None
        assert browser.cookies[REFRESH_COOKIE] != old  # rotated in the cookie
        assert http.get("/api/me", headers=bearer(traded.json())).status_code == 200
        out = browser.post("/api/auth/logout", headers=bearer(traded.json()))
        assert out.status_code == 204 and REFRESH_COOKIE not in browser.cookies
        assert http.get("/api/me", headers=bearer(traded.json())).status_code == 401


def trade(base_url: str, cookie: str) -> httpx.Response:
    """A tab's refresh: POST with the refresh cookie (and nothing else a jar would add)."""
    headers = {**COOKIE_MODE, "Cookie": f"{REFRESH_COOKIE}={cookie}"}
    return httpx.post(f"{base_url}/api/auth/refresh", headers=headers, timeout=60)


def test_two_tabs_refreshing_at_once_stay_logged_in(http: httpx.Client, chat_app: str) -> None:
    """Issue 9, item 17: two tabs share the refresh cookie; when both refresh with it at
    once, the second used to look like a stolen token and end the session."""
    address, _ = new_account(http)
    with cookie_login(chat_app, address) as browser:
        cookie = browser.cookies[REFRESH_COOKIE]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: trade(chat_app, cookie), range(2)))
    # and a tab refreshing again with the cookie the other one already rotated
    answers.append(trade(chat_app, cookie))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert http.get("/api/me", headers=bearer(answer.json())).status_code == 200
    rotated = [a.cookies[REFRESH_COOKIE] for a in answers if REFRESH_COOKIE in a.cookies]
    assert len(rotated) == 1, "exactly one refresh rotated the cookie"
    assert trade(chat_app, rotated[0]).status_code == 200  # and the session goes on


def test_an_api_client_racing_its_own_refresh_gets_409_and_keeps_the_session(
    http: httpx.Client,
) -> None:
    _, tokens = new_account(http)
    first = http.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    again = http.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200 and again.status_code == 409, again.text
    assert "another refresh" in again.json()["error"]["message"]
    newest = first.json()["refresh_token"]
    assert http.post("/api/auth/refresh", json={"refresh_token": newest}).status_code == 200


def test_logout_revokes_the_session(http: httpx.Client) -> None:
    _, tokens = new_account(http)
    for _ in range(2):  # the replica has it cached now (AUTH_CACHE_TTL_S)
        assert http.get("/api/me", headers=bearer(tokens)).status_code == 200
    assert (
        http.post("/api/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code
        == 204
    )
    assert http.get("/api/me", headers=bearer(tokens)).status_code == 401
    assert (
        http.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code
        == 401
    )


def test_change_password_and_delete_account(http: httpx.Client) -> None:
    address, tokens = new_account(http)
    other_session = login(http, address)
    conv = http.post("/api/conversations", json={"title": "mine"}, headers=bearer(tokens)).json()
    changed = http.post(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
        headers=bearer(tokens),
    )
    assert changed.status_code == 204
    assert http.get("/api/me", headers=bearer(tokens)).status_code == 200  # this session stays
    assert http.get("/api/me", headers=bearer(other_session)).status_code == 401  # others end
    assert (
        http.post("/api/auth/token", data={"username": address, "password": PASSWORD}).status_code
        == 401
    )
    tokens = login(http, address, "another long passphrase")

    refused = http.request("DELETE", "/api/me", json={"password": "wrong"}, headers=bearer(tokens))
    assert refused.status_code == 403
    deleted = http.request(
        "DELETE", "/api/me", json={"password": "another long passphrase"}, headers=bearer(tokens)
    )
    assert deleted.status_code == 204
    assert http.get("/api/me", headers=bearer(tokens)).status_code == 401
    # the conversations went with the account
    _, stranger = new_account(http)
    assert http.get(f"/api/conversations/{conv['id']}", headers=bearer(stranger)).status_code == 404


def test_api_keys_work_with_the_openai_sdk_and_stop_when_revoked(
    http: httpx.Client, chat_app: str
) -> None:
    _, tokens = new_account(http)
    created = http.post("/api/keys", json={"name": "laptop"}, headers=bearer(tokens))
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("cak_")
    listed = http.get("/api/keys", headers=bearer(tokens)).json()
    assert [k["name"] for k in listed] == ["laptop"] and "key" not in listed[0]
    assert key.startswith(listed[0]["prefix"])

    sdk = openai.OpenAI(base_url=f"{chat_app}/v1", api_key=key, max_retries=0)
    assert "smollm2-135m-instruct" in [m.id for m in sdk.models.list()]
    reply = sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
    # API keys are for /v1; the /api routes want a login
    assert http.get("/api/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401

    assert http.delete(f"/api/keys/{listed[0]['id']}", headers=bearer(tokens)).status_code == 204
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()


def test_api_keys_expire_list_their_last_use_and_end_with_a_password_change(
    http: httpx.Client,
) -> None:
    _, tokens = new_account(http)
    made = http.post(
        "/api/keys", json={"name": "ci", "expires_in_days": 30}, headers=bearer(tokens)
    ).json()
    kept = http.post("/api/keys", json={"name": "kept"}, headers=bearer(tokens)).json()
    assert made["expires_at"] is not None and kept["expires_at"] is None
    for key in (made["key"], kept["key"]):
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = {k["name"]: k for k in http.get("/api/keys", headers=bearer(tokens)).json()}
    assert listed["ci"]["last_used_at"] is not None and listed["ci"]["expires_at"]
    too_long = http.post(
        "/api/keys", json={"name": "x", "expires_in_days": 0}, headers=bearer(tokens)
    )
    assert too_long.status_code == 422

    # a changed password revokes the keys (a leaked password may have made them) ...
    changed = http.post(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
        headers=bearer(tokens),
    )
    assert changed.status_code == 204
    for key in (made["key"], kept["key"]):
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    # ... unless the user keeps them
    key = http.post("/api/keys", json={"name": "k"}, headers=bearer(tokens)).json()["key"]
    kept_keys = http.post(
        "/api/me/password",
        json={
            "current_password": "another long passphrase",
            "new_password": "a third long passphrase",
            "revoke_api_keys": False,
        },
        headers=bearer(tokens),
    )
    assert kept_keys.status_code == 204
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_another_users_api_key_cannot_be_revoked(http: httpx.Client) -> None:
    _, alice = new_account(http)
    _, mallory = new_account(http)
    key = http.post("/api/keys", json={"name": "a"}, headers=bearer(alice)).json()
    assert http.delete(f"/api/keys/{key['id']}", headers=bearer(mallory)).status_code == 404
    assert key["id"] not in [k["id"] for k in http.get("/api/keys", headers=bearer(mallory)).json()]
    auth = {"Authorization": f"Bearer {key['key']}"}
    assert http.get("/v1/models", headers=auth).status_code == 200


def test_admin_disables_a_user_and_their_tokens_and_keys_stop_at_once(
    http: httpx.Client, pg_url: str
) -> None:
    _, user_tokens = new_account(http)
    key = http.post("/api/keys", json={"name": "k"}, headers=bearer(user_tokens)).json()["key"]
    me = http.get("/api/me", headers=bearer(user_tokens)).json()

    # a plain user is not an admin
    assert http.get("/api/admin/users", headers=bearer(user_tokens)).status_code == 403

    admin = register_and_login_admin(http, pg_url)
    page = http.get("/api/admin/users", params={"limit": 200}, headers=admin).json()
    assert me["id"] in [u["id"] for u in page["items"]]
    disabled = http.post(f"/api/admin/users/{me['id']}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["is_active"] is False

    assert http.get("/api/me", headers=bearer(user_tokens)).status_code == 401
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert (
        http.post(
            "/api/auth/refresh", json={"refresh_token": user_tokens["refresh_token"]}
        ).status_code
        == 401
    )

    # enabling the account again does not revive the sessions it had (issue 9, item 8);
    # its API keys work again, and its owner logs in afresh
    assert http.post(f"/api/admin/users/{me['id']}/enable", headers=admin).status_code == 200
    assert http.get("/api/me", headers=bearer(user_tokens)).status_code == 401
    assert (
        http.post(
            "/api/auth/refresh", json={"refresh_token": user_tokens["refresh_token"]}
        ).status_code
        == 401
    )
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert http.get("/api/me", headers=bearer(login(http, me["email"]))).status_code == 200


def register_and_login_admin(http: httpx.Client, pg_url: str) -> dict[str, str]:
    """Log in as ADMIN_EMAIL, made an admin the way ops do it (`chatapp admin grant`):
    registering a listed address gives a plain user."""
    exists = http.post("/api/auth/token", data={"username": ADMIN_EMAIL, "password": PASSWORD})
    if exists.status_code != 200:
        register_and_login(str(http.base_url), email=ADMIN_EMAIL, password=PASSWORD)

    async def grant(session: AsyncSession) -> None:
        # a fresh login follows, so no cached credential needs revoking
        await set_role(
            session=session, revocations=Revocations(None), email=ADMIN_EMAIL, role="admin"
        )

    in_db(pg_url, grant)
    return bearer(login(http, ADMIN_EMAIL))


def _forge(tokens: dict[str, Any], **changes: Any) -> str:
    header, payload, signature = tokens["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{signature}"


def test_attacks_get_401_and_change_nothing(http: httpx.Client) -> None:
    _, victim = new_account(http)
    conv = http.post("/api/conversations", json={"title": "victim"}, headers=bearer(victim)).json()
    _, attacker = new_account(http)
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = victim["access_token"].split(".")[1]
    attacker_sub = http.get("/api/me", headers=bearer(attacker)).json()["id"]
    forged = [
        f"{none_header}.{payload}.",  # alg: none
        _forge(victim, sub=attacker_sub),  # tampered payload
        _forge(victim, exp=1),  # expired (signature also breaks)
        "not-a-jwt",
        "a.b.c",
    ]
    for token in forged:
        for method, path in [
            ("GET", "/api/conversations"),
            ("GET", f"/api/conversations/{conv['id']}"),
            ("DELETE", f"/api/conversations/{conv['id']}"),
            ("POST", f"/api/conversations/{conv['id']}/messages"),
        ]:
            response = http.request(
                method, path, headers={"Authorization": f"Bearer {token}"},
                json={"content": "pwned"} if method == "POST" else None,
            )  # fmt: skip
            assert response.status_code == 401, (token[:20], method, path, response.text)
    detail = http.get(f"/api/conversations/{conv['id']}", headers=bearer(victim)).json()
    assert detail["title"] == "victim" and detail["messages"] == []


def test_other_users_conversations_are_404_everywhere(http: httpx.Client) -> None:
    _, alice = new_account(http)
    _, bob = new_account(http)
    conv = http.post("/api/conversations", json={"title": "alice's"}, headers=bearer(alice)).json()
    sent = http.post(
        f"/api/conversations/{conv['id']}/messages",
        json={"content": "hello", "stream": False, "max_tokens": 4},
        headers=bearer(alice),
    )
    assert sent.status_code == 200
    before = http.get(f"/api/conversations/{conv['id']}", headers=bearer(alice)).json()

    cid = conv["id"]
    assert http.get(f"/api/conversations/{cid}", headers=bearer(bob)).status_code == 404
    assert (
        http.patch(
            f"/api/conversations/{cid}", json={"title": "x"}, headers=bearer(bob)
        ).status_code
        == 404
    )
    assert http.delete(f"/api/conversations/{cid}", headers=bearer(bob)).status_code == 404
    posted = http.post(
        f"/api/conversations/{cid}/messages",
        json={"content": "hi", "stream": False},
        headers=bearer(bob),
    )
    assert posted.status_code == 404
    assert cid not in [
        c["id"] for c in http.get("/api/conversations", headers=bearer(bob)).json()["items"]
    ]
    assert http.get(f"/api/conversations/{cid}", headers=bearer(alice)).json() == before


def test_oidc_login_creates_the_account_and_finds_it_again(
    http: httpx.Client, chat_app: str, oidc_issuer: Any
) -> None:
    oidc_issuer.reset()
    providers = http.get("/api/auth/providers").json()
    assert providers == [
        {"name": "testidp", "display_name": "Test IdP", "login_url": "/api/auth/oidc/testidp/login"}
    ]
    address = email()
    # (linking to an existing account: tests/integration/test_oidc_attacks.py)
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": address, "email_verified": True}
    tokens = oidc_login(http)
    me = http.get("/api/me", headers=bearer(tokens)).json()
    assert me["email"] == address
    # a second login with the same identity finds the same account
    assert http.get("/api/me", headers=bearer(oidc_login(http))).json()["id"] == me["id"]


def oidc_login(http: httpx.Client) -> dict[str, Any]:
    start = http.get("/api/auth/oidc/testidp/login")
    assert start.status_code == 302
    authorize = urlparse(start.headers["location"])
    query = parse_qs(authorize.query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    # the browser goes to the provider, which sends it back with a code
    back = httpx.get(start.headers["location"])
    assert back.status_code == 302, back.text
    done = http.get(back.headers["location"])
    assert done.status_code == 302, done.text
    tokens = tokens_of(done)
    assert tokens is not None
    return tokens


@pytest.mark.parametrize(
    "flaw",
    [
        "wrong_nonce",
        "wrong_audience",
        "sign_with_other_key",
        "unverified",
        "hs256_with_jwks_key",  # issue 9, "also as suites": algorithm confusion
        "expired",
        "wrong_issuer",
    ],
)
def test_oidc_login_refuses_bad_id_tokens(http: httpx.Client, oidc_issuer: Any, flaw: str) -> None:
    oidc_issuer.reset()
    oidc_issuer.user = {"sub": f"sub-{uuid.uuid4().hex}", "email": email(), "email_verified": True}
    if flaw == "unverified":
        oidc_issuer.user["email_verified"] = False
    else:
        setattr(oidc_issuer, flaw, True)
    try:
        start = http.get("/api/auth/oidc/testidp/login")
        back = httpx.get(start.headers["location"])
        done = http.get(back.headers["location"])
        assert done.status_code == 403, done.text
        assert "access_token" not in done.headers.get("location", "")
    finally:
        oidc_issuer.reset()


def test_oidc_state_must_match(http: httpx.Client, oidc_issuer: Any) -> None:
    oidc_issuer.reset()
    start = http.get("/api/auth/oidc/testidp/login")
    back = httpx.get(start.headers["location"])
    url = urlparse(back.headers["location"])
    code = parse_qs(url.query)["code"][0]
    forged = http.get(f"{url.path}?code={code}&state=attacker-state")
    assert forged.status_code == 422 and "state" in forged.json()["error"]["message"]
    # and without the login cookie (another browser), the callback is refused too
    with httpx.Client(base_url=str(http.base_url)) as other_browser:
        assert other_browser.get(back.headers["location"]).status_code == 422


@pytest.fixture(scope="module")
def limited_app(chat_app: str, pg_url: str, app_overrides: dict[str, Any]) -> Iterator[str]:
    """ChatApp with tight limits and a simulated model, on the same Serve instance."""
    overrides = {
        "database": {"url": pg_url},
        "redis": {
            "url": app_overrides["redis"]["url"],
            "key_prefix": f"limited-{uuid.uuid4().hex[:6]}:",
        },
        "llm": {"engine": "simulated", "simulated_reply_tokens": 5},
        "shards": {"count": 1, "name_prefix": f"limited-{uuid.uuid4().hex[:6]}"},
        "auth": {
            "chat_request_limit": "3/minute",
            "chat_token_limit": "300/minute",
            "login_failure_limit": "3/15minutes",
            "login_account_failure_limit": "6/hour",
            "login_ip_limit": "1000/minute",
            # what the ingress replica sees as the peer: Serve's proxy on this node
            "trusted_proxies": ["127.0.0.1", ray.util.get_node_ip_address()],
        },
    }
    run_app(build_app(overrides), name="limited", route_prefix="/limited", base_url=chat_app)
    yield f"{chat_app}/limited"
    serve.delete("limited")
    kill_shards(Settings.from_overrides(overrides))


def test_chat_burst_gets_429_with_retry_after(limited_app: str) -> None:
    headers = register_and_login(limited_app)
    with httpx.Client(base_url=limited_app, headers=headers, timeout=60) as http:
        conv = http.post("/api/conversations", json={}).json()["id"]
        statuses = []
        for _ in range(5):
            r = http.post(
                f"/api/conversations/{conv}/messages", json={"content": "hi", "stream": False}
            )
            statuses.append(r.status_code)
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limited"
        # the refused turns stored nothing
        assert len(http.get(f"/api/conversations/{conv}").json()["messages"]) == 6


def test_brute_force_locks_the_account(limited_app: str) -> None:
    address = email()
    with httpx.Client(base_url=limited_app, timeout=60) as http:
        http.post("/api/auth/register", json={"email": address, "password": PASSWORD})
        codes = [
            http.post(
                "/api/auth/token", data={"username": address, "password": f"guess {i} guess"}
            ).status_code
            for i in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        locked = http.post("/api/auth/token", data={"username": address, "password": PASSWORD})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        assert "failed password checks" in locked.json()["error"]["message"]


def test_a_client_guessing_a_password_locks_out_only_itself(limited_app: str) -> None:
    """Issue 9, item 7: 4 wrong passwords from an attacker used to lock the account
    everywhere, the owner's correct password included."""
    address = email()
    attacker = {"X-Forwarded-For": "203.0.113.9"}  # as Serve's proxy would forward it
    owner = {"X-Forwarded-For": "198.51.100.7"}
    with httpx.Client(base_url=limited_app, timeout=60) as http:
        registered = http.post("/api/auth/register", json={"email": address, "password": PASSWORD})
        assert registered.status_code == 201
        codes = [
            http.post(
                "/api/auth/token",
                data={"username": address, "password": f"guess {i} guess"},
                headers=attacker,
            ).status_code
            for i in range(4)
        ]
        assert codes == [401, 401, 401, 429]
        right = {"username": address, "password": PASSWORD}
        assert http.post("/api/auth/token", data=right, headers=owner).status_code == 200
        assert http.post("/api/auth/token", data=right, headers=attacker).status_code == 429


def test_guesses_from_many_clients_stop_at_the_account_ceiling(limited_app: str) -> None:
    address = email()
    with httpx.Client(base_url=limited_app, timeout=60) as http:
        http.post("/api/auth/register", json={"email": address, "password": PASSWORD})

        def guess(client: str) -> int:
            return http.post(
                "/api/auth/token",
                data={"username": address, "password": "wrong wrong wrong"},
                headers={"X-Forwarded-For": client},
            ).status_code

        assert [guess(ip) for ip in ["203.0.113.1"] * 3 + ["203.0.113.2"] * 3] == [401] * 6
        # AUTH_LOGIN_ACCOUNT_FAILURE_LIMIT (6/hour here): a seventh address is refused too
        assert guess("203.0.113.3") == 429


def test_x_forwarded_for_from_an_unnamed_peer_buys_no_extra_guesses(http: httpx.Client) -> None:
    """Without AUTH_TRUSTED_PROXIES the header is the client's own word: ignored."""
    address, _ = new_account(http)
    codes = [
        http.post(
            "/api/auth/token",
            data={"username": address, "password": f"guess {i} guess"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        ).status_code
        for i in range(6)
    ]
    assert codes == [401] * 5 + [429]


def test_token_rate_limit_counts_what_replies_used(limited_app: str) -> None:
    headers = register_and_login(limited_app)
    long_prompt = "word " * 400  # ~400 prompt tokens: more than the 300/minute allowance
    with httpx.Client(base_url=limited_app, headers=headers, timeout=60) as http:
        ask = {"model": "auto", "messages": [{"role": "user", "content": long_prompt}]}
        first = http.post("/v1/chat/completions", json=ask)
        assert first.status_code == 200, first.text
        second = http.post("/v1/chat/completions", json=ask)
        assert second.status_code == 429
        assert "too many tokens" in second.json()["error"]["message"]
        assert int(second.headers["retry-after"]) >= 1


def test_answers_carry_security_headers(http: httpx.Client) -> None:
    """Issue 9, item 16: framing, sniffing and referrers are ruled by HTTP headers (the
    page's `<meta>` CSP cannot forbid framing), on the page, the API and its errors."""
    for path in ("/", "/api/me", "/healthz"):
        headers = http.get(path).headers
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "strict-transport-security" not in headers  # plain http in tests
    assert "script-src 'self'" in http.get("/").headers["content-security-policy"]
