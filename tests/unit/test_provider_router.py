"""The routing policy: retries (counts and delays), Retry-After, circuit breakers opening
and half-opening, fallback order, failures after the first token, timeouts, long
prompts, the response cache (real Redis) and cost."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from chatapp.cache.responses import MemoryResponseCache, RedisResponseCache, ResponseCache
from chatapp.config import Settings
from chatapp.errors import (
    ChatAppError,
    ContextWindowExceeded,
    InvalidRequest,
    NotFound,
    ProviderAuth,
    ProviderError,
    ProviderRateLimited,
    ServiceUnavailable,
)
from chatapp.llm.base import (
    ChatMessage,
    ChatProvider,
    Chunk,
    Finish,
    SamplingParams,
    TextDelta,
)
from chatapp.llm.registry import build_providers
from chatapp.llm.router import ProviderRouter, build_router
from chatapp.observability.metrics import PrometheusInstruments, ProviderMetrics
from tests.fakes.providers import FakeAnthropic, FakeOpenAI, Reply, Status, refused_url
from tests.fakes.scripted import Answer, ScriptedProvider

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?")]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0)
SAMPLED = SamplingParams(max_tokens=16, temperature=0.7)

CATALOG = [
    {
        "name": "gpt",
        "provider": "openai",
        "provider_model": "gpt-x",
        "context_window": 8000,
        "input_price_per_mtok": 1.0,
        "output_price_per_mtok": 2.0,
    },
    {
        "name": "claude",
        "provider": "anthropic",
        "provider_model": "claude-x",
        "context_window": 200_000,
        "input_price_per_mtok": 3.0,
        "output_price_per_mtok": 15.0,
    },
]


def settings(**providers: Any) -> Settings:
    base: dict[str, Any] = {
        "openai_api_key": "sk-test",
        "anthropic_api_key": "sk-ant",
        "models": CATALOG,
        "primary": "gpt",
        "fallback": ["claude"],
        "retry_attempts": 3,
        "retry_initial_s": 0.1,
        "retry_max_s": 1.0,
        "retry_after_max_s": 5.0,
        "first_token_timeout_s": 1.0,
    }
    base.update(providers)
    return Settings.from_overrides(
        {"providers": base, "llm": {"model_name": "local", "context_window": 2048}}
    )


class Rig:
    """A router over scripted providers; `sleeps` records every backoff."""

    def __init__(self, cache: ResponseCache | None = None, real_sleep: bool = False, **kw: Any):
        self.openai = ScriptedProvider("openai")
        self.anthropic = ScriptedProvider("anthropic")
        self.local = ScriptedProvider("self-hosted", Answer("local answer"))
        self.sleeps: list[float] = []
        self.instruments = PrometheusInstruments()
        self.metrics = ProviderMetrics(self.instruments)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            if real_sleep:
                await asyncio.sleep(seconds)

        providers: dict[str, ChatProvider] = {
            "openai": self.openai,
            "anthropic": self.anthropic,
            "self-hosted": self.local,
        }
        self.router: ProviderRouter = build_router(
            settings(**kw), providers, metrics=self.metrics, cache=cache, sleep=sleep
        )

    def metric(self, name: str, **labels: str) -> float:
        value = self.instruments.registry.get_sample_value(name, labels)
        return value or 0.0


async def run(
    router: ProviderRouter,
    messages: Sequence[ChatMessage] = ASK,
    params: SamplingParams = SAMPLED,
    **kw: Any,
) -> tuple[str, Chunk | ChatAppError]:
    """The answer's text and its last chunk, or the error raised after the first token
    (one raised before it propagates)."""
    parts: list[str] = []
    last: Chunk | ChatAppError | None = None
    try:
        async for chunk in router.stream(messages, params, **kw):
            last = chunk
            if isinstance(chunk, TextDelta):
                parts.append(chunk.text)
    except ChatAppError as exc:
        if not parts:
            raise
        last = exc
    assert last is not None
    return "".join(parts), last


# -- retries -------------------------------------------------------------------------


async def test_transient_errors_are_retried_with_growing_jittered_delays() -> None:
    rig = Rig()
    rig.openai.enqueue(ServiceUnavailable("503"), ProviderError("500"), Answer("Paris."))
    text, finish = await run(rig.router)
    assert text == "Paris." and isinstance(finish, Finish) and finish.model == "gpt"
    assert len(rig.openai.history) == 3 and rig.anthropic.history == []
    first, second = rig.sleeps
    assert 0.1 <= first <= 0.2 and 0.2 <= second <= 0.3  # 0.1 * 2**n + up to 0.1 jitter
    assert rig.metric("chatapp_llm_retries_total", provider="openai", model="gpt") == 2


async def test_retry_after_is_honoured() -> None:
    rig = Rig()
    rig.openai.enqueue(ProviderRateLimited("429", retry_after=0.7), Answer("ok"))
    text, _ = await run(rig.router)
    assert text == "ok" and rig.sleeps == [0.7]


async def test_a_retry_after_too_long_goes_to_the_next_provider_at_once() -> None:
    rig = Rig()
    rig.openai.enqueue(ProviderRateLimited("429", retry_after=60))
    rig.anthropic.enqueue(Answer("from claude"))
    text, finish = await run(rig.router)
    assert text == "from claude" and rig.sleeps == []
    assert isinstance(finish, Finish) and finish.model == "claude"


async def test_bad_keys_are_not_retried_but_fall_back() -> None:
    rig = Rig()
    rig.openai.enqueue(ProviderAuth("401"))
    text, _ = await run(rig.router)
    assert len(rig.openai.history) == 1 and rig.sleeps == []
    assert text == "scripted answer"  # anthropic answered


async def test_a_bad_request_is_neither_retried_nor_passed_on() -> None:
    rig = Rig()
    rig.openai.enqueue(InvalidRequest("stop: too many sequences"))
    with pytest.raises(InvalidRequest):
        await run(rig.router)
    assert len(rig.openai.history) == 1 and rig.anthropic.history == []


async def test_retrying_stops_within_its_time_budget() -> None:
    rig = Rig(
        real_sleep=True,
        retry_attempts=50,
        retry_initial_s=0.05,
        retry_max_s=0.05,
        retry_budget_s=0.3,
    )
    rig.openai.default = ServiceUnavailable("down")
    started = time.monotonic()
    text, _ = await run(rig.router)
    assert text == "scripted answer"  # claude, once openai's retry budget was spent
    assert time.monotonic() - started < 1.5
    assert 3 <= len(rig.openai.history) <= 8


# -- breakers ------------------------------------------------------------------------


async def test_breaker_opens_after_threshold_then_half_opens() -> None:
    rig = Rig(retry_attempts=1, breaker_threshold=2, breaker_reset_s=0.3)
    rig.openai.default = ServiceUnavailable("down")
    for _ in range(2):
        text, _ = await run(rig.router)
        assert text == "scripted answer"
    assert len(rig.openai.history) == 2
    assert rig.metric("chatapp_llm_breaker_state", provider="openai") == 2  # open

    await run(rig.router)  # open: openai is not even called
    assert len(rig.openai.history) == 2
    assert (
        rig.metric("chatapp_llm_requests_total", provider="openai", model="gpt", outcome="skipped")
        == 1
    )

    await asyncio.sleep(0.35)
    rig.openai.enqueue(ServiceUnavailable("still down"))  # the half-open probe fails...
    await run(rig.router)
    assert len(rig.openai.history) == 3
    await run(rig.router)  # ...so the circuit is open again at once
    assert len(rig.openai.history) == 3

    await asyncio.sleep(0.35)
    rig.openai.enqueue(Answer("back"))  # a successful probe closes it
    text, _ = await run(rig.router)
    assert text == "back"
    assert rig.metric("chatapp_llm_breaker_state", provider="openai") == 0
    rig.openai.enqueue(Answer("still back"))
    assert (await run(rig.router))[0] == "still back"


async def test_bad_requests_do_not_open_the_breaker() -> None:
    rig = Rig(retry_attempts=1, breaker_threshold=1)
    rig.openai.enqueue(InvalidRequest("bad"))
    with pytest.raises(InvalidRequest):
        await run(rig.router)
    assert (await run(rig.router))[0] == "scripted answer"
    assert len(rig.openai.history) == 2  # still called: the circuit stayed closed


# -- fallback ------------------------------------------------------------------------


async def test_fallback_order_is_primary_then_fallbacks_then_self_hosted() -> None:
    rig = Rig(retry_attempts=1)
    rig.openai.enqueue(ServiceUnavailable("down"))
    rig.anthropic.enqueue(ProviderError("500"))
    text, finish = await run(rig.router)
    assert text == "local answer"
    assert (
        isinstance(finish, Finish) and finish.model == "local" and finish.provider == "self-hosted"
    )
    assert finish.fallback_from == "gpt"  # the model the user asked for first
    assert [len(p.history) for p in (rig.openai, rig.anthropic, rig.local)] == [1, 1, 1]
    assert rig.metric("chatapp_llm_fallbacks_total", from_model="gpt", to_model="claude") == 1
    assert rig.metric("chatapp_llm_fallbacks_total", from_model="claude", to_model="local") == 1


async def test_a_named_model_answers_first_and_unknown_ones_are_404() -> None:
    rig = Rig()
    rig.anthropic.enqueue(Answer("claude here"))
    text, finish = await run(rig.router, model="claude")
    assert text == "claude here" and isinstance(finish, Finish) and finish.fallback_from is None
    assert rig.openai.history == []
    with pytest.raises(NotFound, match="available: auto, gpt, claude, local"):
        await run(rig.router, model="nope")


async def test_all_down_is_a_503_with_retry_after() -> None:
    rig = Rig(retry_attempts=1)
    for p in (rig.openai, rig.anthropic, rig.local):
        p.default = ServiceUnavailable("down")
    with pytest.raises(ServiceUnavailable) as caught:
        await run(rig.router)
    assert caught.value.retry_after is not None
    assert "gpt" in caught.value.message and "local" in caught.value.message


async def test_after_the_first_token_a_failure_ends_the_stream_without_fallback() -> None:
    rig = Rig()
    rig.openai.enqueue(Answer("Paris is the capital", fail_after=2, error=ProviderError("cut")))
    text, last = await run(rig.router)
    assert text == "Paris is "
    assert type(last) is ProviderError and last.code == "provider_error"
    assert rig.anthropic.history == [] and len(rig.openai.history) == 1


async def test_no_first_token_in_time_falls_back() -> None:
    rig = Rig(retry_attempts=1, first_token_timeout_s=0.2)
    rig.openai.enqueue(Answer("late", delay_s=3))
    started = time.monotonic()
    text, _ = await run(rig.router)
    assert text == "scripted answer" and time.monotonic() - started < 1.5
    assert (
        rig.metric(
            "chatapp_llm_errors_total", provider="openai", model="gpt", kind="provider_timeout"
        )
        == 1
    )


async def test_a_whole_answer_retried_after_a_timeout_is_not_failed_for_the_first_attempt() -> None:
    """A non-streamed request waits the whole-answer timeout for its first chunk; the
    attempt that answers gets the whole timeout again (it used to run from the first
    attempt, so the retried answer, complete, failed as a mid-answer timeout)."""
    rig = Rig(retry_attempts=2, total_timeout_s=0.3)
    rig.openai.enqueue(Answer("late", delay_s=3), Answer("Paris is the capital."))
    whole = SamplingParams(max_tokens=32, temperature=0.7, whole=True)
    text, last = await run(rig.router, params=whole)
    assert text == "Paris is the capital." and isinstance(last, Finish)
    assert len(rig.openai.history) == 2 and rig.anthropic.history == []


# -- long prompts --------------------------------------------------------------------


async def test_a_prompt_too_long_for_the_model_goes_to_a_larger_window() -> None:
    rig = Rig()
    long = [ChatMessage("user", "word " * 8000)]  # ~10k tokens: over gpt's 8k window
    _, finish = await run(rig.router, long, model="gpt")
    assert isinstance(finish, Finish) and finish.model == "claude"
    assert rig.openai.history == []


async def test_a_provider_refusing_a_long_prompt_gets_trimmed_history() -> None:
    rig = Rig(fallback_named=False)
    # ~5,600 tokens: within gpt's 8k window by our estimate, but the provider refuses it
    history = [ChatMessage("user" if i % 2 else "assistant", f"turn {i} " * 150) for i in range(20)]
    rig.openai.enqueue(ContextWindowExceeded("too long"), Answer("fits now"))
    text, _ = await run(rig.router, [ChatMessage("system", "sys"), *history[1:]], model="gpt")
    assert text == "fits now"
    sent_first, sent_second = (len(m) for _, m in rig.openai.history)
    assert sent_second < sent_first
    assert rig.openai.history[1][1][0].role == "system"  # the system prompt is kept


async def test_a_message_too_long_for_every_model_is_a_400_not_a_500() -> None:
    rig = Rig(fallback_named=False)
    with pytest.raises(ContextWindowExceeded):
        await run(rig.router, [ChatMessage("user", "x" * 40_000)], model="gpt")


# -- cost and cache ------------------------------------------------------------------


async def test_cost_comes_from_catalog_prices() -> None:
    rig = Rig()
    _, finish = await run(rig.router)
    assert isinstance(finish, Finish)  # scripted: 10 prompt tokens, 2 completion
    assert finish.cost_usd == pytest.approx((10 * 1.0 + 2 * 2.0) / 1_000_000)


@pytest.fixture
async def redis_cache() -> AsyncIterator[RedisResponseCache]:
    prefix = f"chatapp-test-{uuid.uuid4().hex[:8]}:"
    cache = RedisResponseCache(url=REDIS_URL, key_prefix=prefix, ttl_s=60)
    yield cache
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(f"{prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    await cache.aclose()


async def test_a_repeated_greedy_request_is_answered_from_redis(
    redis_cache: RedisResponseCache,
) -> None:
    rig = Rig(cache=redis_cache)
    rig.openai.enqueue(Answer("Paris is the capital of France."))
    text, first = await run(rig.router, params=GREEDY, user="u1")
    assert isinstance(first, Finish) and not first.cached

    chunks = [c async for c in rig.router.stream(ASK, GREEDY, user="u1")]
    again = chunks[-1]
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == text
    assert len(chunks) > 2  # streamed in pieces like a fresh answer
    assert isinstance(again, Finish) and again.cached and again.cost_usd == 0
    assert again.model == "gpt" and again.completion_tokens == first.completion_tokens
    assert len(rig.openai.history) == 1  # the provider was not asked again
    assert rig.metric("chatapp_llm_cache_total", result="hit") == 1

    # per-user scope: someone else's identical question is not answered from u1's entry
    await run(rig.router, params=GREEDY, user="u2")
    assert len(rig.openai.history) == 2
    # opting out skips the cache; sampled requests are not cached unless asked
    await run(rig.router, params=GREEDY, user="u1", cache="off")
    await run(rig.router, params=SAMPLED, user="u1")
    await run(rig.router, params=SAMPLED, user="u1")
    assert len(rig.openai.history) == 5


async def test_a_request_may_opt_in_and_the_in_process_cache_works_alike() -> None:
    rig = Rig(cache=MemoryResponseCache(ttl_s=60, max_entries=10))
    await run(rig.router, params=SAMPLED, cache="on")
    _, finish = await run(rig.router, params=SAMPLED, cache="on")
    assert isinstance(finish, Finish) and finish.cached
    assert len(rig.openai.history) == 1


async def test_a_partial_answer_is_never_cached() -> None:
    rig = Rig(cache=MemoryResponseCache(ttl_s=60, max_entries=10))
    rig.openai.enqueue(Answer("a b c", fail_after=1, error=ProviderError("cut")))
    _, last = await run(rig.router, params=GREEDY)
    assert isinstance(last, ProviderError)
    _, finish = await run(rig.router, params=GREEDY)
    assert isinstance(finish, Finish) and not finish.cached


# -- through the real SDKs and fake servers --------------------------------------------


async def test_real_sdks_retry_then_fall_back_across_vendors() -> None:
    openai_server, anthropic_server = FakeOpenAI().start(), FakeAnthropic().start()
    try:
        s = settings(
            openai_base_url=openai_server.base_url,
            anthropic_base_url=anthropic_server.base_url,
            retry_attempts=2,
            retry_initial_s=0.01,
        )
        providers = build_providers(s.providers)
        providers["self-hosted"] = ScriptedProvider("self-hosted")
        instruments = PrometheusInstruments()
        router = build_router(s, providers, metrics=ProviderMetrics(instruments))

        openai_server.enqueue(Status(503), Reply("Paris, after a retry."))
        text, finish = await run(router)
        assert text == "Paris, after a retry." and len(openai_server.requests) == 2

        openai_server.enqueue(Status(500), Status(429, retry_after=0.05))
        anthropic_server.enqueue(Reply("Claude says Paris."))
        text, finish = await run(router)
        assert text == "Claude says Paris."
        assert isinstance(finish, Finish) and finish.provider == "anthropic"
        assert finish.cost_usd > 0

        openai_server.enqueue(Reply("one two three four", cut_after=2))
        text, last = await run(router)
        assert text == "one two " and isinstance(last, ServiceUnavailable)  # a cut stream
        assert b"chatapp_llm_fallbacks_total" in instruments.text()
        await router.aclose()
    finally:
        openai_server.stop()
        anthropic_server.stop()


async def test_an_unreachable_primary_falls_back() -> None:
    s = settings(openai_base_url=refused_url("/v1"), anthropic_base_url=refused_url())
    providers = build_providers(s.providers)
    providers["self-hosted"] = ScriptedProvider("self-hosted", Answer("local"))
    router = build_router(s, providers, sleep=lambda _s: asyncio.sleep(0))
    text, finish = await run(router)
    assert text == "local" and isinstance(finish, Finish) and finish.provider == "self-hosted"
