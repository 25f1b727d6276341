"""The optional per-user monthly token budget.

Checked before a turn starts, from a short-lived per-replica view of the user's usage
(read from SQL at most every `refresh_s` per user, plus what this replica has seen since),
so the check costs no query on most requests and usage is never written twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.config import Settings
from chatapp.db.engine import make_engine, make_sessionmaker
from chatapp.errors import RateLimited
from chatapp.usage.repository import billable_tokens, month_start, next_month_start
from chatapp.usage.schemas import BudgetPublic


@dataclass(slots=True)
class _View:
    month: datetime
    used: int
    read_at: float


class TokenBudget:
    def __init__(
        self,
        *,
        monthly_tokens: int,
        sessionmaker: async_sessionmaker[AsyncSession],
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monthly_tokens = monthly_tokens
        self._sessionmaker = sessionmaker
        self._refresh_s = refresh_s
        self._clock = clock
        self._views: dict[uuid.UUID, _View] = {}

    async def used(self, user_id: uuid.UUID) -> int:
        month = month_start()
        view = self._views.get(user_id)
        if view is None or view.month != month or self._clock() - view.read_at >= self._refresh_s:
            async with self._sessionmaker() as session:
                used = await billable_tokens(session=session, user_id=user_id, since=month)
            view = _View(month=month, used=used, read_at=self._clock())
            self._views[user_id] = view
        return view.used

    def record(self, user_id: uuid.UUID, tokens: int) -> None:
        """Count tokens this replica just spent, until the next read from SQL."""
        view = self._views.get(user_id)
        if view is not None:
            view.used += tokens

    async def status(self, user_id: uuid.UUID) -> BudgetPublic:
        used = await self.used(user_id)
        return BudgetPublic(
            monthly_tokens=self.monthly_tokens,
            used_tokens=used,
            remaining_tokens=max(0, self.monthly_tokens - used),
            resets_at=next_month_start(),
        )

    async def check(self, user_id: uuid.UUID) -> None:
        """`RateLimited` (429) once this month's tokens are used up."""
        used = await self.used(user_id)
        if used >= self.monthly_tokens:
            resets = next_month_start()
            raise RateLimited(
                f"monthly token budget used up: {used} of {self.monthly_tokens} tokens this "
                f"month; it resets on {resets:%Y-%m-%d} (UTC). Ask an administrator to raise "
                "USAGE_MONTHLY_TOKEN_BUDGET if you need more.",
                retry_after=(resets - datetime.now(UTC)).total_seconds(),
            )


def build_budget(settings: Settings) -> TokenBudget | None:
    """The monthly token budget, when one is configured (its own small SQL pool)."""
    if settings.usage.monthly_token_budget is None:
        return None
    db = settings.database.model_copy(update={"pool_size": 2})
    return TokenBudget(
        monthly_tokens=settings.usage.monthly_token_budget,
        sessionmaker=make_sessionmaker(make_engine(db)),
        refresh_s=settings.usage.budget_refresh_s,
    )
