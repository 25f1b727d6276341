"""The registry of self-hosted engines: settings in, a `ChatEngine` out."""

from __future__ import annotations

from chatapp.config import LLMSettings
from chatapp.llm.base import ChatEngine


def build_chat_engine(settings: LLMSettings) -> ChatEngine:
    """The engine `settings.engine` names; heavy imports happen in `start()`."""
    if settings.engine == "llamacpp":
        from chatapp.llm.llamacpp import LlamaCppEngine
        from chatapp.llm.weights import default_gguf_path

        return LlamaCppEngine(
            gguf_path=settings.gguf_path or default_gguf_path(),
            model_name=settings.model_name,
            context_window=settings.context_window,
            n_threads=settings.n_threads,
        )
    if settings.engine == "vllm":
        from chatapp.llm.convert import ensure_hf_model
        from chatapp.llm.vllm import VLLMEngine
        from chatapp.llm.weights import default_gguf_path

        model_dir = settings.hf_model_dir or ensure_hf_model(
            settings.gguf_path or default_gguf_path(),
            settings.var_dir / "models" / "SmolLM2-135M-Instruct-hf",
        )
        return VLLMEngine(
            model_dir=model_dir,
            model_name=settings.model_name,
            context_window=settings.context_window,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            dtype=settings.dtype,
            kv_cache_memory_bytes=settings.kv_cache_memory_bytes,
        )
    from chatapp.llm.simulated import SimulatedEngine

    return SimulatedEngine(
        model_name=settings.model_name,
        context_window=settings.context_window,
        tokens_per_s=settings.simulated_tokens_per_s,
        reply_tokens=settings.simulated_reply_tokens,
        fail_after_tokens=settings.simulated_fail_after_tokens,
    )
