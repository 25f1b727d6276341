"""ProviderRouter: the routing policy, apart from the providers.

For each request: the response cache; then the model chain (`auto`: primary, fallbacks,
the self-hosted model last; with tools or images, only the models that take them), each
model behind its provider's circuit breaker and the
retry policy. Before the first token a failure passes the request on to the next model;
after it, the error is raised from the stream (the chat service stores the partial
answer marked incomplete). A prompt too long for a model goes to one with a larger window, or is
trimmed to the largest window in the chain: never a server error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from opentelemetry.trace import Span

from chatapp.cache.responses import (
    CacheMode,
    ResponseCache,
    answer_of,
    cache_key,
    replay,
    replay_finish,
)
from chatapp.chat.context import fit_messages
from chatapp.config import ModelEntry, Settings
from chatapp.errors import (
    ChatAppError,
    ContextWindowExceeded,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderTimeout,
    ServiceUnavailable,
)
from chatapp.llm.base import (
    ChatMessage,
    ChatProvider,
    Chunk,
    Finish,
    SamplingParams,
    ToolCallDelta,
    close_stream,
)
from chatapp.llm.catalog import AUTO, SELF_HOSTED, Catalog, cost_usd
from chatapp.llm.coalesce import coalesce
from chatapp.llm.resilience import BreakerOpen, Breakers, RetryPolicy
from chatapp.observability import tracing
from chatapp.observability.metrics import ProviderMetrics

logger = logging.getLogger(__name__)

_Stream = AsyncIterator[Chunk]
# an attempt that answered: its stream, first chunk, when it began, its span
_Opened = tuple[_Stream, Chunk, float, Span]


def estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A provider-neutral estimate (about 4 characters a token plus per-message framing);
    external tokenizers are not shipped, and the provider has the last word anyway."""
    return (
        sum(
            (len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls)) // 4 + 4
            for m in messages
        )
        + 3
    )


@dataclass(frozen=True, slots=True)
class Timeouts:
    first_token_s: float
    total_s: float


@dataclass(frozen=True, slots=True)
class Coalescing:
    """Batch text deltas this long (or up to this many characters) before sending them on."""

    window_s: float
    max_chars: int


@dataclass(frozen=True, slots=True)
class _Step:
    entry: ModelEntry
    messages: list[ChatMessage]
    share: float = 0.0  # >0: history trimmed to this share of the window


