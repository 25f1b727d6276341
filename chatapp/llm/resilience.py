"""Retries (tenacity) and circuit breakers (purgatory) for providers: the one retry policy.

Retries: exponential backoff with jitter, a provider's Retry-After honoured (up to
a cap: a longer wait is better spent on the next provider), retryable errors only and a
bound on the total time spent retrying. Breakers: one per provider; after `threshold`
consecutive failures the circuit opens and calls are refused without touching the
provider; after `reset_s` one call is let through half-open: success closes it, failure
opens it again.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from chatapp.errors import (
    ContextWindowExceeded,
    ProviderAuth,
    ProviderError,
    ProviderRateLimited,
    ServiceUnavailable,
)

__all__ = [
    "BreakerOpen",
    "Breakers",
    "RetryPolicy",
    "is_retryable",
    "retry_after_from_headers",
]


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_retryable(exc: BaseException) -> bool:
    """Transient provider trouble is retried; bad requests, keys and long prompts are not."""
    if isinstance(exc, ProviderAuth | ContextWindowExceeded):
        return False
    return isinstance(exc, ProviderError | ServiceUnavailable)


class BreakerOpen(ServiceUnavailable):
    """The provider's circuit is open: it is not called until the half-open probe."""

    code = "circuit_open"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int
    initial_s: float
    max_s: float
    budget_s: float
    retry_after_max_s: float

    def _wait(self) -> Callable[[RetryCallState], float]:
        # initial * 2**n plus up to `initial` of random jitter, at most max_s.
        backoff = wait_exponential_jitter(
            multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None:
                return exc.retry_after
            return float(backoff(state))

        return wait

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, BreakerOpen) or not is_retryable(exc):
            return False
        if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None:
            return exc.retry_after <= self.retry_after_max_s
        return True

    def retrying(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> AsyncRetrying:
        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None and state.next_action:
                exc = state.outcome.exception()
                assert exc is not None
                on_retry(exc, state.next_action.sleep)

        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.budget_s),
            wait=self._wait(),
            retry=retry_if_exception(self._should_retry),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


class Breakers:
    """One purgatory circuit breaker per provider, with its state readable for metrics."""

    def __init__(
        self,
        *,
        threshold: int,
        reset_s: float,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        # Bad requests and over-long prompts say nothing about the provider's health.
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=reset_s,
            exclude=_EXCLUDED,
        )
        self._reset_s = reset_s
        self._states: dict[str, str] = {}
        self._on_state = on_state
        self._factory.add_listener(self._hook)

    def _hook(self, name: str, event_name: str, event: Any) -> None:
        if event_name == "state_changed":
            self._states[name] = event.state
            if self._on_state is not None:
                self._on_state(name, event.state)

    def state(self, name: str) -> str:
        """'closed', 'opened' or 'half-opened'."""
        return self._states.get(name, "closed")

    def call(self, name: str) -> _BreakerCall:
        """``async with breakers.call(name):`` around one call to the provider."""
        return _BreakerCall(self, name)


class _BreakerCall:
    def __init__(self, breakers: Breakers, name: str) -> None:
        self._breakers = breakers
        self._name = name
        self._breaker: Any = None

    async def __aenter__(self) -> None:
        self._breaker = await self._breakers._factory.get_breaker(self._name)
        try:
            await self._breaker.__aenter__()
        except OpenedState as exc:
            raise BreakerOpen(
                f"{self._name} failed repeatedly; it is skipped for a while",
                retry_after=self._breakers._reset_s,
            ) from exc

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            exc_type, exc = None, None  # the caller went away: no verdict on the provider
        await self._breaker.__aexit__(exc_type, exc, tb)


def _excluded(exc: BaseException) -> bool:
    return not is_retryable(exc) and not isinstance(exc, ProviderAuth)


_EXCLUDED: list[Any] = [(BaseException, _excluded)]
