"""Provider metrics (prometheus-client): requests, errors by kind, retries, fallbacks,
breaker state, cache hits and misses, time to first token and tokens per second.

Each `ProviderMetrics` owns its registry: the router replica records into it and the
ingress serves its text at GET /metrics (see `deployments/ingress/routes/metrics.py`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BREAKER_STATES = {"closed": 0, "half-opened": 1, "opened": 2}


class ProviderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "chatapp_llm_requests",
            "Provider attempts by outcome (ok, error, skipped).",
            ["provider", "model", "outcome"],
            registry=r,
        )
        self.errors = Counter(
            "chatapp_llm_errors",
            "Provider errors by kind (the chatapp error code).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "chatapp_llm_retries", "Retries of a provider call.", ["provider", "model"], registry=r
        )
        self.fallbacks = Counter(
            "chatapp_llm_fallbacks",
            "Requests passed on to the next model of the chain.",
            ["from_model", "to_model"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "chatapp_llm_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=r,
        )
        self.cache = Counter(
            "chatapp_llm_cache", "Response cache lookups by result.", ["result"], registry=r
        )
        self.ttft = Histogram(
            "chatapp_llm_time_to_first_token_seconds",
            "Time from the request to the first token.",
            ["provider", "model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.tokens_per_s = Histogram(
            "chatapp_llm_tokens_per_second",
            "Completion tokens per second after the first token.",
            ["provider", "model"],
            buckets=(1, 5, 10, 25, 50, 100, 200, 400, 800),
            registry=r,
        )

    def set_breaker(self, provider: str, state: str) -> None:
        self.breaker_state.labels(provider).set(BREAKER_STATES.get(state, 0))

    def text(self) -> bytes:
        """The Prometheus text exposition of everything recorded."""
        return generate_latest(self.registry)
