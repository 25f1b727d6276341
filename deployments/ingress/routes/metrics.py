"""GET /metrics: Prometheus text.

Provider metrics are recorded where the work happens, in the ChatRouter replica; this
route fetches that replica's exposition through its handle (one bounded Ray call per
scrape, none on the chat path). Each ChatRouter replica keeps its own counters: with
several router replicas, scrape them through Ray's metrics export instead, or run one.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from deployments.ingress.deps import StateDep

router = APIRouter(tags=["ops"])


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    return Response(content=await state.router.metrics(), media_type=CONTENT_TYPE_LATEST)
