"""Access tokens: only ours, unexpired, for us, untampered, HS256 only."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chatapp.auth.passwords import check_password_strength, hash_password, verify_password
from chatapp.auth.tokens import (
    InvalidToken,
    TokenExpired,
    create_access_token,
    decode_access_token,
)
from chatapp.errors import InvalidRequest

SECRET = "s" * 48
USER, SESSION = uuid.uuid4(), uuid.uuid4()


def issue(**kw: object) -> str:
    args: dict[str, object] = dict(
        session_id=SESSION, secret=SECRET, ttl=timedelta(minutes=5), issuer="chatapp",
        audience="chatapp-api",
    )  # fmt: skip
    args.update(kw)
    return create_access_token(USER, **args)  # type: ignore[arg-type]


def decode(token: str) -> object:
    return decode_access_token(token, secret=SECRET, issuer="chatapp", audience="chatapp-api")


def test_round_trip() -> None:
    claims = decode(issue())
    assert claims.user_id == USER and claims.session_id == SESSION  # type: ignore[attr-defined]


def forged(header: dict[str, object], payload: dict[str, object], signature: bytes = b"") -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(payload)}.{base64.urlsafe_b64encode(signature).decode()}"


def good_payload() -> dict[str, object]:
    return jwt.decode(issue(), options={"verify_signature": False})  # type: ignore[no-any-return]


def test_alg_none_is_rejected() -> None:
    with pytest.raises(InvalidToken):
        decode(forged({"alg": "none", "typ": "JWT"}, good_payload()))


def test_hs256_signed_with_an_rsa_public_key_is_rejected() -> None:
    public_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    token = forged({"alg": "HS256", "typ": "JWT"}, good_payload())
    import hmac
    from hashlib import sha256

    signing_input = token.rsplit(".", 1)[0].encode()
    sig = hmac.new(public_pem, signing_input, sha256).digest()
    token = token.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        decode(token)


def test_expired_and_not_yet_valid() -> None:
    with pytest.raises(TokenExpired):
        decode(issue(now=datetime.now(UTC) - timedelta(hours=1)))
    with pytest.raises(InvalidToken):
        decode(issue(now=datetime.now(UTC) + timedelta(hours=1)))


@pytest.mark.parametrize(
    "kw", [{"issuer": "evil"}, {"audience": "other-app"}, {"secret": "x" * 48}]
)
def test_wrong_issuer_audience_or_key(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidToken):
        decode(issue(**kw))


def test_tampered_payload() -> None:
    header, _, signature = issue().split(".")
    payload = good_payload() | {"sub": str(uuid.uuid4())}
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        decode(f"{header}.{body}.{signature}")


def test_passwords_hash_and_rules() -> None:
    hashed = hash_password("a long enough passphrase")
    assert hashed.startswith("$argon2") and "passphrase" not in hashed
    assert verify_password("a long enough passphrase", hashed)
    assert not verify_password("wrong", hashed)
    assert not verify_password("anything", None)  # unknown user: still a full verify
    for weak in ("short", "password123", "aaaaaaaaaaaa", "me@example.com"):
        with pytest.raises(InvalidRequest, match="password"):
            check_password_strength(weak, email="me@example.com", min_length=10)
