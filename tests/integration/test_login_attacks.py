"""Attack tests of issue 9's "also, as suites" against the running app: access tokens
signed with the real key but the wrong issuer, audience or no session; a session id of
someone else; logins and registrations with case and Unicode variants of an email."""

from __future__ import annotations

import time
import unicodedata
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from chatapp.config import Settings
from tests.integration.accounts import PASSWORD, bearer, email, login, register


@pytest.fixture
def http(chat_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_app, timeout=60) as client:
        yield client


def signed(app_overrides: dict[str, Any], **claims: Any) -> str:
    """A token signed with the app's own key (what a leaked-issuer bug would mint)."""
    settings = Settings.from_overrides(app_overrides)
    now = int(time.time())
    body = {
        "iss": settings.auth.issuer,
        "aud": settings.auth.audience,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode({k: v for k, v in body.items() if v is not None}, settings.secret_key)


def test_correctly_signed_tokens_with_wrong_claims_are_refused(
    http: httpx.Client, app_overrides: dict[str, Any]
) -> None:
    address = email()
    assert register(http, address).status_code == 201
    tokens = login(http, address)
    good = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    sub, sid = good["sub"], good["sid"]
    other = email()
    register(http, other)
    other_sid = jwt.decode(login(http, other)["access_token"], options={"verify_signature": False})
    genuine = signed(app_overrides, sub=sub, sid=sid)
    assert http.get("/api/me", headers=bearer({"access_token": genuine})).status_code == 200
    for flaw in (
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"sid": None},  # no session: could never be revoked
        {"sid": other_sid["sid"]},  # another user's session
        {"sid": str(uuid.uuid4())},  # a session that never existed
        {"sub": other_sid["sub"]},  # another user with this session
        {"exp": int(time.time()) - 60},
    ):
        token = signed(app_overrides, **{"sub": sub, "sid": sid, **flaw})
        answer = http.get("/api/me", headers=bearer({"access_token": token}))
        assert answer.status_code == 401, (flaw, answer.text)


def test_login_finds_the_account_under_case_and_unicode_variants(http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    address = f"jos\u00e9-{tag}@example.com"  # composed é (NFC)
    assert register(http, address).status_code == 201
    for variant in (
        address.upper(),
        f"  {address}  ",
        unicodedata.normalize("NFD", address),  # e + combining accent, as macOS types it
    ):
        answer = http.post("/api/auth/token", data={"username": variant, "password": PASSWORD})
        assert answer.status_code == 200, (variant, answer.text)


def test_a_lookalike_of_an_existing_email_is_the_same_account(http: httpx.Client) -> None:
    """Fullwidth letters (and other compatibility forms) register a second account that
    looks like the first in every admin list; they are the same address."""
    tag = uuid.uuid4().hex[:8]
    address = f"ada-{tag}@example.com"
    assert register(http, address).status_code == 201
    fullwidth = "\uff41\uff44\uff41" + f"-{tag}@example.com"  # "ada" in fullwidth letters
    assert register(http, fullwidth).status_code == 409
    assert register(http, unicodedata.normalize("NFD", address.upper())).status_code == 409
    answer = http.post("/api/auth/token", data={"username": fullwidth, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
