"""Login with external OpenID Connect providers (Authlib OAuth2 client, joserfc for the
ID token): authorization code with PKCE,
state and nonce checked, the ID token verified against the provider's JWKS.

The login's state, nonce and PKCE verifier travel in a short-lived signed, HttpOnly
cookie, so any ingress replica can finish a login another one started.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from chatapp.config import OidcProvider
from chatapp.errors import InvalidRequest, PermissionDenied, ServiceUnavailable

STATE_TTL_S = 600
_STATE_AUDIENCE = "chatapp-oidc-login"
_ID_TOKEN_ALGS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


@dataclass(frozen=True, slots=True)
class LoginState:
    provider: str
    state: str
    nonce: str
    code_verifier: str
    link_user: str | None = None  # set when a logged-in user links this provider


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    email: str | None
    email_verified: bool
    name: str


def email_verified_claim(claims: Mapping[str, Any]) -> bool:
    """Whether the ID token says the provider verified the email: JSON `true`, or the
    string "true" in any case (AWS Cognito and some SAML bridges send strings). Anything
    else, "false" and 1 included, is unverified: `bool("false")` would be True."""
    value = claims.get("email_verified")
    return value is True or (isinstance(value, str) and value.lower() == "true")


def seal_state(login: LoginState, *, secret: str) -> str:
    claims = {
        "aud": _STATE_AUDIENCE,
        "exp": int(time.time()) + STATE_TTL_S,
        "p": login.provider,
        "s": login.state,
        "n": login.nonce,
        "v": login.code_verifier,
    }
    if login.link_user is not None:
        claims["u"] = login.link_user
    return jwt.encode(claims, secret, algorithm="HS256")


def open_state(sealed: str | None, *, secret: str) -> LoginState:
    if not sealed:
        raise InvalidRequest("the login expired or was started in another browser; try again")
    try:
        c = jwt.decode(sealed, secret, algorithms=["HS256"], audience=_STATE_AUDIENCE)
    except jwt.InvalidTokenError as exc:
        raise InvalidRequest("the login expired or was tampered with; try again") from exc
    return LoginState(
        provider=c["p"], state=c["s"], nonce=c["n"], code_verifier=c["v"], link_user=c.get("u")
    )


class OidcClient:
    """One configured provider. Discovery and keys are fetched once and cached."""

    def __init__(
        self,
        provider: OidcProvider,
        *,
        redirect_uri: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self._redirect_uri = redirect_uri
        self._transport = transport
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.provider.client_id,
            client_secret=self.provider.client_secret.get_secret_value(),
            scope=self.provider.scopes,
            redirect_uri=self._redirect_uri,
            code_challenge_method="S256",
            transport=self._transport,
            timeout=10,
        )

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=10) as http:
                response = await http.get(url)
                response.raise_for_status()
                data: dict[str, Any] = response.json()
                return data
        except (httpx.HTTPError, ValueError) as exc:
            raise ServiceUnavailable(
                f"the login provider {self.provider.display_name} cannot be reached; try later"
            ) from exc

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = self.provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
            meta = await self._get_json(url)
            if meta.get("issuer") != self.provider.issuer:
                raise ServiceUnavailable(
                    f"{self.provider.name}: discovery issuer {meta.get('issuer')!r} does not "
                    f"match the configured {self.provider.issuer!r}"
                )
            self._metadata = meta
        return self._metadata

    async def _keys(self, *, refresh: bool = False) -> dict[str, Any]:
        if self._jwks is None or refresh:
            self._jwks = await self._get_json((await self.metadata())["jwks_uri"])
        return self._jwks

    async def start(self, *, link_user: str | None = None) -> tuple[str, LoginState]:
        """The provider's authorization URL to send the browser to, and what to remember;
        `link_user`: the account that links this provider instead of logging in."""
        login = LoginState(
            provider=self.provider.name,
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),
            link_user=link_user,
        )
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                (await self.metadata())["authorization_endpoint"],
                state=login.state,
                nonce=login.nonce,
                code_verifier=login.code_verifier,
            )
        return url, login

    async def finish(self, *, code: str, state: str, login: LoginState) -> Identity:
        """Exchange the code and verify the ID token; `PermissionDenied` if anything is off."""
        if login.provider != self.provider.name or state != login.state:
            raise InvalidRequest("the login state does not match; start the login again")
        meta = await self.metadata()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    meta["token_endpoint"], code=code, code_verifier=login.code_verifier
                )
        except Exception as exc:  # Authlib raises OAuthError or httpx errors
            raise PermissionDenied(
                f"{self.provider.display_name} refused the login code; start the login again"
            ) from exc
        id_token = token.get("id_token")
        if not id_token:
            raise PermissionDenied(f"{self.provider.display_name} sent no ID token")
        claims = await self._verify(id_token, login)
        email = claims.get("email")
        return Identity(
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) else None,
            email_verified=email_verified_claim(claims),
            name=str(claims.get("name") or ""),
        )

    async def _verify(self, id_token: str, login: LoginState) -> dict[str, Any]:
        registry = jose_jwt.JWTClaimsRegistry(
            leeway=30,
            iss={"essential": True, "value": self.provider.issuer},
            aud={"essential": True, "value": self.provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": login.nonce},
        )
        for refresh in (False, True):  # on a key rotation, fetch the JWKS once more
            keys = KeySet.import_key_set(await self._keys(refresh=refresh))  # type: ignore[arg-type]
            try:
                token = jose_jwt.decode(id_token, keys, algorithms=_ID_TOKEN_ALGS)
            except ValueError:  # no key with this kid
                continue
            except JoseError as exc:
                raise PermissionDenied(f"the ID token was rejected: {exc.error}") from exc
            try:
                registry.validate(token.claims)
            except JoseError as exc:
                raise PermissionDenied(f"the ID token was rejected: {exc.error}") from exc
            return dict(token.claims)
        raise PermissionDenied("the ID token is signed with an unknown key")
