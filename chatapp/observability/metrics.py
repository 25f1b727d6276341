"""ChatApp's metrics: what each component records, over a backend chosen where it runs.

Every component records into its own group (`ProviderMetrics`, `HttpMetrics`,
`TurnMetrics`, `ShardMetrics`, `AuthMetrics`), built from an `Instruments` factory:

- on Ray (every replica and shard), `deployments.observe.RayInstruments`: Ray's metrics
  API. Each worker's series go to its node's metrics agent, which Prometheus scrapes on
  every node (the PodMonitor in `cluster/monitoring/`); queries sum the workers. This is
  how counters of many ingress, router and shard replicas on many nodes add up correctly
  (a registry per process cannot be scraped: only the ingress has an HTTP port), and it
  is the same path as Ray Serve's own metrics (replicas, queues, latency per deployment).
  Ray prefixes every name with `ray_`: `chatapp_http_requests_total` is scraped as
  `ray_chatapp_http_requests_total`.
- without Ray (core tests, one process), `PrometheusInstruments`: a prometheus-client
  registry.

Names are under `chatapp_`, with their unit; labels are bounded (route templates, not
paths; error codes, not messages; never a user id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

BREAKER_STATES = {"closed": 0, "half-opened": 1, "opened": 2}
# Seconds, for request and turn latencies (ms to a minute).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class CounterChild(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class HistogramChild(Protocol):
    def observe(self, amount: float) -> None: ...


class GaugeChild(Protocol):
    def set(self, value: float) -> None: ...


class CounterFamily(Protocol):
    def labels(self, *values: str) -> CounterChild: ...


class HistogramFamily(Protocol):
    def labels(self, *values: str) -> HistogramChild: ...


class GaugeFamily(Protocol):
    def labels(self, *values: str) -> GaugeChild: ...


class Instruments(Protocol):
    """Makes metric families; a counter's exposed name is `name` + `_total`."""

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> CounterFamily: ...

    def histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> HistogramFamily: ...

    def gauge(self, name: str, doc: str, labels: Sequence[str]) -> GaugeFamily: ...


class _Unlabelled:
    """A prometheus-client metric without labels behind the `labels()` of a family."""

    def __init__(self, metric: PromCounter | PromHistogram | PromGauge) -> None:
        self._metric = metric

    def labels(self, *values: str) -> Any:
        if values:
            raise ValueError(f"{self._metric} has no labels: {values}")
        return self._metric


