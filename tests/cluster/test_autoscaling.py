"""Autoscaling shown end to end: a load step of streamed chat turns scales the ingress, the
router and the self-hosted model above their fewest replicas, and they go back down once
the load stops (replica counts from `serve.status()`); on a cluster whose Ray autoscaler
adds nodes, the replica that fits nowhere brings a new node, which goes once idle.

The application is ChatApp as deployed (`deployments.app.build_app` from settings), with
the simulated engine at a slow token rate so that each turn stays in flight for seconds,
and short autoscaling windows and delays from settings (SERVE_AUTOSCALING_*,
SERVE_UPSCALE_DELAY_S, SERVE_DOWNSCALE_DELAY_S: `tests.cluster.autoscaling.SHORT_WINDOWS`).

The node scenario starts a Ray cluster of its own and waits for the autoscaler twice (a
minute or more on two cores): it is a long form, run by `make cluster` (`--long`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray import serve

from actors.client import kill_shards
from chatapp.config import Settings
from deployments.app import build_app
from tests.cluster import run_scenario
from tests.cluster.autoscaling import SHORT_WINDOWS, Counts, LoadStep, Timeline
from tests.conftest import REDIS_URL, run_app

APP = "autoscale"
SCALED = ("ChatIngress", "ChatRouter", "SelfHostedLLM")
STREAMS = 6  # turns in flight during the load step; every target below is 2


def overrides(pg_url: str) -> dict[str, Any]:
    return {
        "database": {"url": pg_url},
        "rag": {"enabled": False},
        # a turn streams 30 tokens at 10 tokens/s: three seconds in flight, almost no CPU
        "llm": {
            "engine": "simulated",
            "simulated_tokens_per_s": 10,
            "simulated_reply_tokens": 30,
            "num_cpus": 0,
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 2,
        },
        "serve": {
            "ingress_min_replicas": 1,
            "ingress_max_replicas": 2,
            "ingress_target_ongoing_requests": 2,
            "router_min_replicas": 1,
            "router_max_replicas": 2,
            "router_target_ongoing_requests": 2,
            **SHORT_WINDOWS,
        },
        "shards": {"count": 1, "name_prefix": f"{APP}-{uuid.uuid4().hex[:6]}"},
        "auth": {"chat_request_limit": "100000/minute"},
    }


@pytest.fixture(scope="module")
def scaling_app(chat_app: str, pg_url: str) -> Iterator[str]:
    """ChatApp with short autoscaling windows beside the session's application, behind
    the session's HAProxy: the ingress scales on direct-ingress traffic, as in production."""
    settings = overrides(pg_url)
    url = run_app(build_app(settings), name=APP, route_prefix=f"/{APP}", base_url=chat_app)
    yield url
    serve.delete(APP)
    kill_shards(Settings.from_overrides(settings))


def at_rest(counts: Counts) -> bool:
    return all(counts[d] == {"RUNNING": 1} for d in SCALED)


def test_a_load_step_scales_every_deployment_up_and_back_down(scaling_app: str) -> None:
    timeline = Timeline(APP)
    assert timeline.wait_for(at_rest, timeout_s=30), f"not at one replica each:\n{timeline}"
    load = LoadStep(scaling_app, STREAMS)

    timeline.mark(f"load step: {STREAMS} streamed turns in flight")
    load.start()
    peak = dict.fromkeys(SCALED, 1)

    def scaled_up(counts: Counts) -> bool:
        for d in SCALED:
            peak[d] = max(peak[d], counts[d].get("RUNNING", 0))
        return all(n >= 2 for n in peak.values())

    up = timeline.wait_for(scaled_up, timeout_s=60)
    timeline.mark("load stops")
    load.stop()
    timeline.mark(f"load stopped ({load.done} turns answered, {len(load.failures)} failed)")
    down = up and timeline.wait_for(at_rest, timeout_s=60)
    timeline.mark("end")
    print(f"replicas over time:\n{timeline}")  # in the test log

    assert up, f"not every deployment scaled above one replica under load: {peak}\n{timeline}"
    assert down, f"not back to one replica each after the load:\n{timeline}"
    # replicas came and went without failing a turn
    assert load.done >= STREAMS and not load.failures, load.failures[:5]


@pytest.mark.long
def test_the_ray_autoscaler_adds_a_node_under_load_and_removes_it_after(
    pg_url: str, tmp_path: Path
) -> None:
    args = ["--database-url", pg_url, "--redis-url", REDIS_URL]
    result, _ = run_scenario(
        "tests.cluster.autoscaling", args, tmp_path / "result.json", timeout=400
    )
    print(f"replicas and nodes over time:\n{result['timeline']}")  # in the test log
    assert result["at_rest"], result["timeline"]
    assert result["scaled_up"], result["timeline"]
    # the second model replica fits no node but the one the autoscaler added
    assert (result["replicas_on_head"], result["replicas_on_new_node"]) == (1, 1), result
    assert result["scaled_down"], result["timeline"]
    assert result["turns"] >= 6 and not result["failures"], result["failures"]
