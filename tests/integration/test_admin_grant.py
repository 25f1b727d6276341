"""Admin by registration (issue 9, item 1): a listed admin email makes an admin only when
an OIDC provider verified it, or when ops grant the role with `chatapp admin grant`.
Each attack test failed before the fix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatapp.auth.service import register_user
from chatapp.config import AuthSettings
from deployments.cli import main
from tests.conftest import ADMIN_EMAIL
from tests.integration.accounts import (
    PASSWORD,
    bearer,
    email,
    forget_account,
    idp_login,
    login,
    register,
    tokens_of,
)


@pytest.fixture
def http(chat_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_app, timeout=60) as client:
        yield client


async def test_registering_a_listed_admin_email_in_another_case_gives_a_plain_user(
    sessionmaker: Any,
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = AuthSettings(admin_emails=[f"a-{tag}@x.com"])
    async with sessionmaker() as session:
        user = await register_user(
            session=session,
            settings=settings,
            email=f"A-{tag}@x.com",
            password=PASSWORD,
            display_name="",
        )
        assert user.email == f"a-{tag}@x.com" and user.role == "user"


def test_registering_the_admin_email_gives_no_admin_until_ops_grant_it(
    http: httpx.Client,
    pg_url: str,
    app_overrides: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    forget_account(pg_url, ADMIN_EMAIL)  # as on a fresh server
    # anyone may register the listed address (in another case) with their own password
    created = register(http, ADMIN_EMAIL.upper())
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "user"
    tokens = login(http, ADMIN_EMAIL)
    assert http.get("/api/admin/users", headers=bearer(tokens)).status_code == 403

    # ops make it an admin with the CLI, which talks to the database directly
    # (and its Redis, so the replicas drop the role they cached for this token at once)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", app_overrides["redis"]["url"])
    monkeypatch.setenv("REDIS_KEY_PREFIX", app_overrides["redis"]["key_prefix"])
    assert main(["admin", "grant", ADMIN_EMAIL.upper()]) == 0
    assert f"{ADMIN_EMAIL} is now an admin" in capsys.readouterr().out
    assert http.get("/api/admin/users", headers=bearer(tokens)).status_code == 200
    assert http.get("/api/me", headers=bearer(tokens)).json()["role"] == "admin"
    assert main(["admin", "list"]) == 0
    assert f"{ADMIN_EMAIL}\temail not verified" in capsys.readouterr().out

    assert main(["admin", "revoke", ADMIN_EMAIL]) == 0
    assert http.get("/api/admin/users", headers=bearer(tokens)).status_code == 403
    # an unknown address is an error that says what to do
    assert main(["admin", "grant", email()]) == 2
    assert "register or log in first" in capsys.readouterr().err
    assert main(["admin", "grant", ADMIN_EMAIL]) == 0  # the admin other tests log in as


def test_a_listed_email_verified_by_the_idp_makes_an_admin(
    http: httpx.Client, oidc_issuer: Any, pg_url: str
) -> None:
    forget_account(pg_url, ADMIN_EMAIL)
    oidc_issuer.reset()
    sub = f"sub-{uuid.uuid4().hex}"
    try:
        oidc_issuer.user = {"sub": sub, "email": ADMIN_EMAIL.upper(), "email_verified": "false"}
        assert idp_login(http).status_code == 403  # not verified: no account at all
        oidc_issuer.user["email_verified"] = True
        tokens = tokens_of(idp_login(http))
        assert tokens is not None
        assert http.get("/api/me", headers=bearer(tokens)).json()["role"] == "admin"
        assert http.get("/api/admin/users", headers=bearer(tokens)).status_code == 200
    finally:
        oidc_issuer.reset()
        forget_account(pg_url, ADMIN_EMAIL)  # other tests register it with a password
