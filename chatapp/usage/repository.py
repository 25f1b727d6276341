"""Usage read from the append-only ledger (`usage_events`, written by
`chatapp.usage.ledger`): one row per model call, kept when conversations are deleted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.db.models import UsageEvent
from chatapp.usage.schemas import ModelUsage, UsageTotals


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime | None = None) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


async def billable_tokens(*, session: AsyncSession, user_id: uuid.UUID, since: datetime) -> int:
    """Prompt plus completion tokens of the user's model calls since `since`, cache hits
    free, from the usage ledger (deleted conversations and /v1 calls included)."""
    total = await session.scalar(
        select(
            func.coalesce(func.sum(UsageEvent.prompt_tokens + UsageEvent.completion_tokens), 0)
        ).where(
            UsageEvent.user_id == user_id,
            UsageEvent.created_at >= since,
            UsageEvent.cached.is_(False),
        )
    )
    return int(total or 0)


async def usage_totals(
    *, session: AsyncSession, user_id: uuid.UUID, since: datetime
) -> UsageTotals:
    rows = (
        await session.execute(
            select(
                UsageEvent.model,
                UsageEvent.provider,
                func.count(UsageEvent.id),
                func.coalesce(func.sum(UsageEvent.prompt_tokens), 0),
                func.coalesce(func.sum(UsageEvent.completion_tokens), 0),
                func.coalesce(func.sum(UsageEvent.cost_usd), 0.0),
                func.coalesce(func.sum(case((UsageEvent.cached, 1), else_=0).cast(Integer)), 0),
            )
            .where(UsageEvent.user_id == user_id, UsageEvent.created_at >= since)
            .group_by(UsageEvent.model, UsageEvent.provider)
            .order_by(UsageEvent.model, UsageEvent.provider)
        )
    ).all()
    by_model = [
        ModelUsage(
            model=model or "unknown",
            provider=provider,
            replies=int(replies),
            cached_replies=int(cached),
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            cost_usd=round(float(cost), 8),
        )
        for model, provider, replies, prompt, completion, cost, cached in rows
    ]
    return UsageTotals.from_models(since=since, by_model=by_model)
