"""The usage meter shared through the real Redis: two replicas' meters see each other's
holds and slots, the monthly counter starts from the ledger in SQL, and the per-minute
token limit holds a call's max_tokens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatapp.errors import RateLimited
from chatapp.usage.counters import RedisCounters
from chatapp.usage.ledger import UsageLedger, UsageRecord
from chatapp.usage.meter import UsageMeter
from tests.conftest import REDIS_URL
from tests.fakes.users import create_user


@pytest.fixture
async def replicas(sessionmaker: Any) -> AsyncIterator[Any]:
    """`make(budget=…, token_limit=…, max_concurrent=…)`: a replica's meter; all share
    one Redis key prefix (a fresh one per test) and the test's database."""
    prefix = f"chatapp-test-meter-{uuid.uuid4().hex[:8]}:"
    made: list[UsageMeter] = []

    def make(
        budget: int | None = None, token_limit: str | None = None, max_concurrent: int = 8
    ) -> UsageMeter:
        meter = UsageMeter(
            counters=RedisCounters(url=REDIS_URL, key_prefix=prefix),
            ledger=UsageLedger(sessionmaker=sessionmaker, flush_interval_s=0.01),
            sessionmaker=sessionmaker,
            monthly_tokens=budget,
            token_limit=token_limit,
            max_concurrent=max_concurrent,
        )
        made.append(meter)
        return meter

    yield make
    for meter in made:
        await meter.aclose()


async def user_id(sessionmaker: Any) -> uuid.UUID:
    async with sessionmaker() as session:
        return (await create_user(session)).id


def used(user: uuid.UUID, tokens: int) -> UsageRecord:
    return UsageRecord(user_id=user, kind="completion", prompt_tokens=0, completion_tokens=tokens)


async def test_replicas_see_each_others_holds_and_the_month_starts_from_sql(
    replicas: Any, sessionmaker: Any
) -> None:
    user = await user_id(sessionmaker)
    # earlier this month, calls wrote 90 tokens to the ledger; Redis has no counter yet
    ledger = UsageLedger(sessionmaker=sessionmaker)
    ledger.append(used(user, 90))
    await ledger.aclose()
    a, b = replicas(budget=100), replicas(budget=100)
    held = await a.begin(user, max_tokens=50)  # 90 < 100: held, 140 now
    with pytest.raises(RateLimited, match="used up: 140 of 100"):
        await b.begin(user, max_tokens=50)  # the other replica sees the hold
    await a.settle(held, used(user, 5))
    assert await b.used_this_month(user) == 95
    await b.settle(await b.begin(user, max_tokens=50), used(user, 7))  # 95 < 100
    with pytest.raises(RateLimited):
        await a.begin(user, max_tokens=1)


async def test_parallel_calls_on_two_replicas_get_exactly_the_free_slots(
    replicas: Any, sessionmaker: Any
) -> None:
    user = await user_id(sessionmaker)
    a, b = replicas(max_concurrent=3), replicas(max_concurrent=3)
    results = await asyncio.gather(
        *(m.begin(user, max_tokens=10) for m in (a, b, a, b, a, b)), return_exceptions=True
    )
    holds = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    others = [repr(r) for r in results if isinstance(r, BaseException) and r not in refused]
    assert (len(holds), len(refused)) == (3, 3), others
    await a.settle(holds[0], None)  # nothing generated: the slot and the hold come back
    await b.settle(await b.begin(user, max_tokens=10), None)


async def test_the_tokens_per_minute_limit_holds_max_tokens_until_settled(
    replicas: Any, sessionmaker: Any
) -> None:
    user = await user_id(sessionmaker)
    a, b = replicas(token_limit="100/minute"), replicas(token_limit="100/minute")
    first = await a.begin(user, max_tokens=60)
    second = await b.begin(user, max_tokens=60)  # 60 < 100: held, 120 now
    with pytest.raises(RateLimited, match="too many tokens: the limit is 100/minute") as refused:
        await a.begin(user, max_tokens=60)
    assert 0 < refused.value.retry_after <= 60
    await a.settle(first, used(user, 10))
    await b.settle(second, used(user, 10))  # 20 used this minute
    await a.settle(await a.begin(user, max_tokens=60), used(user, 10))
