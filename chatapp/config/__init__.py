"""ChatApp settings: one `Settings` of nested sections, read from the environment and `.env`.

Each section reads its own prefix, so the well-known variables work as users expect:
``DATABASE_URL``, ``LLM_ENGINE``, ``SHARDS_COUNT``, ``SERVE_PORT`` and so on.

Settings are built only at entrypoints (the Serve builder, Alembic's env, the CLI)
and passed down explicitly; nothing in the package builds them at import time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatapp.config.auth import AuthSettings, OidcProvider
from chatapp.config.base import PLACEHOLDER_SECRETS
from chatapp.config.embeddings import EmbeddingsSettings
from chatapp.config.models import LLMSettings, ModelEntry, ProviderEndpoint, ProvidersSettings
from chatapp.config.observability import LogSettings, ReadinessSettings
from chatapp.config.rag import RagSettings
from chatapp.config.serving import ChatSettings, ServeSettings, ShardSettings
from chatapp.config.storage import CacheSettings, DatabaseSettings, RedisSettings, UsageSettings
from chatapp.config.tracing import TracingSettings

__all__ = [
    "AuthSettings",
    "CacheSettings",
    "ChatSettings",
    "DatabaseSettings",
    "EmbeddingsSettings",
    "LLMSettings",
    "LogSettings",
    "ModelEntry",
    "OidcProvider",
    "ProviderEndpoint",
    "ProvidersSettings",
    "RagSettings",
    "ReadinessSettings",
    "RedisSettings",
    "ServeSettings",
    "Settings",
    "ShardSettings",
    "TracingSettings",
    "UsageSettings",
]


class Settings(BaseSettings):
    """All ChatApp settings."""

    model_config = SettingsConfigDict(
        env_prefix="CHATAPP_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["development", "production"] = Field(
        "development", description="'production' refuses placeholder secrets."
    )
    secret_key: str = Field(
        "dev-secret-change-me", description="Signing secret; must be set in production."
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    shards: ShardSettings = Field(default_factory=ShardSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    embeddings: EmbeddingsSettings = Field(default_factory=EmbeddingsSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    readiness: ReadinessSettings = Field(default_factory=ReadinessSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None = None) -> Settings:
        """Settings from the environment with `overrides` on top, section by section
        (e.g. ``{"llm": {"engine": "simulated"}}``); a section's other fields still come
        from its environment variables."""
        values: dict[str, Any] = {}
        for name, value in (overrides or {}).items():
            field = cls.model_fields.get(name)
            if field is None:
                raise ValueError(f"unknown settings section or field: {name!r}")
            section = field.annotation
            if (
                isinstance(value, dict)
                and isinstance(section, type)
                and issubclass(section, BaseSettings)
            ):
                values[name] = section(**value)
            else:
                values[name] = value
        return cls(**values)

    def api_docs_enabled(self) -> bool:
        """Whether /docs, /redoc and /openapi.json are served."""
        if self.serve.docs_enabled is not None:
            return self.serve.docs_enabled
        return self.environment != "production"

    def metrics_access(self) -> Literal["off", "public", "token"]:
        """Who may read /metrics: nobody, anyone, or who presents `serve.metrics_token`."""
        if not self.serve.metrics_enabled:
            return "off"
        if self.serve.metrics_token is not None and self.serve.metrics_token.get_secret_value():
            return "token"
        return "public" if self.environment != "production" else "off"

    def hsts_max_age_s(self) -> int:
        """Strict-Transport-Security max-age to send (0: none)."""
        if self.auth.hsts_max_age_s is not None:
            return self.auth.hsts_max_age_s
        https = self.auth.public_url.startswith("https://")
        return 365 * 24 * 3600 if self.environment == "production" and https else 0

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment == "production" and (
            self.secret_key in PLACEHOLDER_SECRETS or len(self.secret_key) < 32
        ):
            raise ValueError(
                "CHATAPP_SECRET_KEY must be set to a random value of 32+ characters in "
                "production (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return self
