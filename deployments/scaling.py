"""Serve autoscaling options of every ChatApp deployment, from settings: one shape for the
ingress, the router, the self-hosted LLM and retrieval.

Serve scales a deployment on its in-flight requests per replica, averaged over
`SERVE_AUTOSCALING_LOOK_BACK_PERIOD_S` from reports sent every
`SERVE_AUTOSCALING_METRICS_INTERVAL_S` (by the replicas, and by the callers' handles for
queued requests): above `target_ongoing_requests` for `SERVE_UPSCALE_DELAY_S` it adds
replicas (up to `max_replicas`), below it for `SERVE_DOWNSCALE_DELAY_S` it removes them
(down to `min_replicas`). How each default target was chosen is in docs/capacity.md;
tests/cluster/test_autoscaling.py shows a load step scaling every deployment up and down.
"""

from __future__ import annotations

from typing import Any

from chatapp.config import LLMSettings, ServeSettings

# In-flight requests per self-hosted replica aimed at, by engine (LLM_TARGET_ONGOING_REQUESTS
# unset): llama.cpp answers one request at a time, so a second one waiting already means a
# slower answer; vLLM batches continuously; the simulated engine costs nothing per request.
LLM_TARGETS = {"llamacpp": 2.0, "vllm": 32.0, "simulated": 64.0}


def autoscaling(
    serve: ServeSettings, *, min_replicas: int, max_replicas: int, target: float
) -> dict[str, Any]:
    """Serve's `autoscaling_config` (a fixed count when min == max)."""
    return {
        "min_replicas": min_replicas,
        "initial_replicas": max(1, min_replicas),
        "max_replicas": max(min_replicas, max_replicas),
        "target_ongoing_requests": target,
        "upscale_delay_s": serve.upscale_delay_s,
        "downscale_delay_s": serve.downscale_delay_s,
        "look_back_period_s": serve.autoscaling_look_back_period_s,
        # deprecated by Serve in favour of environment variables it does not read yet (2.60)
        "metrics_interval_s": serve.autoscaling_metrics_interval_s,
    }


def ingress_autoscaling(serve: ServeSettings) -> dict[str, Any]:
    return autoscaling(
        serve,
        min_replicas=serve.ingress_min_replicas,
        max_replicas=serve.ingress_max_replicas,
        target=serve.ingress_target_ongoing_requests,
    )


def router_autoscaling(serve: ServeSettings) -> dict[str, Any]:
    return autoscaling(
        serve,
        min_replicas=serve.router_min_replicas,
        max_replicas=serve.router_max_replicas,
        target=serve.router_target_ongoing_requests,
    )


def llm_autoscaling(llm: LLMSettings, serve: ServeSettings) -> dict[str, Any]:
    target = llm.target_ongoing_requests or LLM_TARGETS[llm.engine]
    return autoscaling(
        serve, min_replicas=llm.min_replicas, max_replicas=llm.max_replicas, target=target
    )
