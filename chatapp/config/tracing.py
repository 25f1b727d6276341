"""Tracing: OpenTelemetry's own variables (`OTEL_*`), read where ChatApp starts.

Off unless `OTEL_TRACES_EXPORTER` names an exporter. The exporter's own settings
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`, `..._TIMEOUT`, `OTEL_BSP_*`,
`OTEL_RESOURCE_ATTRIBUTES`, ...) are read by the OpenTelemetry SDK itself in each process,
so they must be set where Ray starts (every Ray worker inherits them).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from chatapp.config.base import section

EXPORTERS = ("otlp", "console")
_SAMPLERS = {
    "always_on": 1.0,
    "parentbased_always_on": 1.0,
    "always_off": 0.0,
    "parentbased_always_off": 0.0,
    "traceidratio": None,
    "parentbased_traceidratio": None,
}


class TracingSettings(BaseSettings):
    """Traces of chat turns across the ingress, retrieval, shards, router and models."""

    model_config = section("OTEL_")

    traces_exporter: str = Field(
        "none",
        description="OTEL_TRACES_EXPORTER: 'otlp' (to OTEL_EXPORTER_OTLP_ENDPOINT), "
        "'console' (each worker's stdout, for debugging), both comma-separated, or 'none' "
        "(the default: tracing off, the spans cost nothing).",
    )
    exporter_otlp_protocol: str = Field(
        "http/protobuf",
        description="OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' (port 4318), or 'grpc' "
        "(4317; needs `pip install opentelemetry-exporter-otlp-proto-grpc`).",
    )
    exporter_otlp_traces_protocol: str | None = Field(
        None, description="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: the protocol for traces."
    )
    traces_sampler: str = Field(
        "parentbased_always_on",
        description="OTEL_TRACES_SAMPLER: " + ", ".join(_SAMPLERS) + ". Ray Serve's "
        "sampler is always parent-based: a request whose traceparent header says 'sampled' "
        "is traced.",
    )
    traces_sampler_arg: float | None = Field(
        None,
        ge=0,
        le=1,
        description="OTEL_TRACES_SAMPLER_ARG: the share of turns traced by the *traceidratio "
        "samplers (default 1.0).",
    )
    service_name: str = Field(
        "chatapp", description="OTEL_SERVICE_NAME: the service the spans are reported as."
    )

    @field_validator("traces_exporter")
    @classmethod
    def _known_exporters(cls, value: str) -> str:
        names = {n.strip() for n in value.split(",") if n.strip()} - {"none"}
        unknown = names - set(EXPORTERS)
        if unknown:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER: {', '.join(sorted(unknown))} is not an exporter "
                f"ChatApp sets up; use {', '.join(EXPORTERS)} or none"
            )
        return value

    @field_validator("traces_sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in _SAMPLERS:
            raise ValueError(f"OTEL_TRACES_SAMPLER: use one of {', '.join(_SAMPLERS)}")
        return value

    def exporters(self) -> list[str]:
        """The exporters named, in order; none: tracing is off."""
        names = [n.strip() for n in self.traces_exporter.split(",")]
        return [n for n in EXPORTERS if n in names]

    @property
    def enabled(self) -> bool:
        return bool(self.exporters())

    def protocol(self) -> str:
        return self.exporter_otlp_traces_protocol or self.exporter_otlp_protocol

    def sampling_ratio(self) -> float:
        """The share of new traces recorded, as Ray Serve's sampler takes it."""
        fixed = _SAMPLERS[self.traces_sampler]
        if fixed is not None:
            return fixed
        return 1.0 if self.traces_sampler_arg is None else self.traces_sampler_arg
