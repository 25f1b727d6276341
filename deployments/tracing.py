"""The OpenTelemetry SDK in ChatApp's Ray processes (`chatapp.observability.tracing` says
which spans there are).

- Serve replicas and proxies: Ray Serve sets up its own tracing when
  `RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH` names a function returning span processors;
  `use_tracing` (deployments/serve_env.py) names `span_processors` below, and Serve's
  tracer provider then records ChatApp's spans with its own (the request's span in the
  ingress, each handle call and each replica's handling of it) and carries the trace
  context across deployment handles.
- FastAPI (0.165+) traces every request itself once an SDK is set up, its HTTP span's
  parent taken from the request's headers only: without a `traceparent` from the client
  that would start a second trace beside Serve's for each request. `span_processors`
  therefore installs `ContinueCurrent`, the configured propagator except that a request
  carrying no trace context continues the current one (Serve's span of the request), so
  each request is one trace: Serve's span, FastAPI's under it, ChatApp's under that; and
  a request Serve did not sample (it then sets no span) is not traced by FastAPI either,
  so `OTEL_TRACES_SAMPLER_ARG` is the share of requests traced, each one whole.
  FastAPI also puts the query string on its span (`url.query`): `RedactQuery` keeps only
  its parameters' names (a search's terms, an OIDC callback's code never leave).
- The conversation shards are plain actors: `setup_actor_tracing` gives them the same
  exporters under a tracer provider of their own (sampler from `OTEL_TRACES_SAMPLER`,
  parent-based by default: they follow the turn that called them).

The SDK reads the exporter's settings (`OTEL_EXPORTER_OTLP_*`, `OTEL_BSP_*`,
`OTEL_SERVICE_NAME`, ...) from each worker's environment.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from chatapp.config import TracingSettings

logger = logging.getLogger(__name__)

QUERY = "url.query"
_NOT_SAMPLED = trace.set_span_in_context(
    trace.NonRecordingSpan(
        trace.SpanContext(trace_id=1, span_id=1, is_remote=True, trace_flags=trace.TraceFlags(0))
    )
)


def span_processors() -> list[SpanProcessor]:
    """Ray Serve's `RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH`, called once in each replica
    and proxy: the exporters `OTEL_TRACES_EXPORTER` names, each behind a batching
    processor (spans leave the request path at once and are sent in the background)."""
    if not isinstance(propagate.get_global_textmap(), ContinueCurrent):
        propagate.set_global_textmap(ContinueCurrent(propagate.get_global_textmap()))
    return processors_for(TracingSettings())


class ContinueCurrent(TextMapPropagator):
    """`inner` (`OTEL_PROPAGATORS`: W3C trace context and baggage by default), except that
    extracting from a carrier with no trace context, over no given context, gives the
    current context rather than an empty one; with no span current, a parent that was
    not sampled (what starts under it is not either)."""

    def __init__(self, inner: TextMapPropagator) -> None:
        self._inner = inner

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        extracted = self._inner.extract(carrier, context, getter)
        if context is None and not trace.get_current_span(extracted).get_span_context().is_valid:
            current = otel_context.get_current()
            if trace.get_current_span(current).get_span_context().is_valid:
                return current
            return _NOT_SAMPLED
        return extracted

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        self._inner.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self._inner.fields


def processors_for(settings: TracingSettings) -> list[SpanProcessor]:
    exporting = [BatchSpanProcessor(_exporter(name, settings)) for name in settings.exporters()]
    return [RedactQuery(), *exporting]


class RedactQuery(SpanProcessor):
    """`url.query` with each value replaced by `REDACTED`, as the span starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        query = (span.attributes or {}).get(QUERY)
        if isinstance(query, str):
            pairs = parse_qsl(query, keep_blank_values=True)
            span.set_attribute(QUERY, "&".join(f"{name}=REDACTED" for name, _ in pairs))


def _exporter(name: str, settings: TracingSettings) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = settings.protocol()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs "
                "`pip install opentelemetry-exporter-otlp-proto-grpc` (or use http/protobuf)"
            ) from exc
        exporter: SpanExporter = GrpcExporter()
        return exporter
    if protocol != "http/protobuf":
        raise RuntimeError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def setup_actor_tracing(settings: TracingSettings) -> bool:
    """The tracer provider of an actor that is no Serve replica (a shard), when tracing
    is on and none is set yet; whether it records spans."""
    if not settings.enabled:
        return False
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True  # set up already (an actor restarted in a process that had one)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.service_name}))
    for processor in processors_for(settings):
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    logger.info("tracing to %s", ", ".join(settings.exporters()))
    return True
