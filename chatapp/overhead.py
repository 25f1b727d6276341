"""The time ChatApp itself adds to a model call, as `/v1` answers report it
(`X-ChatApp-Overhead-Ms`, the figure LLM gateway users compare gateways by).

Definition: the request's time in the ingress from its arrival until its response
starts, less the time the ingress spent meanwhile waiting on the model router.

- A streamed answer's response starts once its first token is in (the status depends on
  it), so it is ChatApp's share of the time to first token; a whole answer's is ChatApp's
  share of the whole request.
- What counts as ChatApp's: authentication, rate limits and the budget hold, validation,
  retrieval (grounding is ChatApp's work), building the prompt, and writing the response.
- What counts as the model's: everything behind the router's stream, measured where the
  ingress waits on it: the provider's (or the self-hosted engine's) own time, and the
  Ray hop to the router with the router's own work (cache lookup, provider choice,
  retries and fallback); so this is a lower bound of ChatApp's share, by the router's
  part, about a millisecond on a healthy path.

`TimedModelRouter` measures the wait, for the request in context (`chatapp.logs`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from chatapp.cache.responses import CacheMode
from chatapp.chat.ports import ModelRouter
from chatapp.llm.base import ChatMessage, Chunk, SamplingParams, close_stream
from chatapp.logs import RequestContext, current_request

OVERHEAD_HEADER = "X-ChatApp-Overhead-Ms"


def overhead_ms(context: RequestContext) -> float:
    """ChatApp's share of `context`'s time so far, in milliseconds (see the module)."""
    return round(max(0.0, context.elapsed_s() - context.model_wait_s) * 1000, 1)


class TimedModelRouter:
    """A `ModelRouter` adding the time its readers wait for each chunk to the current
    request's `model_wait_s`; the stream is otherwise the router's, closing included."""

    def __init__(self, router: ModelRouter) -> None:
        self._router = router

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        model: str | None = None,
        user: str | None = None,
        cache: CacheMode = "auto",
    ) -> AsyncIterator[Chunk]:
        chunks = self._router.stream(messages, params, model=model, user=user, cache=cache)
        context = current_request()
        if context is None:  # not inside an HTTP request: nothing to account to
            return chunks
        return _timed(chunks, context)


async def _timed(chunks: AsyncIterator[Chunk], context: RequestContext) -> AsyncIterator[Chunk]:
    try:
        while True:
            waited = time.perf_counter()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            finally:
                context.model_wait_s += time.perf_counter() - waited
            yield chunk
    finally:
        await close_stream(chunks)  # closing the reader cancels the generation
