"""ID-token claims are read strictly (issue 9, item 5)."""

from __future__ import annotations

from typing import Any

import pytest

from chatapp.auth.oidc import email_verified_claim


@pytest.mark.parametrize(
    ("claim", "verified"),
    [
        (True, True),
        ("true", True),  # some IdPs (AWS Cognito) send the claim as a string
        ("TRUE", True),
        (False, False),
        ("false", False),  # a non-empty string: truthy in Python, yet not verified
        ("False", False),
        ("0", False),
        ("yes", False),
        (" true", False),
        (1, False),
        (None, False),
        ([True], False),
    ],
)
def test_email_verified_is_parsed_strictly(claim: Any, verified: bool) -> None:
    assert email_verified_claim({"email_verified": claim}) is verified


def test_a_missing_email_verified_is_not_verified() -> None:
    assert email_verified_claim({}) is False
