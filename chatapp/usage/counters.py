"""Shared counters for usage limits: token holds that are settled after the call, and
per-user slots for calls in progress. In Redis when configured (each operation is one Lua
script, so parallel requests on every replica see each other's holds) and in-process
otherwise (exact for the one replica of the embedded setup).

Hand-written: the `limits` library behind `chatapp.ratelimit` counts hits against sliding
windows but can neither hold an amount before a call and give back what was not used, nor
hold a slot until a stream ends; a budget that parallel calls cannot overrun needs both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

# reserve(key, amount, limit, ttl_ms, must_exist): refuse when the counter is already at
# the limit (a call may overshoot by its own hold, never by other calls' holds).
_RESERVE = """
local current = redis.call('GET', KEYS[1])
if not current then
  if ARGV[4] == '1' then return {-1, 0} end
  current = 0
else
  current = tonumber(current)
end
if current >= tonumber(ARGV[2]) then return {0, current} end
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, total}
"""
# adjust(key, delta): only an existing counter (a lost one is seeded again from SQL).
_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return false
"""
# acquire(key, member, cap, now_ms, ttl_ms): a sorted set of slots scored by expiry, so a
# replica that died holding slots frees them when they expire.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class Reserved:
    ok: bool  # False: the counter was already at its limit; nothing was held
    total: int  # the counter after the hold (or as it stood, when refused)


Seed = Callable[[], Awaitable[int]]
T = TypeVar("T")


class Counters(Protocol):
    async def reserve(
        self, key: str, amount: int, *, limit: int, ttl_s: float, seed: Seed | None = None
    ) -> Reserved:
        """Hold `amount` on `key` unless it already stands at `limit`. A missing counter
        starts at `seed()` (e.g. this month's usage from SQL) or at 0."""
        ...

    async def adjust(self, key: str, delta: int) -> None:
        """Add `delta` (negative gives back) to an existing counter."""
        ...

    async def value(self, key: str, *, seed: Seed | None = None) -> int: ...

    async def acquire(self, key: str, member: str, *, cap: int, ttl_s: float) -> bool:
        """Take one of `cap` slots on `key` for `member`; False when all are taken."""
        ...

    async def release(self, key: str, member: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class MemoryCounters:
    """One process's counters."""

    _values: dict[str, tuple[int, float]] = field(default_factory=dict)
    _slots: dict[str, dict[str, float]] = field(default_factory=dict)
    _ops: int = 0

    def _live(self, key: str) -> int | None:
        entry = self._values.get(key)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def _sweep(self) -> None:
        self._ops += 1
        if self._ops % 1024:
            return
        now = time.monotonic()
        for key in [k for k, (_, expiry) in self._values.items() if expiry <= now]:
            del self._values[key]
        for key in [k for k, slots in self._slots.items() if not slots]:
            del self._slots[key]

    async def reserve(
        self, key: str, amount: int, *, limit: int, ttl_s: float, seed: Seed | None = None
    ) -> Reserved:
        self._sweep()
        current = self._live(key)
        if current is None:
            current = await seed() if seed is not None else 0
            if (again := self._live(key)) is not None:  # seeded meanwhile by another call
                current = again
            else:
                self._values[key] = (current, time.monotonic() + ttl_s)
        if current >= limit:
            return Reserved(False, current)
        expiry = self._values[key][1]
        self._values[key] = (current + amount, expiry)
        return Reserved(True, current + amount)

    async def adjust(self, key: str, delta: int) -> None:
        current = self._live(key)
        if current is not None:
            self._values[key] = (current + delta, self._values[key][1])

    async def value(self, key: str, *, seed: Seed | None = None) -> int:
        current = self._live(key)
        if current is None:
            return await seed() if seed is not None else 0
        return current

    async def acquire(self, key: str, member: str, *, cap: int, ttl_s: float) -> bool:
        self._sweep()
        now = time.monotonic()
        slots = {m: t for m, t in self._slots.get(key, {}).items() if t > now}
        self._slots[key] = slots
        if len(slots) >= cap:
            return False
        slots[member] = now + ttl_s
        return True

    async def release(self, key: str, member: str) -> None:
        self._slots.get(key, {}).pop(member, None)

    async def aclose(self) -> None:
        pass


class RedisCounters:
    """Counters every replica shares."""

    def __init__(self, *, url: str, key_prefix: str) -> None:
        from redis.asyncio import Redis

        # Short timeouts: a Redis that does not answer falls back (FallbackCounters)
        # instead of holding the turn.
        self._redis = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=0.5)
        self._prefix = f"{key_prefix}usage:"
        self._reserve: Any = self._redis.register_script(_RESERVE)
        self._adjust: Any = self._redis.register_script(_ADJUST)
        self._acquire: Any = self._redis.register_script(_ACQUIRE)

    async def reserve(
        self, key: str, amount: int, *, limit: int, ttl_s: float, seed: Seed | None = None
    ) -> Reserved:
        name = self._prefix + key
        args = [amount, limit, int(ttl_s * 1000)]
        ok, total = await self._reserve(keys=[name], args=[*args, int(seed is not None)])
        if ok == -1 and seed is not None:
            # First use this period (or the counter was lost): start from SQL, once.
            await self._redis.set(name, await seed(), px=int(ttl_s * 1000), nx=True)
            ok, total = await self._reserve(keys=[name], args=[*args, 0])
        return Reserved(ok == 1, int(total))

    async def adjust(self, key: str, delta: int) -> None:
        if delta:
            await self._adjust(keys=[self._prefix + key], args=[delta])

    async def value(self, key: str, *, seed: Seed | None = None) -> int:
        raw = await self._redis.get(self._prefix + key)
        if raw is None:
            return await seed() if seed is not None else 0
        return int(raw)

    async def acquire(self, key: str, member: str, *, cap: int, ttl_s: float) -> bool:
        now_ms = int(time.time() * 1000)
        args = [member, cap, now_ms, int(ttl_s * 1000)]
        return bool(await self._acquire(keys=[self._prefix + key], args=args))

    async def release(self, key: str, member: str) -> None:
        await self._redis.zrem(self._prefix + key, member)

    async def aclose(self) -> None:
        await self._redis.aclose()