class ProviderRouter:
    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: Mapping[str, ChatProvider],
        retry: RetryPolicy,
        breakers: Breakers,
        timeouts: Timeouts,
        metrics: ProviderMetrics,
        cache: ResponseCache | None = None,
        cache_scope: Literal["user", "shared"] = "user",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        coalescing: Coalescing | None = None,
    ) -> None:
        missing = {e.provider for e in catalog.entries.values()} - set(providers)
        if missing:
            raise ValueError(f"the catalog names providers that are not built: {missing}")
        self._catalog = catalog
        self._providers = providers
        self._retry = retry
        self._breakers = breakers
        self._timeouts = timeouts
        self._metrics = metrics
        self._cache = cache
        self._cache_scope = cache_scope
        self._sleep = sleep
        self._clock = clock
        self._coalescing = coalescing

    def models(self) -> list[dict[str, object]]:
        return self._catalog.public()

    async def aclose(self) -> None:
        for provider in self._providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()
        if self._cache is not None:
            await self._cache.aclose()

    # -- the request -----------------------------------------------------------------

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        model: str | None = None,
        user: str | None = None,
        cache: CacheMode = "auto",
    ) -> AsyncIterator[Chunk]:
        """The answer, traced as `llm.route` with an `llm.attempt` under it per try."""
        span = tracing.start_span(
            "llm.route", {tracing.MODEL: model or AUTO, tracing.MAX_TOKENS: params.max_tokens}
        )
        chunks = self._stream(span, messages, params, model=model, user=user, cache=cache)
        return tracing.stepped(span, chunks)

    async def _stream(
        self,
        span: Span,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        model: str | None,
        user: str | None,
        cache: CacheMode,
    ) -> AsyncIterator[Chunk]:
        chain = self._catalog.capable_chain(
            model,
            tools=params.tools is not None or any(m.uses_tools for m in messages),
            images=any(m.images for m in messages),
        )
        key: str | None = None
        # An answer to a request with tools may be tool calls, which the cache does not
        # hold: such requests neither read nor fill it.
        if (
            self._cache is not None
            and params.tools is None
            and (cache == "on" or (cache == "auto" and params.temperature == 0))
        ):
            key = cache_key(
                model=model or AUTO,
                messages=messages,
                params=params,
                user=user if self._cache_scope == "user" else None,
            )
            hit = await self._cache.get(key)
            self._metrics.cache.labels("hit" if hit else "miss").inc()
            span.set_attribute("chatapp.cache", "hit" if hit else "miss")
            if hit is not None:
                tracing.finished(span, replay_finish(hit))
                async for chunk in self._coalesced(replay(hit)):
                    yield chunk
                return

        steps = self._plan(chain, list(messages), params)
        errors: list[tuple[ModelEntry, ChatAppError]] = []
        i = 0
        while i < len(steps):
            step = steps[i]
            i += 1
            if errors:
                self._metrics.fallbacks.labels(errors[-1][0].name, step.entry.name).inc()
                logger.info("falling back to %s after: %s", step.entry.name, errors[-1][1])
            started = self._clock()
            try:
                agen, first, attempt_started, attempt = await self._open(step, params)
            except InvalidRequest:
                raise  # the request itself is wrong: another model would refuse it too
            except ContextWindowExceeded as exc:
                errors.append((step.entry, exc))
                if step.share == 0 or step.share > 0.5:  # once more, trimmed to half
                    steps.insert(i, self._trimmed(step.entry, list(messages), params, 0.5))
                continue
            except ChatAppError as exc:
                errors.append((step.entry, exc))
                continue
            failed_first = errors[0][0].name if errors else None
            fallback_from = failed_first if failed_first != step.entry.name else None
            rest = self._rest(
                step.entry, agen, first, started, attempt_started, key, fallback_from, attempt
            )
            async for chunk in rest:
                if isinstance(chunk, Finish):
                    tracing.finished(span, chunk)
                yield chunk
            return
        raise _final_error(errors)

    def _coalesced(self, chunks: _Stream) -> _Stream:
        """Token-by-token streams (external providers, cache replays) are batched before
        they cross a process boundary, when the router runs behind one."""
        if self._coalescing is None:
            return chunks
        return coalesce(
            chunks, window_s=self._coalescing.window_s, max_chars=self._coalescing.max_chars
        )

    # -- steps -----------------------------------------------------------------------

    def _plan(
        self, chain: list[ModelEntry], messages: list[ChatMessage], params: SamplingParams
    ) -> list[_Step]:
        """Models whose window holds the prompt, in chain order; none: trim for the largest.
        The self-hosted model fits its prompt with its own tokenizer."""
        need = estimate_tokens(messages) + params.max_tokens
        fitting = [
            _Step(e, messages)
            for e in chain
            if e.provider == SELF_HOSTED or need <= e.context_window
        ]
        if fitting:
            return fitting
        largest = max(chain, key=lambda e: e.context_window)
        return [self._trimmed(largest, messages, params, 1.0)]

    def _trimmed(
        self, entry: ModelEntry, messages: list[ChatMessage], params: SamplingParams, share: float
    ) -> _Step:
        window = int(entry.context_window * share)
        if params.max_tokens >= window:
            raise ContextWindowExceeded(
                f"max_tokens ({params.max_tokens}) leaves no room for the prompt in "
                f"{entry.name}'s {entry.context_window}-token window; ask for fewer"
            )
        fitted = fit_messages(
            messages,
            count_tokens=estimate_tokens,
            context_window=window,
            reserve_tokens=params.max_tokens,
        )
        return _Step(entry, fitted, share=share)

    async def _open(self, step: _Step, params: SamplingParams) -> _Opened:
        """The stream, its first chunk, when the attempt that answered began and its span,
        retried per the policy."""
        entry = step.entry

        def on_retry(exc: BaseException, delay: float) -> None:
            self._metrics.retries.labels(entry.provider, entry.name).inc()
            logger.info("retrying %s in %.2fs after: %s", entry.name, delay, exc)

        async for attempt in self._retry.retrying(sleep=self._sleep, on_retry=on_retry):
            with attempt:
                return await self._attempt(step, params, attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _attempt(self, step: _Step, params: SamplingParams, number: int) -> _Opened:
        entry = step.entry
        provider = self._providers[entry.provider]
        labels = (entry.provider, entry.name)
        span = tracing.start_span(
            "llm.attempt",
            {
                tracing.PROVIDER: entry.provider,
                tracing.MODEL: entry.name,
                "chatapp.provider_model": entry.provider_model,
                "chatapp.attempt": number,
                "chatapp.trimmed_to": step.share,
            },
        )
        try:
            with tracing.current(span):  # a provider's Ray call, if any, under it
                if entry.provider == SELF_HOSTED:  # the last resort: never skipped
                    opened = await self._first(provider, step, params)
                else:
                    async with self._breakers.call(entry.provider):
                        opened = await self._first(provider, step, params)
        except BreakerOpen as exc:
            self._metrics.requests.labels(*labels, "skipped").inc()
            tracing.end(span, exc)
            raise
        except ChatAppError as exc:
            self._metrics.requests.labels(*labels, "error").inc()
            self._metrics.errors.labels(*labels, exc.code).inc()
            tracing.end(span, exc)
            raise
        except BaseException as exc:
            tracing.end(span, exc)
            raise
        finally:
            self._metrics.set_breaker(entry.provider, self._breakers.state(entry.provider))
        return (*opened, span)

    async def _first(
        self, provider: ChatProvider, step: _Step, params: SamplingParams
    ) -> tuple[_Stream, Chunk, float]:
        attempt_started = self._clock()
        agen = provider.stream(step.messages, params, model=step.entry.provider_model)
        if step.entry.provider != SELF_HOSTED:  # its deployment coalesces its own stream
            agen = self._coalesced(agen)
        # A whole (non-streamed) answer's first chunk is the whole answer.
        timeout = self._timeouts.total_s if params.whole else self._timeouts.first_token_s
        try:
            first = await asyncio.wait_for(anext(agen), timeout)
        except TimeoutError as exc:
            await _close(agen)
            raise ProviderTimeout(f"{provider.name} sent no token within {timeout:g} s") from exc
        except StopAsyncIteration as exc:
            raise ProviderError(f"{provider.name} ended the stream without an answer") from exc
        except BaseException:
            await _close(agen)
            raise
        return agen, first, attempt_started

    async def _rest(
        self,
        entry: ModelEntry,
        agen: _Stream,
        first: Chunk,
        started: float,
        attempt_started: float,
        key: str | None,
        fallback_from: str | None,
        attempt: Span,
    ) -> AsyncIterator[Chunk]:
        """The answer from its first chunk on; `attempt` (its span) ends with it."""
        labels = (entry.provider, entry.name)
        first_at = self._clock()
        self._metrics.ttft.labels(*labels).observe(first_at - started)
        # The whole-answer timeout runs from the attempt that answered: a retried request
        # (a whole answer above all, which arrives in one piece) is not failed for the
        # time its failed attempts took.
        deadline = attempt_started + self._timeouts.total_s
        parts: list[str] = []
        called = False  # tool calls are not cached
        chunk: Chunk = first
        try:
            while True:
                if isinstance(chunk, Finish):
                    finish = replace(
                        chunk,
                        model=entry.name,
                        provider=entry.provider,
                        cost_usd=cost_usd(entry, chunk.prompt_tokens, chunk.completion_tokens),
                        fallback_from=fallback_from,
                    )
                    self._metrics.requests.labels(*labels, "ok").inc()
                    attempt.set_attribute(tracing.OUTCOME, "ok")
                    tracing.finished(attempt, finish)
                    elapsed = self._clock() - first_at
                    if elapsed > 0 and finish.completion_tokens:
                        self._metrics.tokens_per_s.labels(*labels).observe(
                            finish.completion_tokens / elapsed
                        )
                    if key is not None and self._cache is not None and parts and not called:
                        await self._cache.set(key, answer_of(parts, finish))
                    yield finish
                    return
                if isinstance(chunk, ToolCallDelta):
                    called = True
                else:
                    parts.append(chunk.text)
                yield chunk
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise ProviderTimeout(
                        f"{entry.name} did not finish within {self._timeouts.total_s:g} s"
                    )
                try:
                    chunk = await asyncio.wait_for(anext(agen), remaining)
                except TimeoutError as exc:
                    raise ProviderTimeout(
                        f"{entry.name} did not finish within {self._timeouts.total_s:g} s"
                    ) from exc
                except StopAsyncIteration as exc:
                    raise ProviderError(f"{entry.name} ended the answer early") from exc
        except ChatAppError as exc:
            self._metrics.requests.labels(*labels, "error").inc()
            self._metrics.errors.labels(*labels, exc.code).inc()
            logger.warning("%s failed after the first token: %s", entry.name, exc)
            tracing.mark(attempt, exc)
            raise
        except BaseException as exc:  # the reader went away (after the answer: no matter)
            if not isinstance(chunk, Finish):
                tracing.mark(attempt, exc)
            raise
        finally:
            attempt.end()
            await _close(agen)


async def _close(agen: _Stream) -> None:
    with contextlib.suppress(Exception):
        await close_stream(agen)


def _final_error(errors: list[tuple[ModelEntry, ChatAppError]]) -> ChatAppError:
    """What the client sees when no model could answer: never a bare 500."""
    if not errors:
        return ServiceUnavailable("no model is available to answer", retry_after=5)
    kinds = [exc for _, exc in errors]
    if all(isinstance(e, ContextWindowExceeded) for e in kinds) or len(kinds) == 1:
        return kinds[-1]
    if isinstance(kinds[-1], NotFound | InvalidRequest):
        return kinds[-1]
    summary = "; ".join(f"{entry.name}: {exc.message}" for entry, exc in errors)
    retry_after = min(
        (r for e in kinds if (r := getattr(e, "retry_after", None)) is not None), default=5.0
    )
    return ServiceUnavailable(
        f"no model could answer right now ({summary}); retry shortly", retry_after=retry_after
    )


def build_router(
    settings: Settings,
    providers: Mapping[str, ChatProvider],
    *,
    metrics: ProviderMetrics | None = None,
    cache: ResponseCache | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    coalesce: bool = False,
) -> ProviderRouter:
    """The router for `settings` over built `providers` (the self-hosted one included);
    `coalesce` when its streams cross a process boundary (`SERVE_COALESCE_*`)."""
    p = settings.providers
    metrics = metrics or ProviderMetrics()
    return ProviderRouter(
        catalog=Catalog.from_settings(p, settings.llm, available=providers),
        providers=providers,
        retry=RetryPolicy(
            attempts=p.retry_attempts,
            initial_s=p.retry_initial_s,
            max_s=p.retry_max_s,
            budget_s=p.retry_budget_s,
            retry_after_max_s=p.retry_after_max_s,
        ),
        breakers=Breakers(
            threshold=p.breaker_threshold, reset_s=p.breaker_reset_s, on_state=metrics.set_breaker
        ),
        timeouts=Timeouts(first_token_s=p.first_token_timeout_s, total_s=p.total_timeout_s),
        metrics=metrics,
        cache=cache,
        cache_scope=settings.cache.scope,
        sleep=sleep,
        coalescing=Coalescing(
            window_s=settings.serve.coalesce_window_ms / 1000,
            max_chars=settings.serve.coalesce_max_chars,
        )
        if coalesce
        else None,
    )
