"""/api/usage: the caller's tokens and cost (this month unless `since` says otherwise),
by model, and their monthly token budget when one is configured."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from chatapp.errors import InvalidRequest
from chatapp.usage.repository import month_start, usage_totals
from chatapp.usage.schemas import UsagePublic
from deployments.ingress.deps import CurrentUser, ReadSessionDep, StateDep

router = APIRouter(prefix="/api/usage", tags=["usage"])


@router.get("")
async def get_usage(
    user: CurrentUser,
    session: ReadSessionDep,
    state: StateDep,
    since: Annotated[
        datetime | None,
        Query(description="ISO 8601 time with a zone; default: the start of this month (UTC)."),
    ] = None,
) -> UsagePublic:
    if since is not None and since.tzinfo is None:
        raise InvalidRequest("since: give a time zone, e.g. 2026-11-01T00:00:00Z")
    since = since or month_start()
    meter = state.chat.usage
    if meter is not None:  # this replica's rows still in memory first (the replica lags)
        await meter.ledger.flush()
    totals = await usage_totals(session=session, user_id=user.id, since=since)
    budget = await meter.budget(user.id) if meter is not None else None
    return UsagePublic(**totals.model_dump(), budget=budget)
