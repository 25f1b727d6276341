"""Attacks through the OIDC login (issue 9), played against the running app with the
local test IdP: each failed before its fix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.accounts import email, idp_login, tokens_of


@pytest.fixture
def http(chat_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_app, timeout=60) as client:
        yield client


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
