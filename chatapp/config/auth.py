"""Accounts, login and per-user limits."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from chatapp.config.base import section


class OidcProvider(BaseModel):
    """An external OpenID Connect provider users can log in with."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Slug in URLs.")
    display_name: str = Field(..., description="Shown on the login button.")
    issuer: str = Field(..., description="Issuer URL; its discovery document is read from it.")
    client_id: str = Field(..., description="OAuth2 client id registered with the provider.")
    client_secret: SecretStr = Field(..., description="OAuth2 client secret.")
    scopes: str = Field("openid email profile", description="Scopes asked for.")


class AuthSettings(BaseSettings):
    """Accounts, tokens, login providers and rate limits."""

    model_config = section("AUTH_")

    access_token_ttl_s: int = Field(900, ge=30, description="Lifetime of a JWT access token.")
    refresh_token_ttl_s: int = Field(
        30 * 24 * 3600, ge=60, description="Lifetime of a refresh token (rotated on each use)."
    )
    issuer: str = Field("chatapp", description="`iss` of issued access tokens.")
    audience: str = Field("chatapp-api", description="`aud` of issued access tokens.")
    registration_open: bool = Field(True, description="Anyone may register with a password.")
    admin_emails: list[str] = Field(
        default_factory=list,
        description="Emails made admins once an OIDC provider has verified them (JSON list); "
        "registering one with a password does not. Others: `chatapp admin grant EMAIL`.",
    )
    password_min_length: int = Field(10, ge=8, description="Shortest password accepted.")
    chat_request_limit: str = Field("60/minute", description="Chat requests per user.")
    chat_token_limit: str = Field("200000/minute", description="Chat tokens per user.")
    login_ip_limit: str = Field("30/15minutes", description="Login attempts per client IP.")
    login_failure_limit: str = Field(
        "5/15minutes",
        description="Password checks per account and client address (login, password change, "
        "account deletion, provider linking) before that client is refused for a while; a "
        "correct password clears it.",
    )
    login_account_failure_limit: str = Field(
        "50/hour",
        description="Password checks per account from all clients together: the ceiling "
        "for guessing from many addresses (AUTH_LOGIN_FAILURE_LIMIT counts per account and "
        "client, so one client's guesses do not lock the owner out elsewhere).",
    )
    register_ip_limit: str = Field("20/hour", description="Registrations per client IP.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='Addresses or networks (JSON list, e.g. ["10.0.0.0/8"]) of the proxies '
        "in front of ChatApp whose X-Forwarded-For is believed for the client address; "
        "empty: the header is ignored and the client is the connection's peer.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser."
    )
    public_url: str = Field(
        "http://localhost:8000", description="Base URL users reach ChatApp at (OIDC redirects)."
    )
    oidc_providers: list[OidcProvider] = Field(
        default_factory=list, description="OIDC providers as a JSON list (AUTH_OIDC_PROVIDERS)."
    )
    cache_ttl_s: float = Field(
        60.0,
        ge=0,
        description="How long a replica remembers who an access token or API key belongs to "
        "(one Redis read per request instead of a SQL query); logout, disabling, password "
        "changes and key revocation still take effect at once. Needs REDIS_URL (without it "
        "nothing is cached); 0 turns the cache off.",
    )
    cache_max_entries: int = Field(
        50_000, ge=1, description="Credentials a replica remembers at most (least recent go)."
    )
    refresh_reuse_grace_s: float = Field(
        10.0,
        ge=0,
        description="A refresh token presented again this soon after its use (two tabs "
        "refreshing at once) gets a new access token instead of ending the session.",
    )
    hsts_max_age_s: int | None = Field(
        None,
        ge=0,
        description="Strict-Transport-Security max-age sent with every response (0: none). "
        "Unset: one year in production when AUTH_PUBLIC_URL is https://, else none.",
    )
    cookie_secure: bool | None = Field(
        None,
        description="Mark the refresh-token cookie Secure (sent over HTTPS only). Unset: when "
        "AUTH_PUBLIC_URL is https://; set false only for plain-http development.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"AUTH_TRUSTED_PROXIES: {network!r} is no address or network"
                ) from exc
        return value
