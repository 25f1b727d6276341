"""The two model interfaces and the chunks they stream.

- `ChatEngine`: a self-hosted model (llama.cpp, vLLM, simulated) inside ChatApp; it
  counts tokens with its own tokenizer and expects a prompt already fitted to its window.
- `ChatProvider`: where answers come from, as the router sees it: an external API or the
  self-hosted model behind its deployment.

Both turn a list of chat messages into a stream of typed chunks: zero or more
`TextDelta` (and, from a provider asked with tools, `ToolCallDelta`), then exactly one
`Finish` carrying usage and the finish reason; a failure, before or after the first
chunk, is raised as a `chatapp.errors.ChatAppError`. The whole answer, when a caller
wants it, is collected from that stream (`collect`).

Messages and chunks are provider-neutral; each provider client maps them to its own wire
shapes (OpenAI's `tool_calls` / `role: "tool"` / `image_url` parts, Anthropic's
`tool_use` / `tool_result` / `image` blocks):

- `ChatMessage.parts`: structured content (`TextPart`, `ImagePart`); `content` is then
  its text, so everything that only reads text (token estimates, grounding) still works;
- `ChatMessage.tool_calls`: the calls an assistant made; a `role="tool"` message answers
  one of them (`tool_call_id`);
- `SamplingParams.tools`: the tools the model may call (`ToolConfig`);
- `ToolCallDelta`: a piece of a tool call in the answer (finish reason `tool_calls`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image the client sent: an https URL (never fetched by ChatApp; the provider
    reads it) or a `data:<media type>;base64,...` URL."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None  # OpenAI's resolution hint


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: the function's name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str  # the text (of `parts`, when there are parts)
    parts: tuple[ContentPart, ...] = ()  # structured content: set when it holds images
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message's calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    def __setstate__(self, state: Sequence[Any]) -> None:
        """Unpickle; a message pickled by an older version (a detached shard actor outlives
        an upgrade) has only role and content: the newer fields take their defaults."""
        names = ("role", "content", "parts", "tool_calls", "tool_call_id")
        values = (*state, *((), (), None)[len(state) - 2 :])
        for name, value in zip(names, values, strict=True):
            object.__setattr__(self, name, value)

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(p for p in self.parts if isinstance(p, ImagePart))

    @property
    def uses_tools(self) -> bool:
        """A tool call or a tool's result: only a model that can call tools reads it."""
        return bool(self.tool_calls) or self.role == "tool"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; `parameters` is its arguments' JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolConfig:
    """The tools of a request and how the model may use them."""

    tools: tuple[ToolSpec, ...]
    # "auto": it decides; "none": no call; "required": at least one call; "function":
    # a call of `function` (OpenAI's {"type": "function", "function": {"name": ...}}).
    choice: Literal["auto", "none", "required", "function"] = "auto"
    function: str | None = None
    parallel: bool = True  # several calls in one answer allowed


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
    tools: ToolConfig | None = None  # functions the model may call (None: no tools)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Generated text; after coalescing it may hold many tokens."""

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of tool call number `index` of the answer (OpenAI's streamed shape): the
    first piece of a call carries its `id` and `name`, every piece may add text to its
    `arguments` (JSON, complete once the stream ends)."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """The last chunk of every stream."""

    finish_reason: str  # "stop" | "length" | "tool_calls" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    model: str = ""
    provider: str = ""  # who answered: "openai", "anthropic", "self-hosted", ...
    cost_usd: float = 0.0
    cached: bool = False  # replayed from the response cache
    fallback_from: str | None = None  # the model that failed before this one answered
    # The request's stop sequence that ended the answer, where the model says which
    # (Anthropic does; OpenAI-compatible servers only say "stop").
    stop_sequence: str | None = None


Chunk = TextDelta | ToolCallDelta | Finish


async def close_stream(stream: AsyncIterator[Any]) -> None:
    """Close `stream` if it can be closed (an async generator can), which stops what
    produces it: closing a model stream stops the generation."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer collected from a stream."""

    text: str
    finish: Finish
    tool_calls: tuple[ToolCall, ...] = ()


def assemble_tool_calls(deltas: Sequence[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """The whole calls of an answer from its pieces, in call order."""
    calls: dict[int, list[str]] = {}
    names: dict[int, tuple[str, str]] = {}
    for d in deltas:
        calls.setdefault(d.index, []).append(d.arguments)
        ident, name = names.get(d.index, ("", ""))
        names[d.index] = (ident or d.id or "", name or d.name or "")
    return tuple(
        ToolCall(id=names[i][0], name=names[i][1], arguments="".join(calls[i]))
        for i in sorted(calls)
    )


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
    calls: list[ToolCallDelta] = []
    async for chunk in chunks:
        if isinstance(chunk, Finish):
            return Completion("".join(parts), chunk, assemble_tool_calls(calls))
        if isinstance(chunk, ToolCallDelta):
            calls.append(chunk)
        else:
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
    ) -> AsyncIterator[Chunk]:
        """Stream the reply of `model` (the provider's id): deltas, then one `Finish`.
        A provider that cannot call tools or read images is never given them: the
        catalog says which can (`ModelEntry.supports_tools`, `supports_images`)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