class FallbackCounters:
    """Redis counters that fall back to this replica's own while Redis cannot be reached:
    chat goes on, each replica enforcing the limits on what it sees (a warning a minute is
    logged). Holds taken in Redis before it went away expire with their keys."""

    def __init__(self, primary: Counters, fallback: Counters) -> None:
        self._primary = primary
        self._fallback = fallback
        self._warned_at = 0.0

    async def _either(self, op: Callable[[Counters], Awaitable[T]]) -> T:
        try:
            return await op(self._primary)
        except Exception as exc:  # redis errors and timeouts
            now = time.monotonic()
            if now - self._warned_at >= 60:
                self._warned_at = now
                logger.warning("usage counters: Redis unreachable (%s); counting in-process", exc)
            return await op(self._fallback)

    async def reserve(
        self, key: str, amount: int, *, limit: int, ttl_s: float, seed: Seed | None = None
    ) -> Reserved:
        return await self._either(
            lambda c: c.reserve(key, amount, limit=limit, ttl_s=ttl_s, seed=seed)
        )

    async def adjust(self, key: str, delta: int) -> None:
        await self._either(lambda c: c.adjust(key, delta))

    async def value(self, key: str, *, seed: Seed | None = None) -> int:
        return await self._either(lambda c: c.value(key, seed=seed))

    async def acquire(self, key: str, member: str, *, cap: int, ttl_s: float) -> bool:
        return await self._either(lambda c: c.acquire(key, member, cap=cap, ttl_s=ttl_s))

    async def release(self, key: str, member: str) -> None:
        await self._either(lambda c: c.release(key, member))

    async def aclose(self) -> None:
        await self._primary.aclose()


def build_counters(redis_url: str | None, key_prefix: str) -> Counters:
    if redis_url:
        return FallbackCounters(
            RedisCounters(url=redis_url, key_prefix=key_prefix), MemoryCounters()
        )
    return MemoryCounters()
