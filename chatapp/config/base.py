"""What every settings section shares: how it reads its prefix from the environment."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = "You are ChatApp, a helpful assistant. Answer clearly and concisely."
PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev-secret-change-me"}


def section(prefix: str) -> SettingsConfigDict:
    """A section reading variables `<PREFIX>NAME` from the environment and `.env`."""
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore", frozen=True)
