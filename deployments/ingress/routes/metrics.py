"""GET /metrics: Prometheus text.

Provider metrics are recorded where the work happens, in the ChatRouter replica; this
route fetches that replica's exposition through its handle (one bounded Ray call per
scrape, none on the chat path). Each ChatRouter replica keeps its own counters: with
several router replicas, scrape them through Ray's metrics export instead, or run one.

Who may read it is `Settings.metrics_access()`: the route is not mounted when it is
"off" (production without `SERVE_METRICS_TOKEN`), and wants the bearer token when set.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST

from chatapp.errors import Unauthenticated
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


@router.get("/metrics", response_class=Response, dependencies=[Depends(metrics_access)])
async def metrics(state: StateDep) -> Response:
    return Response(content=await state.router.metrics(), media_type=CONTENT_TYPE_LATEST)