class PrometheusInstruments:
    """Instruments in one prometheus-client registry (one process, no Ray)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

    def counter(self, name: str, doc: str, labels: Sequence[str]) -> CounterFamily:
        metric = PromCounter(name, doc, labels, registry=self.registry)
        return metric if labels else _Unlabelled(metric)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> HistogramFamily:
        metric = PromHistogram(name, doc, labels, buckets=buckets, registry=self.registry)
        return metric if labels else _Unlabelled(metric)

    def gauge(self, name: str, doc: str, labels: Sequence[str]) -> GaugeFamily:
        metric = PromGauge(name, doc, labels, registry=self.registry)
        return metric if labels else _Unlabelled(metric)

    def text(self) -> bytes:
        """The Prometheus text exposition of everything recorded."""
        return generate_latest(self.registry)


class ProviderMetrics:
    """The provider router: requests, errors by kind, retries, fallbacks, breaker state,
    cache hits and misses, time to first token and tokens per second."""

    def __init__(self, instruments: Instruments | None = None) -> None:
        m = instruments or PrometheusInstruments()
        self.requests = m.counter(
            "chatapp_llm_requests",
            "Provider attempts by outcome (ok, error, skipped).",
            ["provider", "model", "outcome"],
        )
        self.errors = m.counter(
            "chatapp_llm_errors",
            "Provider errors by kind (the chatapp error code).",
            ["provider", "model", "kind"],
        )
        self.retries = m.counter(
            "chatapp_llm_retries", "Retries of a provider call.", ["provider", "model"]
        )
        self.fallbacks = m.counter(
            "chatapp_llm_fallbacks",
            "Requests passed on to the next model of the chain.",
            ["from_model", "to_model"],
        )
        self.breaker_state = m.gauge(
            "chatapp_llm_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
        )
        self.cache = m.counter("chatapp_llm_cache", "Response cache lookups by result.", ["result"])
        self.ttft = m.histogram(
            "chatapp_llm_time_to_first_token_seconds",
            "Time from the provider request to its first token.",
            ["provider", "model"],
            (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
        )
        self.tokens_per_s = m.histogram(
            "chatapp_llm_tokens_per_second",
            "Completion tokens per second after the first token.",
            ["provider", "model"],
            (1, 5, 10, 25, 50, 100, 200, 400, 800),
        )

    def set_breaker(self, provider: str, state: str) -> None:
        self.breaker_state.labels(provider).set(BREAKER_STATES.get(state, 0))


class HttpMetrics:
    """The ingress: requests by route template, method and status; latency; requests in
    flight; server-sent-event streams open."""

    def __init__(self, instruments: Instruments) -> None:
        m = instruments
        self.requests = m.counter(
            "chatapp_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
        )
        self.duration = m.histogram(
            "chatapp_http_request_duration_seconds",
            "Time from the request to the end of its response (a stream's end included).",
            ["route", "method"],
            LATENCY_BUCKETS,
        )
        self.in_flight = m.gauge(
            "chatapp_http_requests_in_flight", "Requests being answered, per replica.", []
        )
        self.streams = m.gauge(
            "chatapp_http_sse_streams_open", "Server-sent-event streams open, per replica.", []
        )


class TurnMetrics:
    """A chat turn or completion as its user sees it (the chat service in the ingress)."""

    def __init__(self, instruments: Instruments) -> None:
        m = instruments
        self.ttft = m.histogram(
            "chatapp_turn_time_to_first_token_seconds",
            "From the turn's start in the ingress to its first token (what the user waits).",
            ["kind"],
            LATENCY_BUCKETS,
        )
        self.duration = m.histogram(
            "chatapp_turn_duration_seconds",
            "From the turn's start to the end of its answer (its last token, error or stop).",
            ["kind", "outcome"],
            LATENCY_BUCKETS,
        )
        self.tokens = m.counter(
            "chatapp_turn_tokens",
            "Tokens of turns by direction (prompt, completion).",
            ["kind", "direction"],
        )
        self.retrieval = m.histogram(
            "chatapp_retrieval_duration_seconds",
            "Knowledge-base search for a turn.",
            ["outcome"],
            LATENCY_BUCKETS,
        )
        self.retrieval_hits = m.counter(
            "chatapp_retrieval_hits", "Sources a turn was grounded in.", []
        )
        self.refusals = m.counter(
            "chatapp_budget_refusals",
            "Turns refused before anything was stored, by limit (the error code).",
            ["limit"],
        )
        self.summaries = m.counter(
            "chatapp_summaries",
            "Running summaries of long chats written after a turn, by outcome (stored; stale: "
            "a newer one or an edit came first; failed: logged, the chat goes on without it).",
            ["outcome"],
        )


class ShardMetrics:
    """The conversation shards: hot conversations, activations and passivations, SQL write
    latency, conflicts."""

    def __init__(self, instruments: Instruments) -> None:
        m = instruments
        self.hot = m.gauge(
            "chatapp_shard_hot_conversations", "Conversations held hot, per shard.", []
        )
        self.hot_bytes = m.gauge(
            "chatapp_shard_hot_bytes", "Estimated memory of the hot conversations, per shard.", []
        )
        self.activations = m.counter(
            "chatapp_shard_activations", "Conversations loaded from SQL into a shard.", []
        )
        self.passivations = m.counter(
            "chatapp_shard_passivations",
            "Conversations dropped from a shard, by reason (idle, capacity, stale).",
            ["reason"],
        )
        self.write = m.histogram(
            "chatapp_shard_write_duration_seconds",
            "A message written through to SQL.",
            ["role"],
            LATENCY_BUCKETS,
        )
        self.conflicts = m.counter(
            "chatapp_shard_conflicts",
            "Turns refused (409: a reply still running, an edit in progress) or stale writes "
            "retried from SQL, by kind.",
            ["kind"],
        )


class AuthMetrics:
    """Logins by outcome and rate-limit rejections by limit."""

    def __init__(self, instruments: Instruments) -> None:
        m = instruments
        self.logins = m.counter(
            "chatapp_auth_logins",
            "Login attempts by method (password, oidc, refresh) and outcome.",
            ["method", "outcome"],
        )
        self.rate_limited = m.counter(
            "chatapp_rate_limited", "Requests refused with 429, by limit.", ["limit"]
        )
