"""Ray at the chat service's ports: Serve handles adapted to `chatapp.chat.ports`, and the
one place where Ray's errors become ChatApp's.

- `call` awaits one Ray call: an error the remote side raised comes back as its own
  `ChatAppError` subclass; Ray's own failures (a dead replica or actor) are
  `ServiceUnavailable`.
- A stream's failure crosses Ray as data: the deployment ends its stream with a
  `StreamError` (`to_wire`), and the caller raises it again as its own class
  (`from_wire`, through `errors.from_code`), wherever in the stream it happened.
- `RouterHandle` is the `ModelRouter` port over the ChatRouter deployment (plus the
  catalog); `RetrievalHandle` is the `Retriever` port over Retrieval, and the
  `TextEmbedder` port of /v1/embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from chatapp import errors
from chatapp.cache.responses import CacheMode
from chatapp.errors import ChatAppError, ServiceUnavailable
from chatapp.llm.base import ChatMessage, Chunk, SamplingParams
from chatapp.openai_api.embeddings import EmbeddingResult
from chatapp.rag.schemas import KnowledgeBasePublic, RetrievedChunk

logger = logging.getLogger(__name__)

T = TypeVar("T")


def pickled(handle: DeploymentHandle) -> DeploymentHandle:
    """`handle` sending its arguments and results with the standard pickle instead of
    cloudpickle (what Serve's gRPC path uses by default): everything crossing ChatApp's
    handles is a module-level class, and cloudpickle's extra work on every token batch was
    ~10% of the router replica's CPU."""
    return handle.options(request_serialization="pickle", response_serialization="pickle")


def unwrap(exc: BaseException) -> BaseException:
    """The original error behind a Ray task failure."""
    while isinstance(exc, RayTaskError):
        cause = exc.cause
        if cause is None or cause is exc:
            break
        exc = cause
    return exc


def _translate(exc: BaseException, unavailable: str, retry_after: float) -> ChatAppError:
    cause = unwrap(exc)
    if isinstance(cause, ChatAppError):
        return cause
    logger.warning("%s: %s: %s", unavailable, type(cause).__name__, cause)
    return ServiceUnavailable(f"{unavailable}; retry in a moment", retry_after=retry_after)


async def call(awaitable: Awaitable[T], *, unavailable: str, retry_after: float = 1) -> T:
    """Await a Ray call, its failure translated (see the module's docstring)."""
    try:
        return await awaitable
    except Exception as exc:
        raise _translate(exc, unavailable, retry_after) from None


@dataclass(frozen=True, slots=True)
class StreamError:
    """Ends a stream that failed: the error's class (by code), message and retry hint."""

    code: str
    message: str
    retry_after: float | None = None

    def error(self) -> ChatAppError:
        return errors.from_code(self.code, self.message, retry_after=self.retry_after)


async def to_wire(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk | StreamError]:
    """A deployment's stream: a `ChatAppError` becomes its last item."""
    try:
        async for chunk in chunks:
            yield chunk
    except ChatAppError as exc:
        yield StreamError(exc.code, exc.message, exc.retry_after)


async def from_wire(gen: Any, *, unavailable: str, retry_after: float = 1) -> AsyncIterator[Chunk]:
    """Read a deployment's streamed response (`to_wire` on the other side); closing it
    cancels the remote generation."""
    try:
        async for chunk in gen:
            if isinstance(chunk, StreamError):
                raise chunk.error()
            yield chunk
    except ChatAppError:
        raise
    except Exception as exc:
        raise _translate(exc, unavailable, retry_after) from None
    finally:
        gen.cancel()


class RouterHandle:
    """The ChatRouter deployment as the `ModelRouter` port."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = pickled(handle)
        self._streaming = self._handle.options(stream=True)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        model: str | None = None,
        user: str | None = None,
        cache: CacheMode = "auto",
    ) -> AsyncIterator[Chunk]:
        gen = self._streaming.stream.remote(list(messages), params, model, user=user, cache=cache)
        return from_wire(gen, unavailable="the model router is unavailable")

    async def models(self) -> list[dict[str, Any]]:
        """The catalog: the models requests may name."""
        models: list[dict[str, Any]] = await call(
            self._handle.models.remote(), unavailable="the model router is unavailable"
        )
        return models


class RetrievalHandle:
    """The Retrieval deployment as the `Retriever` port."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = pickled(handle)

    async def search(
        self,
        query: str,
        knowledge_base: str,
        *,
        top_k: int | None = None,
        score_threshold: float | None = None,
        missing_ok: bool = False,
        min_version: int | None = None,
    ) -> list[RetrievedChunk]:
        hits: list[RetrievedChunk] = await call(
            self._handle.search.remote(
                query,
                knowledge_base,
                top_k=top_k,
                score_threshold=score_threshold,
                missing_ok=missing_ok,
                min_version=min_version,
            ),
            unavailable="knowledge-base search is unavailable",
        )
        return hits

    async def knowledge_bases(self) -> list[KnowledgeBasePublic]:
        items: list[KnowledgeBasePublic] = await call(
            self._handle.knowledge_bases.remote(),
            unavailable="knowledge-base search is unavailable",
        )
        return items

    async def reload(self, knowledge_base: str | None = None) -> None:
        """Have a replica look for new index versions now, `knowledge_base` loaded (the
        other replicas: on their own, or when it is first searched there)."""
        await call(
            self._handle.reload.remote(knowledge_base),
            unavailable="knowledge-base search is unavailable",
        )

    async def embed(self, texts: list[str], *, max_input_tokens: int) -> EmbeddingResult:
        result: EmbeddingResult = await call(
            self._handle.embed.remote(texts, max_input_tokens=max_input_tokens),
            unavailable="embedding is unavailable",
        )
        return result
