"""A local OpenID Connect provider for tests: discovery, JWKS, authorize (auto-approves
the scripted user) and token endpoints, with PKCE checked and scriptable misbehaviour."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.servers import BackgroundServer

CLIENT_ID = "chatapp-test"
CLIENT_SECRET = "test-client-secret"
DEFAULT_USER = {"sub": "idp-1", "email": "oidc@example.com", "email_verified": True}


@dataclass
class FakeIssuer:
    """Set `user` before a login; flip the flags to misbehave."""

    user: dict[str, Any] = field(
        default_factory=lambda: {
            "sub": "idp-1",
            "email": "oidc@example.com",
            "email_verified": True,
        }
    )
    wrong_nonce: bool = False
    wrong_audience: bool = False
    sign_with_other_key: bool = False
    hs256_with_jwks_key: bool = False  # algorithm confusion: HMAC keyed with the public key
    expired: bool = False
    wrong_issuer: bool = False
    url: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    other_key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"})
    )
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    async def discovery(self, _: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, _: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return JSONResponse({"error": "invalid_request", "error_description": "PKCE"}, 400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "nonce": q.get("nonce"),
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
            "user": dict(self.user),
        }
        return RedirectResponse(
            f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302
        )

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await request.form()
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if challenge.rstrip(b"=").decode() != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        now = int(time.time()) - (3600 if self.expired else 0)
        claims = {
            "iss": "https://evil.example" if self.wrong_issuer else self.url,
            "aud": "someone-else" if self.wrong_audience else CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": "not-the-nonce" if self.wrong_nonce else grant["nonce"],
            **grant["user"],
        }
        key = self.other_key if self.sign_with_other_key else self.key
        if self.hs256_with_jwks_key:
            public = json.dumps(self.key.as_dict(private=False)).encode()
            hmac_key = OctKey.import_key(public)
            id_token = jwt.encode({"alg": "HS256", "kid": "k1"}, claims, hmac_key)
        else:
            id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }
        )

    def reset(self) -> None:
        """Back to a well-behaved provider with the default user."""
        self.wrong_nonce = self.wrong_audience = self.sign_with_other_key = False
        self.hs256_with_jwks_key = self.expired = self.wrong_issuer = False
        self.user = dict(DEFAULT_USER)


def start_issuer() -> tuple[FakeIssuer, BackgroundServer]:
    issuer = FakeIssuer()
    server = BackgroundServer(issuer.app()).__enter__()
    issuer.url = server.url
    return issuer, server
