"""Serving a turn: shards, Serve and HTTP, conversation behaviour."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

from chatapp.config.base import DEFAULT_SYSTEM_PROMPT, section


class ShardSettings(BaseSettings):
    """Conversation shard actors: many hot conversations per actor, SQL behind them."""

    model_config = section("SHARDS_")

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

    model_config = section("SERVE_")

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
    graceful_shutdown_timeout_s: float = Field(
        300.0,
        ge=0,
        description="A replica being removed (downscaling, a redeploy, a drained node) stops "
        "taking requests and lets its streams run this long before it is stopped: at least "
        "the longest answer (PROVIDERS_TOTAL_TIMEOUT_S), so no reply is cut.",
    )
    autoscaling_look_back_period_s: float = Field(
        30.0,
        gt=0,
        description="Autoscaling: in-flight requests are averaged over this window (Serve's "
        "look_back_period_s); shorter reacts sooner to a load step, longer rides out bursts.",
    )
    autoscaling_metrics_interval_s: float = Field(
        10.0,
        gt=0,
        description="Autoscaling: how often replicas and callers report their in-flight "
        "requests to Serve's controller (Serve's metrics_interval_s); below the look-back "
        "period.",
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

    @model_validator(mode="after")
    def _look_back_spans_reports(self) -> ServeSettings:
        if self.autoscaling_look_back_period_s <= self.autoscaling_metrics_interval_s:
            raise ValueError(
                "SERVE_AUTOSCALING_LOOK_BACK_PERIOD_S must be longer than "
                "SERVE_AUTOSCALING_METRICS_INTERVAL_S (the window averages several reports)"
            )
        return self


class ChatSettings(BaseSettings):
    """Conversation behaviour."""

    model_config = section("CHAT_")

    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System prompt of every turn.")
    summaries: bool = Field(
        True,
        description="Long chats: when a conversation outgrows the model's window, its older "
        "turns are summarised by the model in the background (a running summary, rewritten as "
        "the chat grows) and the prompt holds the summary instead of dropping them.",
    )
    summary_threshold: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Summarise once the prompt (system, summary, unsummarised turns and the "
        "reply's max_tokens) needs more than this fraction of the model's window "
        "(LLM_CONTEXT_WINDOW).",
    )
    summary_recent_share: float = Field(
        0.4,
        gt=0,
        lt=1,
        description="Fraction of the window kept for recent turns, verbatim, when summarising: "
        "older turns go into the summary.",
    )
    summary_max_tokens: int = Field(
        256, ge=16, le=4096, description="Longest summary the model may write."
    )
    max_message_chars: int = Field(
        32_000, ge=1, description="Longest user message accepted (422 above)."
    )
    max_title_chars: int = Field(200, ge=1, description="Longest conversation title.")
    max_images: int = Field(
        8, ge=0, description="Images (`image_url` parts) one /v1 request may hold (413 above)."
    )
    max_image_bytes: int = Field(
        5 * 1024 * 1024,
        ge=1,
        description="Decoded size of one data-URL image (413 above); https image URLs are "
        "passed to the provider, never fetched by ChatApp.",
    )
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
    import_max_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        description="Largest file `POST /api/conversations/import` accepts (413 above); "
        "that route's body may be this large whatever SERVE_MAX_BODY_BYTES says.",
    )
    import_max_conversations: int = Field(
        1000, ge=1, description="Conversations one import may hold (413 above)."
    )
    import_max_messages: int = Field(
        50_000,
        ge=1,
        description="Messages one import may hold, all conversations together (413 above).",
    )
    share_view_limit: str = Field(
        "120/minute",
        description="Views of shared conversations (`GET /api/shares/{token}`, no login) per "
        "client IP address.",
    )
