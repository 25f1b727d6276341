"""/api/usage: the caller's tokens and cost (this month unless `since` says otherwise),
by model, and their monthly token budget when one is configured."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from chatapp.errors import InvalidRequest
from chatapp.usage.repository import month_start, usage_totals
from chatapp.usage.schemas import UsagePublic
from deployments.ingress.deps import CurrentUser, SessionDep, StateDep

router = APIRouter(prefix="/api/usage", tags=["usage"])


@router.get("")
async def get_usage(
    user: CurrentUser,
    session: SessionDep,
    state: StateDep,
    since: Annotated[
        datetime | None,
        Query(description="ISO 8601 time with a zone; default: the start of this month (UTC)."),
    ] = None,
) -> UsagePublic:
    if since is not None and since.tzinfo is None:
        raise InvalidRequest("since: give a time zone, e.g. 2026-11-01T00:00:00Z")
    since = since or month_start()
    if state.chat.usage is not None:
        return await state.chat.usage.report(user.id, since)
    totals = await usage_totals(session=session, user_id=user.id, since=since)
    return UsagePublic(**totals.model_dump())
