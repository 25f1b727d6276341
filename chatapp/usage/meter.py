"""What every model call is metered by, before and after it runs.

Before (`begin`): one of the user's concurrent-reply slots, then a hold of the call's
`max_tokens` on the monthly budget and on the tokens-per-minute limit. A counter already
at its limit refuses with 429; parallel calls see each other's holds, on every replica
when Redis is configured, so they cannot all slip under a limit at once (a call may
overshoot by its own hold at most).

After (`settle`): the holds become what the call really used (partial answers included:
tokens a client stopped reading were still generated), the slot is freed, and one row
goes to the append-only usage ledger, from which the monthly counter is seeded.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import limits
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.config import Settings
from chatapp.errors import RateLimited
from chatapp.usage.counters import Counters, build_counters
from chatapp.usage.ledger import UsageLedger, UsageRecord
from chatapp.usage.repository import (
    billable_tokens,
    month_start,
    next_month_start,
    usage_totals,
)
from chatapp.usage.schemas import BudgetPublic, UsagePublic

logger = logging.getLogger(__name__)

# A reply slot outlives a replica that died holding it by at most this long.
SLOT_TTL_S = 900.0


@dataclass(frozen=True, slots=True)
class Hold:
    """What `begin` took for one call, given back or settled by `settle`."""

    user_id: uuid.UUID
    tokens: int
    slot: str
    month_key: str | None
    window_key: str | None


class UsageMeter:
    def __init__(
        self,
        *,
        counters: Counters,
        ledger: UsageLedger,
        sessionmaker: async_sessionmaker[AsyncSession],
        monthly_tokens: int | None,
        token_limit: str | None,
        max_concurrent: int,
    ) -> None:
        self._counters = counters
        self.ledger = ledger
        self._sessionmaker = sessionmaker
        self.monthly_tokens = monthly_tokens
        self._token_limit = limits.parse(token_limit) if token_limit else None
        self._token_limit_text = token_limit
        self._max_concurrent = max_concurrent

    # -- keys ------------------------------------------------------------------------

    @staticmethod
    def _month_key(user_id: uuid.UUID, month: datetime) -> str:
        return f"month:{user_id}:{month:%Y-%m}"

    def _window(self) -> tuple[int, float]:
        assert self._token_limit is not None
        seconds = self._token_limit.get_expiry()
        now = time.time()
        return int(now // seconds), seconds - now % seconds

    async def _billed_in_sql(self, user_id: uuid.UUID, since: datetime) -> int:
        async with self._sessionmaker() as session:
            return await billable_tokens(session=session, user_id=user_id, since=since)

    # -- before and after a call -------------------------------------------------------

    async def begin(self, user_id: uuid.UUID, *, max_tokens: int) -> Hold:
        """Take a reply slot and hold `max_tokens`; `RateLimited` (429) when a limit is
        reached, with nothing held."""
        slot = uuid.uuid4().hex
        user = str(user_id)
        if not await self._counters.acquire(
            f"replies:{user}", slot, cap=self._max_concurrent, ttl_s=SLOT_TTL_S
        ):
            raise RateLimited(
                f"too many replies at once: at most {self._max_concurrent} per user run at "
                "the same time; wait for one to finish",
                retry_after=1.0,
                limit="concurrent_replies",
            )
        month_key = window_key = None
        try:
            if self.monthly_tokens is not None:
                month = month_start()
                resets = next_month_start()
                month_key = self._month_key(user_id, month)
                held = await self._counters.reserve(
                    month_key,
                    max_tokens,
                    limit=self.monthly_tokens,
                    ttl_s=(resets - datetime.now(UTC) + timedelta(days=1)).total_seconds(),
                    seed=lambda: self._billed_in_sql(user_id, month),
                )
                if not held.ok:
                    month_key = None
                    raise RateLimited(
                        f"monthly token budget used up: {held.total} of {self.monthly_tokens} "
                        f"tokens this month; it resets on {resets:%Y-%m-%d} (UTC). Ask an "
                        "administrator to raise USAGE_MONTHLY_TOKEN_BUDGET if you need more.",
                        limit="monthly_budget",
                        retry_after=(resets - datetime.now(UTC)).total_seconds(),
                    )
            if self._token_limit is not None:
                index, left_s = self._window()
                window_key = f"minute:{user}:{index}"
                held = await self._counters.reserve(
                    window_key,
                    max_tokens,
                    limit=self._token_limit.amount,
                    ttl_s=2 * self._token_limit.get_expiry(),
                )
                if not held.ok:
                    window_key = None
                    raise RateLimited(
                        f"too many tokens: the limit is {self._token_limit_text}; retry in "
                        f"{max(1, round(left_s))} s",
                        retry_after=max(1.0, left_s),
                        limit="tokens_per_minute",
                    )
        except BaseException:
            await self._give_back(user_id, slot, max_tokens, month_key, window_key)
            raise
        return Hold(user_id, max_tokens, slot, month_key, window_key)

    async def settle(self, hold: Hold, used: UsageRecord | None) -> None:
        """The call is over: turn its holds into what it used (None: nothing was
        generated) and write the ledger row."""
        if used is not None:
            self.ledger.append(used)
        tokens = used.billable_tokens if used is not None else 0
        try:
            await self._give_back(
                hold.user_id, hold.slot, hold.tokens - tokens, hold.month_key, hold.window_key
            )
        except Exception as exc:  # the ledger has the row; the counters heal on reseed
            logger.warning("usage counters of %s not settled: %s", hold.user_id, exc)

    async def _give_back(
        self,
        user_id: uuid.UUID,
        slot: str,
        tokens: int,
        month_key: str | None,
        window_key: str | None,
    ) -> None:
        for key in (month_key, window_key):
            if key is not None and tokens:
                await self._counters.adjust(key, -tokens)
        await self._counters.release(f"replies:{user_id}", slot)

    # -- reading -------------------------------------------------------------------------

    async def used_this_month(self, user_id: uuid.UUID) -> int:
        """Tokens counted against this month's budget (holds of calls in progress too)."""
        month = month_start()
        return await self._counters.value(
            self._month_key(user_id, month), seed=lambda: self._billed_in_sql(user_id, month)
        )

    async def budget(self, user_id: uuid.UUID) -> BudgetPublic | None:
        if self.monthly_tokens is None:
            return None
        used = await self.used_this_month(user_id)
        return BudgetPublic(
            monthly_tokens=self.monthly_tokens,
            used_tokens=used,
            remaining_tokens=max(0, self.monthly_tokens - used),
            resets_at=next_month_start(),
        )

    async def report(self, user_id: uuid.UUID, since: datetime) -> UsagePublic:
        """The user's usage since `since` and their budget. This replica's rows still
        waiting in memory are written first, so a reply just received is in it (other
        replicas' within `USAGE_FLUSH_INTERVAL_S`)."""
        await self.ledger.flush()
        async with self._sessionmaker() as session:
            totals = await usage_totals(session=session, user_id=user_id, since=since)
        return UsagePublic(**totals.model_dump(), budget=await self.budget(user_id))

    async def aclose(self) -> None:
        await self.ledger.aclose()
        await self._counters.aclose()


def build_meter(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> UsageMeter:
    return UsageMeter(
        counters=build_counters(settings.redis.url, settings.redis.key_prefix),
        ledger=UsageLedger(
            sessionmaker=sessionmaker, flush_interval_s=settings.usage.flush_interval_s
        ),
        sessionmaker=sessionmaker,
        monthly_tokens=settings.usage.monthly_token_budget,
        token_limit=settings.auth.chat_token_limit,
        max_concurrent=settings.chat.max_concurrent_replies,
    )
