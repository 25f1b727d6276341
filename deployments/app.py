"""The application builder: settings in, the composed Serve application out.

`serve_config.yaml` names `deployments.app:build_app` as its import_path; `args:` there
are settings overrides by section, e.g. ``{"llm": {"engine": "simulated"}}``.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from chatapp.config import Settings
from chatapp.db.engine import migrate
from deployments.indexer import Indexer
from deployments.ingress.app import ChatIngress
from deployments.llm_server import SelfHostedLLM
from deployments.retrieval import Retrieval, retrieval_options
from deployments.router import ChatRouter
from deployments.scaling import ingress_autoscaling, llm_autoscaling, router_autoscaling


def compose(settings: Settings) -> Application:
    """Bind the deployments for `settings` (no side effects)."""
    logging_config = {"enable_access_log": settings.serve.access_log}
    # a replica removed by downscaling lets its streams finish (a killed one cannot)
    shutdown = {"graceful_shutdown_timeout_s": settings.serve.graceful_shutdown_timeout_s}
    llm = SelfHostedLLM.options(  # type: ignore[attr-defined]
        autoscaling_config=llm_autoscaling(settings.llm, settings.serve),
        max_ongoing_requests=settings.llm.max_ongoing_requests,
        ray_actor_options={"num_cpus": settings.llm.num_cpus, "num_gpus": settings.llm.num_gpus},
        logging_config=logging_config,
        **shutdown,
    ).bind(settings.llm, settings.serve, settings.logs, settings.environment)
    router = ChatRouter.options(  # type: ignore[attr-defined]
        autoscaling_config=router_autoscaling(settings.serve),
        max_ongoing_requests=settings.serve.router_max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},
        logging_config=logging_config,
        **shutdown,
    ).bind(llm, settings)
    retrieval = indexer = None
    if settings.rag.enabled:
        retrieval = Retrieval.options(  # type: ignore[attr-defined]
            **retrieval_options(settings.rag, settings.serve, logging_config)
        ).bind(settings.rag)
        indexer = Indexer.options(  # type: ignore[attr-defined]
            num_replicas=settings.rag.indexer_replicas, logging_config=logging_config
        ).bind(settings, retrieval)
    return ChatIngress.options(  # type: ignore[attr-defined,no-any-return]
        autoscaling_config=ingress_autoscaling(settings.serve),
        max_ongoing_requests=settings.serve.ingress_max_ongoing_requests,
        # The replica's HTTP server (uvicorn) would otherwise take the client address from
        # X-Forwarded-For whenever the peer is 127.0.0.1, e.g. Serve's HAProxy on the same
        # node passing on whatever header the client sent: a fresh address per request
        # defeated every per-client limit. ChatApp reads the header itself, only behind
        # AUTH_TRUSTED_PROXIES (deployments/ingress/deps.py, `client_ip`).
        ray_actor_options={
            "num_cpus": 0,
            "runtime_env": {"env_vars": {"FORWARDED_ALLOW_IPS": ""}},
        },
        logging_config=logging_config,
        **shutdown,
    ).bind(settings, router, retrieval, indexer)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Validate settings once, apply database migrations, compose the application."""
    settings = Settings.from_overrides(args)
    # Replicas may run elsewhere than the builder's working directory.
    rag = settings.rag.model_copy(update={"index_dir": settings.rag.index_dir.resolve()})
    settings = settings.model_copy(update={"rag": rag})
    migrate(settings.database)
    return compose(settings)
