"""The usage ledger: one `usage_events` row per model call, appended in batches off the
turn's path (one multi-row INSERT per flush instead of one statement per turn).

Rows wait in memory at most `flush_interval_s`; a flush that fails keeps them for the
next one (up to `max_pending` rows), so a database blip costs no usage. The budget's
live counters (`chatapp.usage.meter`) are updated at once; SQL is their durable source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatapp.db.models import UsageEvent, utcnow
from chatapp.llm.base import Finish, TextDelta

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one model call used."""

    user_id: uuid.UUID
    kind: str  # "chat" (a stored turn) or "completion" (/v1)
    prompt_tokens: int
    completion_tokens: int
    model: str | None = None
    provider: str | None = None
    cost_usd: float = 0.0
    cached: bool = False  # replayed from the response cache: free
    complete: bool = True  # False: failed or cancelled mid-answer (tokens still count)
    conversation_id: uuid.UUID | None = None
    created_at: datetime = field(default_factory=utcnow)

    @classmethod
    def of_call(
        cls,
        user_id: uuid.UUID,
        kind: str,
        parts: Sequence[TextDelta],
        finish: Finish | None,
        conversation_id: uuid.UUID | None = None,
    ) -> UsageRecord | None:
        """What a model call used: its finish's count, or, when it stopped before its
        finish (failed, or the client went away), the tokens streamed until then."""
        if finish is not None:
            return cls(
                user_id=user_id,
                kind=kind,
                conversation_id=conversation_id,
                prompt_tokens=finish.prompt_tokens,
                completion_tokens=finish.completion_tokens,
                model=finish.model or None,
                provider=finish.provider or None,
                cost_usd=finish.cost_usd,
                cached=finish.cached,
            )
        if not parts:
            return None
        return cls(
            user_id=user_id,
            kind=kind,
            conversation_id=conversation_id,
            prompt_tokens=0,
            completion_tokens=sum(p.tokens for p in parts),
            complete=False,
        )

    @property
    def billable_tokens(self) -> int:
        return 0 if self.cached else self.prompt_tokens + self.completion_tokens


class UsageLedger:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        flush_interval_s: float = 1.0,
        max_batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: list[UsageRecord] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def append(self, record: UsageRecord) -> None:
        """Queue a row; written within `flush_interval_s` (at once when a batch is full)."""
        if len(self._pending) >= self._max_pending:
            logger.error("usage ledger full (%d rows unwritten): dropping one", self._max_pending)
            return
        self._pending.append(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            if len(self._pending) < self._max_batch:
                await asyncio.sleep(self._interval)
            if not await self.flush():
                await asyncio.sleep(self._interval)  # the database is away: try again

    async def flush(self) -> bool:
        """Write what is pending; False (rows kept) when the database refused."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._max_batch]
                try:
                    async with self._sessionmaker() as session, session.begin():
                        await session.execute(insert(UsageEvent), [asdict(r) for r in batch])
                except Exception as exc:  # kept for the next flush
                    logger.warning("usage ledger flush failed (%d rows kept): %s", len(batch), exc)
                    return False
                del self._pending[: len(batch)]
        return True

    async def aclose(self) -> None:
        """Write what is pending (on shutdown)."""
        await self.flush()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
