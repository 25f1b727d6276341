"""Where state lives: the database, Redis, the response cache, usage accounting."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
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
    read_url: str | None = Field(
        None,
        description="A PostgreSQL streaming replica for reads that tolerate a little lag "
        "(conversation lists and search, history pages, usage reports); the chat turn and "
        "the shards always use `url`. Unreachable: those reads go to `url` until it is back. "
        "Unset: every read goes to `url`.",
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

    @model_validator(mode="after")
    def _replica_needs_postgres(self) -> DatabaseSettings:
        if self.read_url and not (self.url and self.url.startswith("postgres")):
            raise ValueError(
                "DATABASE_READ_URL names a replica of a PostgreSQL primary: set DATABASE_URL "
                "to that primary too, or unset DATABASE_READ_URL"
            )
        return self

    def resolved_url(self) -> str:
        """The URL to connect to, with the embedded default filled in."""
        if self.url:
            return _asyncpg(self.url)
        return f"sqlite+aiosqlite:///{(self.var_dir / 'chatapp.db').resolve()}"

    def resolved_read_url(self) -> str | None:
        """The replica's URL (asyncpg), or None when reads go to the primary."""
        return _asyncpg(self.read_url) if self.read_url else None


def _asyncpg(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


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
