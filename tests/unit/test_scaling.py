"""Every deployment of the composed application that serves requests autoscales from
settings: the ingress, the router, the self-hosted LLM (target by engine) and retrieval,
with the same delays. The indexer, which takes its work from PostgreSQL, runs
RAG_INDEXER_REPLICAS replicas."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from ray.serve import Application

from chatapp.config import ServeSettings, Settings
from deployments.app import compose


def deployments(app: Application) -> dict[str, Any]:
    """Each bound deployment of `app`'s graph by name, with its autoscaling config."""
    found: dict[str, Any] = {}

    def walk(node: Application) -> None:
        bound = node._bound_deployment
        config = bound._deployment_config
        found[bound.name] = config.autoscaling_config or config.num_replicas
        for arg in bound.init_args:
            if isinstance(arg, Application):
                walk(arg)

    walk(app)
    return found


def test_every_deployment_autoscales_between_its_settings() -> None:
    settings = Settings.from_overrides(
        {
            "llm": {"engine": "llamacpp", "min_replicas": 1, "max_replicas": 3},
            "serve": {
                "ingress_min_replicas": 2,
                "ingress_max_replicas": 6,
                "ingress_target_ongoing_requests": 100,
                "router_max_replicas": 4,
                "upscale_delay_s": 5,
                "downscale_delay_s": 120,
                "autoscaling_look_back_period_s": 12,
                "autoscaling_metrics_interval_s": 3,
            },
            "rag": {"enabled": True, "min_replicas": 0, "max_replicas": 3, "indexer_replicas": 2},
        }
    )
    scaling = deployments(compose(settings))
    assert scaling.pop("Indexer") == 2
    assert set(scaling) == {"ChatIngress", "ChatRouter", "SelfHostedLLM", "Retrieval"}
    ingress = scaling["ChatIngress"]
    assert (ingress.min_replicas, ingress.max_replicas) == (2, 6)
    assert ingress.initial_replicas == 2 and ingress.target_ongoing_requests == 100
    assert (scaling["ChatRouter"].min_replicas, scaling["ChatRouter"].max_replicas) == (1, 4)
    llm = scaling["SelfHostedLLM"]
    assert (llm.min_replicas, llm.max_replicas, llm.target_ongoing_requests) == (1, 3, 2)
    retrieval = scaling["Retrieval"]
    assert (retrieval.min_replicas, retrieval.initial_replicas, retrieval.max_replicas) == (0, 1, 3)
    for config in scaling.values():
        assert (config.upscale_delay_s, config.downscale_delay_s) == (5, 120)
        assert (config.look_back_period_s, config.metrics_interval_s) == (12, 3)


def test_defaults_keep_serves_own_load_window() -> None:
    scaling = deployments(compose(Settings.from_overrides({})))
    assert scaling.pop("Indexer") == 1
    for config in scaling.values():
        assert (config.look_back_period_s, config.metrics_interval_s) == (30, 10)


def test_the_look_back_window_must_span_several_reports() -> None:
    with pytest.raises(ValidationError, match="LOOK_BACK_PERIOD_S"):
        ServeSettings(autoscaling_look_back_period_s=5, autoscaling_metrics_interval_s=5)


def test_the_llm_target_follows_the_engine_unless_set() -> None:
    def target(llm: dict[str, Any]) -> float:
        app = compose(Settings.from_overrides({"llm": llm}))
        return float(deployments(app)["SelfHostedLLM"].target_ongoing_requests)

    assert target({"engine": "llamacpp"}) == 2
    assert target({"engine": "vllm"}) == 32
    assert target({"engine": "simulated"}) == 64
    assert target({"engine": "llamacpp", "target_ongoing_requests": 5}) == 5


def test_a_replica_removed_by_downscaling_lets_its_streams_finish() -> None:
    """Downscaling must not cut replies: the ingress, router and model replicas wait for
    their streams as long as the longest answer may take."""
    settings = Settings.from_overrides({"serve": {"graceful_shutdown_timeout_s": 240}})
    waits: dict[str, float] = {}

    def walk(node: Application) -> None:
        bound = node._bound_deployment
        waits[bound.name] = bound._deployment_config.graceful_shutdown_timeout_s
        for arg in bound.init_args:
            if isinstance(arg, Application):
                walk(arg)

    walk(compose(settings))
    assert {n: waits[n] for n in ("ChatIngress", "ChatRouter", "SelfHostedLLM")} == {
        "ChatIngress": 240,
        "ChatRouter": 240,
        "SelfHostedLLM": 240,
    }
    assert Settings.from_overrides({}).serve.graceful_shutdown_timeout_s >= (
        Settings.from_overrides({}).providers.total_timeout_s
    )
