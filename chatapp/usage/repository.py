"""Usage read from the messages themselves: every reply row carries its tokens, cost,
provider and whether it came from the cache (written with the reply, no extra write)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatapp.db.models import Conversation, Message
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


def _replies(user_id: uuid.UUID, since: datetime) -> tuple[object, ...]:
    return (
        Conversation.user_id == user_id,
        Message.role == "assistant",
        Message.created_at >= since,
    )


async def billable_tokens(*, session: AsyncSession, user_id: uuid.UUID, since: datetime) -> int:
    """Prompt plus completion tokens of the user's replies since `since`, cache hits free."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Message.prompt_tokens + Message.completion_tokens), 0))
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(*_replies(user_id, since), Message.cached.is_(False))  # type: ignore[arg-type]
    )
    return int(total or 0)


async def usage_totals(
    *, session: AsyncSession, user_id: uuid.UUID, since: datetime
) -> UsageTotals:
    rows = (
        await session.execute(
            select(
                Message.model,
                Message.provider,
                func.count(Message.id),
                func.coalesce(func.sum(Message.prompt_tokens), 0),
                func.coalesce(func.sum(Message.completion_tokens), 0),
                func.coalesce(func.sum(Message.cost_usd), 0.0),
                func.coalesce(func.sum(case((Message.cached, 1), else_=0).cast(Integer)), 0),
            )
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(*_replies(user_id, since))  # type: ignore[arg-type]
            .group_by(Message.model, Message.provider)
            .order_by(Message.model, Message.provider)
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
