"""GET /metrics: this Ray node's Prometheus text, for one box and for a quick look.

ChatApp's metrics are recorded where the work happens (ingress, router, shards) through
Ray's metrics API (`deployments/observe.py`); each node's metrics agent exports its
workers' series, Ray Serve's and Ray's own on the node's metrics port. This route passes
on the exposition of the node this ingress replica runs on: on one machine that is every
series. On a cluster Prometheus scrapes every node's metrics port instead (the PodMonitor
in `cluster/monitoring/`), which is the only view that adds up all replicas.

Who may read it is `Settings.metrics_access()`: the route is not mounted when it is
"off" (production without `SERVE_METRICS_TOKEN`), and wants the bearer token when set.
"""

from __future__ import annotations

import hmac
from functools import cache
from typing import Annotated

import httpx
import ray
from fastapi import APIRouter, Depends, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST

from chatapp.errors import ServiceUnavailable, Unauthenticated
from deployments.ingress.deps import StateDep


async def metrics_access(
    state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Refuse the scrape unless it carries the metrics token (when one is configured)."""
    token = state.settings.serve.metrics_token
    if state.settings.metrics_access() != "token" or token is None:
        return
    expected = f"Bearer {token.get_secret_value()}".encode()
    if not hmac.compare_digest((authorization or "").encode(), expected):
        raise Unauthenticated(
            "/metrics wants `Authorization: Bearer <SERVE_METRICS_TOKEN>` (the scraper's "
            "bearer token)"
        )


router = APIRouter(tags=["ops"])


@cache
def node_metrics_url() -> str:
    """Where this node's metrics agent serves Prometheus text."""
    node_id = ray.get_runtime_context().get_node_id()
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


@router.get("/metrics", response_class=Response, dependencies=[Depends(metrics_access)])
async def metrics() -> Response:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(node_metrics_url())
            response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"this node's metrics agent did not answer ({type(exc).__name__})", retry_after=5
        ) from exc
    return Response(content=response.content, media_type=CONTENT_TYPE_LATEST)
