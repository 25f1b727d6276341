"""Where state lives: the database, Redis, the response cache, usage accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from chatapp.config.base import section


class DatabaseSettings(BaseSettings):
    """Where conversations live. SQLite under ``var_dir`` unless ``DATABASE_URL`` is set."""

    model_config = section("DATABASE_")

    url: str | None = Field(
        None,
        description="SQLAlchemy async URL, e.g. postgresql+asyncpg://user@host/db. "
        "Unset: a SQLite file under var_dir.",
    )
    var_dir: Path = Field(Path("var"), description="Folder for the embedded SQLite database.")
    echo: bool = Field(False, description="Log every SQL statement (debugging only).")
    pool_size: int = Field(
        5,
        ge=1,
        description="PostgreSQL connections kept per process (as many again when busy). "
        "Every ingress replica and every shard actor has its own pool: keep "
        "2 x pool_size x (ingress replicas + SHARDS_COUNT) under max_connections.",
    )
    pool_pre_ping: bool = Field(
        False,
        description="Test each pooled connection with a round trip before using it "
        "(PostgreSQL). Off by default: it costs a round trip per transaction on the chat "
        "path. Without it a database restart fails the requests on a pooled connection at "
        "that moment; the first such failure refreshes the whole pool.",
    )
    pool_recycle_s: float = Field(
        1800, gt=0, description="Replace pooled connections older than this (PostgreSQL)."
    )

    def resolved_url(self) -> str:
        """The URL to connect to, with the embedded default filled in."""
        if self.url:
            url = self.url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'chatapp.db').resolve()}"


class RedisSettings(BaseSettings):
    """Shared cache and rate-limit counters. Unset: in-process (one replica's view only)."""

    model_config = section("REDIS_")

    url: str | None = Field(None, description="e.g. redis://127.0.0.1:6379/0")
    key_prefix: str = Field("chatapp:", description="Prefix of every key ChatApp writes.")


class CacheSettings(BaseSettings):
    """Exact-match response cache (Redis when REDIS_URL is set, else in-process)."""

    model_config = section("CACHE_")

    enabled: bool = Field(True, description="Serve repeated requests from the cache.")
    ttl_s: int = Field(3600, ge=1, description="Seconds an answer stays cached.")
    scope: Literal["user", "shared"] = Field(
        "user", description="'user': each user has their own entries; 'shared': one for all."
    )
    max_entries: int = Field(10_000, ge=1, description="In-process cache: entries kept.")


class UsageSettings(BaseSettings):
    """Usage accounting and budgets."""

    model_config = section("USAGE_")

    monthly_token_budget: int | None = Field(
        None, ge=1, description="Tokens per user per calendar month (UTC); unset: unlimited."
    )
    flush_interval_s: float = Field(
        1.0,
        gt=0,
        description="How long a usage row may wait in memory before the ledger writes it "
        "(rows are written in batches, off the turn's path).",
    )
