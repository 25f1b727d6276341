"""The two model interfaces and the chunks they stream.

- `ChatEngine`: a self-hosted model (llama.cpp, vLLM, simulated) inside ChatApp; it
  counts tokens with its own tokenizer and expects a prompt already fitted to its window.
- `ChatProvider`: where answers come from, as the router sees it: an external API or the
  self-hosted model behind its deployment.

Both turn a list of chat messages into a stream of typed chunks: zero or more
`TextDelta`, then exactly one `Finish` carrying usage and the finish reason; a failure,
before or after the first chunk, is raised as a `chatapp.errors.ChatAppError`. The whole
answer, when a caller wants it, is collected from that stream (`collect`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # The caller wants the answer in one piece (a non-streamed request): a provider may
    # make one non-streamed call and yield it as a single delta, which costs far less CPU
    # than parsing a chunk per token. Not part of the answer: the cache key leaves it out.
    whole: bool = False


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Generated text; after coalescing it may hold many tokens."""

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class Finish:
    """The last chunk of every stream."""

    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    model: str = ""
    provider: str = ""  # who answered: "openai", "anthropic", "self-hosted", ...
    cost_usd: float = 0.0
    cached: bool = False  # replayed from the response cache
    fallback_from: str | None = None  # the model that failed before this one answered


Chunk = TextDelta | Finish


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer collected from a stream."""

    text: str
    finish: Finish


class ChatEngine(abc.ABC):
    """A model that streams chat completions. Implementations: llama.cpp, vLLM, simulated."""

    model_name: str
    context_window: int

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights; called once before the first request."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @abc.abstractmethod
    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens of `messages` as this model sees them (chat template included)."""

    @abc.abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[TextDelta | Finish]:
        """Generate a reply; the prompt is already fitted to `context_window`."""


async def collect(chunks: AsyncIterator[Chunk]) -> Completion:
    """Collect a stream into one `Completion` (the stream's own errors propagate)."""
    from chatapp.errors import ProviderError

    parts: list[str] = []
    async for chunk in chunks:
        if isinstance(chunk, Finish):
            return Completion(text="".join(parts), finish=chunk)
        parts.append(chunk.text)
    raise ProviderError("the model stream ended without a finish event")


class ChatProvider(abc.ABC):
    """Where answers come from: an external API (OpenAI, Anthropic, any OpenAI-compatible
    endpoint) or the self-hosted model. Implementations map every error of their SDK to
    `chatapp.errors` at one boundary:

    - `ProviderRateLimited` (with `retry_after`), `ProviderTimeout`, `ServiceUnavailable`
      and plain `ProviderError`: retryable;
    - `InvalidRequest`: a bad request, never retried;
    - `ProviderAuth`: a key is wrong or missing, not retried;
    - `ContextWindowExceeded`: the prompt is too long for that model.
    """

    name: str

    @abc.abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], params: SamplingParams, *, model: str
    ) -> AsyncIterator[TextDelta | Finish]:
        """Stream the reply of `model` (the provider's id): deltas, then one `Finish`."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
